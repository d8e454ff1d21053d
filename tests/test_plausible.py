"""The one plausibility rule (pytaskstats.plausible) in every aggregate.

The kernel's error cannot be made on demand: a task that lived 3 ms reports a
``blkio_delay_total`` of about the machine's uptime.  Such a record is built here
and sent through the codec (encoded as the kernel would, decoded back), then fed
to each aggregate next to a plausible one: the bogus delay is left out and counted,
the plausible one is summed, and raw per-record output keeps the kernel's value.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Iterator
from functools import partial

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from pytaskstats import ExitRecord, TaskStats, taskstats
from pytaskstats.cli.history import format_row
from pytaskstats.cli.run import RunResult, format_json, format_text
from pytaskstats.daemon.journal import Store
from pytaskstats.daemon.journal_queries import JournalQueries
from pytaskstats.daemon.journal_rows import JournalEntry
from pytaskstats.metrics.aggregate import Aggregator, Live
from pytaskstats.metrics.collector import TaskstatsCollector
from pytaskstats.plausible import (
    SLACK_NS,
    checked,
    implausible,
    life_ns,
    limit_ns,
    sql_plausible,
)
from pytaskstats.records import AGROUP
from pytaskstats.report import GROUP_FIELDS, HistoryReport, build_run, render_history
from pytaskstats.report.fmt import human_duration
from pytaskstats.report.run import render_run
from pytaskstats.summary import summarize
from pytaskstats.top.model import COUNTED, Model, Sample
from pytaskstats.top.render import Info, exits_line, frame_json
from pytaskstats.top.view import ViewState

FAMILY = 27
SEC = 1_000_000_000
BTIME = 1_700_000_000
T0 = BTIME * SEC  # when the journal received the exits
with open("/proc/uptime") as _f:
    UPTIME_NS = int(float(_f.read().split()[0]) * SEC) + 3600 * SEC  # at least an hour
BOGUS_PID, GOOD_PID = 4101, 4102
GOOD_BLKIO = 1_500_000_000


def stats(pid: int, *, etime_us: int | None, blkio: int, comm: str, **values: int
          ) -> TaskStats:
    """A v17 per-task record of a single-threaded process that ended."""
    fields: dict[str, int] = dict.fromkeys(COUNTED, 0)
    fields.update(blkio_delay_total=blkio, blkio_count=1, blkio_delay_max=blkio,
                  blkio_delay_min=blkio, cpu_delay_total=1_000_000, cpu_count=2,
                  ac_utime=1000, ac_stime=500, **values)
    return TaskStats(version=17, ac_pid=pid, ac_tgid=pid, ac_ppid=1, ac_comm=comm,
                     ac_etime=etime_us, ac_btime=BTIME, ac_btime64=BTIME, ac_flag=AGROUP,
                     ac_exitcode=0, **fields)  # type: ignore[arg-type]


def through_codec(task: TaskStats) -> ExitRecord:
    """The exit record as the kernel would send it, decoded by our codec."""
    assert task.ac_pid is not None
    raw = taskstats.encode_exit(FAMILY, ExitRecord(task=task, pid=task.ac_pid,
                                                   tgid=task.ac_tgid))
    event = taskstats.decode(raw, FAMILY)[0]
    assert isinstance(event, ExitRecord)
    return event


BOGUS = through_codec(stats(BOGUS_PID, etime_us=3000, blkio=UPTIME_NS, comm="bogus"))
GOOD = through_codec(stats(GOOD_PID, etime_us=2_000_000, blkio=GOOD_BLKIO, comm="good"))


def test_the_fixture_is_the_kernels_error() -> None:
    assert BOGUS.task.blkio_delay_total == UPTIME_NS and BOGUS.task.ac_etime == 3000
    assert implausible(BOGUS.task) == ("blkio",) and implausible(GOOD.task) == ()


# ------------------------------------------------------------------ the rule


def test_life_of_a_task_a_thread_group_and_a_record_without_etime() -> None:
    task = BOGUS.task
    assert life_ns(task) == 3_000_000
    group = task._replace(scope="tgid", ac_etime=5000)  # the sum of its threads' lives
    assert life_ns(group) == 5_000_000
    assert life_ns(group._replace(ac_etime=0)) is None  # kernels that did not fill it
    assert implausible(group._replace(ac_etime=0)) == ()  # unknown life bounds nothing
    old = task._replace(ac_etime=None)
    assert life_ns(old) is None  # no etime, no time given
    assert life_ns(old, at_s=BTIME + 2.5) == int(3.5 * SEC)  # btime is whole seconds
    assert implausible(old, at_s=BTIME + 2.5) == ("blkio",)
    assert life_ns(old._replace(ac_btime=0, ac_btime64=0), at_s=BTIME) is None


def test_the_limit_and_what_is_cleared() -> None:
    life = 3_000_000
    assert limit_ns(life) == life * 105 // 100 + SLACK_NS
    edge = BOGUS.task._replace(blkio_delay_total=limit_ns(life))
    assert implausible(edge) == () and implausible(
        edge._replace(blkio_delay_total=limit_ns(life) + 1)) == ("blkio",)
    clean, kinds = checked(BOGUS.task)
    assert kinds == ("blkio",)
    assert (clean.blkio_delay_total, clean.blkio_delay_max, clean.blkio_delay_min) == (
        None, None, None)
    assert clean.blkio_count == 1 and clean.cpu_delay_total == 1_000_000  # kept
    assert checked(GOOD.task) == (GOOD.task, ())


@pytest.mark.parametrize(("etime", "btime", "delay", "at_ns"), [
    (3000, BTIME, UPTIME_NS, T0), (3000, BTIME, 13_150_000, T0),
    (3000, BTIME, 13_150_001, T0), (0, BTIME, 10_000_000, T0), (0, BTIME, 10_000_001, T0),
    (None, BTIME, 3 * SEC, T0 + 2 * SEC), (None, BTIME, 3 * SEC + 1, T0 + 2 * SEC + 1),
    (None, BTIME, 4 * SEC, T0 + 2 * SEC), (None, 0, UPTIME_NS, T0), (3000, BTIME, None, T0),
    (2**40, BTIME, 2**50, T0)])
def test_the_sql_rule_is_the_python_rule(etime: int | None, btime: int, delay: int | None,
                                         at_ns: int) -> None:
    task = BOGUS.task._replace(ac_etime=etime, ac_btime=btime, ac_btime64=btime,
                               blkio_delay_total=delay)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE exits (ac_etime, ac_btime, ac_btime64, time_ns, "
                 "blkio_delay_total)")
    conn.execute("INSERT INTO exits VALUES (?, ?, ?, ?, ?)", (etime, btime, btime, at_ns, delay))
    (sql,) = conn.execute(f"SELECT {sql_plausible('blkio')} FROM exits").fetchone()
    assert bool(sql) == (implausible(task, at_s=at_ns / SEC) == ())


# ------------------------------------------------------------------ taskstats run


def run_result() -> RunResult:
    return RunResult(["sh", "-c", "x"], 0, 2.5, [BOGUS, GOOD], exit_s=[0.1, 2.4],
                     started_ns=T0)


def test_run_totals_leave_it_out_and_say_so() -> None:
    result = run_result()
    procs = summarize(result.records)
    text = format_text(result, procs, True)
    rows = {int(line.split()[0]): line for line in text.splitlines()
            if re.match(r"\s*\d+ ", line)}
    total = next(line for line in text.splitlines() if line.lstrip().startswith("TOTAL"))
    assert human_duration(UPTIME_NS / 1e9) in rows[BOGUS_PID]  # the row keeps the kernel's
    assert human_duration(GOOD_BLKIO / 1e9) in total  # TOTAL sums the plausible one only
    assert human_duration((GOOD_BLKIO + UPTIME_NS) / 1e9) not in total
    note = text.splitlines()[-1]
    assert note.startswith("note: 1 delay value longer than the task lived")
    assert f"bogus (pid {BOGUS_PID}) blkio_delay_total" in note

    doc = format_json(result, procs, True)
    assert doc["totals"]["blkio_delay_total"] == GOOD_BLKIO
    assert doc["totals"]["cpu_delay_total"] == 2_000_000  # the bogus task's CPU wait counts
    raw = next(p for p in doc["processes"] if p["tgid"] == BOGUS_PID)
    assert raw["blkio_delay_total"] == UPTIME_NS
    assert doc["implausible"] == [{"pid": BOGUS_PID, "comm": "bogus",
                                   "field": "blkio_delay_total", "value_ns": UPTIME_NS,
                                   "ac_etime": 3000}]


def test_run_totals_without_implausible_delays_have_no_note() -> None:
    result = RunResult(["x"], 0, 2.5, [GOOD], exit_s=[2.4], started_ns=T0)
    text = format_text(result, summarize(result.records), True)
    assert "note:" not in text and format_json(result, [], True)["implausible"] == []


def test_run_report_says_it_under_the_totals_table() -> None:
    result = run_result()
    report = build_run(result.command, 0, result.wall_s, result.records, result.exit_s,
                       delayacct=True, started_ns=T0)
    assert [(i.pid, i.field) for i in report.impossible] == [(BOGUS_PID, "blkio_delay_total")]
    html = render_run(report)
    totals = html[html.index('id="totals"'):]
    assert "Left out of every figure: 1 delay value longer than the task lived" in totals
    assert f"IO wait {human_duration(GOOD_BLKIO / 1e9)}" in html


# ------------------------------------------------------------------ history


@pytest.fixture
def journal() -> Iterator[JournalQueries]:
    with Store(":memory:") as j:
        j.insert([JournalEntry(rec, T0 + i * SEC, "/t", taskstats.encode_exit(FAMILY, rec)).item
                  for i, rec in enumerate((BOGUS, GOOD))])
        yield j.queries


def test_history_totals_and_groups_leave_it_out_and_count_it(journal: JournalQueries) -> None:
    tot = journal.totals()
    assert (tot["exits"], tot["implausible"]) == (2, 1)
    assert tot["blkio_delay_total"] == tot["blkio_delay_max"] == GOOD_BLKIO
    assert tot["cpu_delay_total"] == 2_000_000
    groups = {g["ac_comm"]: g for g in journal.query(group_by="comm")}
    assert groups["bogus"]["blkio_delay_total"] is None and groups["bogus"]["implausible"] == 1
    assert groups["good"]["blkio_delay_total"] == GOOD_BLKIO
    assert groups["good"]["implausible"] == 0
    by_cgroup = journal.query(group_by="cgroup", sort="-blkio_delay_total")
    assert [(g["cgroup"], g["blkio_delay_total"]) for g in by_cgroup] == [("/t", GOOD_BLKIO)]
    assert "implausible delays left out: 1 exits" in format_row({**tot, "key": ""})
    raw = {r["pid"]: r for r in journal.query()}  # per record: the kernel's value
    assert raw[BOGUS_PID]["blkio_delay_total"] == UPTIME_NS
    assert "implausible" not in format_row(raw[BOGUS_PID])


def test_history_report_says_it_under_the_totals_table(journal: JournalQueries) -> None:
    since, until = T0 - 60 * SEC, T0 + 60 * SEC
    window = partial(journal.aggregate, since_ns=since, until_ns=until)
    data = HistoryReport(
        since, until, 60, tuple(window(bucket_s=60)),
        tuple(window(group_by="comm", fields=GROUP_FIELDS)),
        tuple(window(group_by="cgroup", fields=GROUP_FIELDS)),
        window(fields=GROUP_FIELDS)[0], True)
    assert data.totals["implausible"] == 1
    html = render_history(data)
    totals = html[html.index('id="totals"'):]
    assert "Left out of every figure: delays of 1 exit that were longer" in totals


# ------------------------------------------------------------------ metrics


def scrape(agg: Aggregator) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(TaskstatsCollector(agg))
    text = generate_latest(registry).decode()
    return {k: float(v) for k, v in re.findall(r"^(\S+) (\S+)$", text, re.M)}


def test_metrics_leave_it_out_and_count_it() -> None:
    """The aggregator behind both `taskstats exporter` and taskstatsd's endpoint."""
    agg = Aggregator(resolve=lambda _: None)
    agg.on_exit(BOGUS, "/t")
    agg.on_exit(GOOD, "/t")
    got = scrape(agg)
    assert got['taskstats_delay_seconds_total{cgroup="/t",kind="blkio"}'] == GOOD_BLKIO / SEC
    assert got['taskstats_delay_seconds_total{cgroup="/t",kind="cpu"}'] == 0.002
    assert got['taskstats_delays_total{cgroup="/t",kind="blkio"}'] == 2  # episodes stay
    assert got['taskstats_delay_max_seconds{cgroup="/t",kind="blkio"}'] == GOOD_BLKIO / SEC
    assert got['taskstats_group_delay_seconds_total{group="other",kind="blkio"}'] == (
        GOOD_BLKIO / SEC)
    assert got['taskstats_implausible_delays_total{kind="blkio"}'] == 1
    assert got['taskstats_implausible_delays_total{kind="cpu"}'] == 0
    assert got['taskstats_task_exits_total{cgroup="/t"}'] == 2


def test_a_live_task_is_left_out_and_counted_once() -> None:
    clock = [1000 * SEC]
    agg = Aggregator(resolve=lambda _: None, clock=lambda: clock[0])
    live = BOGUS.task._replace(ac_flag=0)
    for _ in range(3):
        agg.on_sample([Live(BOGUS_PID, BOGUS_PID, live, "/t")], clock[0])
        clock[0] += SEC // 1000
    agg.on_exit(BOGUS, None)
    got = scrape(agg)
    assert got['taskstats_delay_seconds_total{cgroup="/t",kind="blkio"}'] == 0
    assert got['taskstats_implausible_delays_total{kind="blkio"}'] == 1
    assert got['taskstats_task_exits_total{cgroup="/t"}'] == 1


# ------------------------------------------------------------------ top


def test_top_leaves_it_out_and_shows_the_count() -> None:
    model = Model()
    empty = Sample(t_ns=T0, span_ns=1000, tasks={}, tgids={}, cgroups={}, users={},
                   exits=(), delayacct=True)
    model.update(empty)
    frame = model.update(dataclasses.replace(empty, t_ns=T0 + 3 * SEC, exits=(BOGUS, GOOD)))
    rows = {r.pid: r for r in frame.rows("process")}
    assert rows[BOGUS_PID].value("io_wait_pct") == 0
    assert rows[GOOD_PID].value("io_wait_pct") == pytest.approx(50.0)  # 1.5 s in 3 s
    assert frame.discarded == 1
    assert "implausible delays left out 1" in exits_line(frame, Info("kernel"))
    doc = frame_json(frame, [], Info("kernel"), ViewState())
    assert doc["discarded_deltas"] == doc["discarded_since_start"] == 1
