"""`taskstats top`: the pure model and view, batch output, the curses screen in tmux,
and a synthetic IO + CPU load (the IO waiter must top the IO-wait sort)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytaskstats import Client, ExitRecord, TaskStats
from pytaskstats.top.model import COUNTED, METRICS, Model, Row, Sample
from pytaskstats.top.render import (
    Info,
    compact,
    frame_json,
    last_column_at,
    pct,
    row_cells,
    table_header,
)
from pytaskstats.top.sampler import Sampler, list_tasks
from pytaskstats.top.screen import KEY_LINE, apply_key, help_lines
from pytaskstats.top.view import (
    SORTS,
    Filters,
    ViewState,
    group_by_cgroup,
    parse_filters,
    sort_rows,
    view,
)

from .conftest import require_kernel, wait_until

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "pytaskstats"]
S = 1_000_000_000  # ns
AGROUP = 0x20
T0 = 1000 * S  # monotonic time of the first sample in the pure tests
BTIME = 1_700_000_000


# ------------------------------------------------------------------ pure model

def rec(tid: int, tgid: int | None = None, *, age_s: float = 100.0, comm: str = "work",
        uid: int = 1000, btime: int = BTIME, flag: int = 0, **values: int) -> TaskStats:
    """A v16 pid record; COUNTED fields default to 0; ``age_s``: ac_etime."""
    fields: dict[str, Any] = dict.fromkeys(COUNTED, 0)
    fields.update(values)
    return TaskStats(version=16, ac_pid=tid, ac_tgid=tgid or tid, ac_comm=comm, ac_uid=uid,
                     ac_etime=int(age_s * 1e6), ac_tgetime=int(age_s * 1e6),
                     ac_btime=btime, ac_btime64=btime, ac_flag=flag, **fields)


def sample(t_ns: int, *records: TaskStats, exits: tuple[ExitRecord, ...] = (),
           delayacct: bool | None = True, cgroups: dict[int, str] | None = None) -> Sample:
    tasks = {r.ac_pid: r for r in records if r.ac_pid is not None}
    return Sample(t_ns=t_ns, span_ns=1000, tasks=tasks,
                  tgids={r.ac_pid: r.ac_tgid for r in records
                         if r.ac_pid is not None and r.ac_tgid is not None},
                  cgroups=cgroups or {}, users={1000: "alice", 0: "root"}, exits=exits,
                  delayacct=delayacct)


def later(stats: TaskStats, seconds: float, **values: int) -> TaskStats:
    """The same task ``seconds`` later, with new counter values."""
    assert stats.ac_etime is not None
    grown = int(seconds * 1e6)
    changed: dict[str, Any] = {"ac_etime": stats.ac_etime + grown,
                               "ac_tgetime": (stats.ac_tgetime or 0) + grown, **values}
    return stats._replace(**changed)


def only(rows: tuple[Row, ...] | list[Row], pid: int) -> Row:
    found = [r for r in rows if r.pid == pid]
    assert len(found) == 1, found
    return found[0]


def test_first_sample_has_no_rates_and_shows_dashes() -> None:
    frame = Model().update(sample(T0, rec(10, cpu_run_virtual_total=5 * S)))
    row = only(frame.rows("process"), 10)
    assert row.values == (None,) * len(METRICS) and frame.exits_per_s is None
    assert row_cells(row, False).split()[2:10] == ["-"] * 8


def test_deltas_over_monotonic_time_become_percentages_and_rates() -> None:
    model = Model()
    a = rec(10, cpu_run_virtual_total=1 * S, cpu_delay_total=0, blkio_delay_total=S,
            read_bytes=4096, nvcsw=5, nivcsw=5)
    model.update(sample(T0, a))
    b = later(a, 2, cpu_run_virtual_total=2 * S, cpu_delay_total=S // 2,
              blkio_delay_total=2 * S, swapin_delay_total=S // 10, wpcopy_delay_total=S // 10,
              irq_delay_total=S // 100, read_bytes=4096 + (2 << 20), write_bytes=2048,
              nvcsw=15, nivcsw=15)
    row = only(model.update(sample(T0 + 2 * S, b)).rows("process"), 10)
    assert row.value("cpu_pct") == pytest.approx(50.0)
    assert row.value("cpu_wait_pct") == pytest.approx(25.0)
    assert row.value("io_wait_pct") == pytest.approx(50.0)
    assert row.value("mem_wait_pct") == pytest.approx(10.0)  # swap-in + write-protect copy
    assert row.value("irq_pct") == pytest.approx(0.5)
    assert row.value("read_bytes_per_s") == pytest.approx(1 << 20)
    assert row.value("write_bytes_per_s") == pytest.approx(1024)
    assert row.value("ctxsw_per_s") == pytest.approx(10)
    assert row.total("read_bytes") == 4096 + (2 << 20) and row.seconds == 2


def test_process_rows_sum_their_threads() -> None:
    model = Model()
    lead, worker = rec(10, age_s=50), rec(11, 10, age_s=40, comm="worker")
    model.update(sample(T0, lead, worker))
    frame = model.update(sample(T0 + S, later(lead, 1, cpu_run_virtual_total=S // 4),
                                later(worker, 1, cpu_run_virtual_total=S // 2)))
    proc = only(frame.rows("process"), 10)
    assert proc.threads == 2 and proc.command == "work" and proc.user == "alice"
    assert proc.value("cpu_pct") == pytest.approx(75.0)
    threads = frame.rows("thread")
    assert only(threads, 11).value("cpu_pct") == pytest.approx(50.0)
    assert only(threads, 11).tgid == 10 and frame.processes == 1 and frame.tasks == 2


def test_reused_tid_never_gives_a_negative_or_borrowed_delta() -> None:
    model = Model()
    model.update(sample(T0, rec(20, age_s=500, cpu_run_virtual_total=90 * S, nvcsw=900)))
    # tid 20 exited and was reused by a task born 0.5 s ago: its own totals count
    young = rec(20, age_s=0.5, cpu_run_virtual_total=S // 10, nvcsw=3)
    row = only(model.update(sample(T0 + S, young)).rows("thread"), 20)
    assert row.value("cpu_pct") == pytest.approx(10.0) and row.value("ctxsw_per_s") == 3
    # reused again by a task older than the interval (not seen before): no delta at all
    old = rec(20, age_s=30, cpu_run_virtual_total=7 * S)
    assert only(model.update(sample(T0 + 2 * S, old)).rows("thread"), 20).values == (
        None,) * len(METRICS)


def test_btime_jitter_does_not_break_a_task_identity() -> None:
    """The kernel recomputes ac_btime per query (it jitters by 1 s); identity uses the
    monotonic start (query time - ac_etime) instead."""
    model = Model()
    a = rec(30, btime=BTIME)
    model.update(sample(T0, a))
    b = later(a, 1, cpu_run_virtual_total=S // 2)._replace(ac_btime=BTIME + 1,
                                                           ac_btime64=BTIME + 1)
    assert only(model.update(sample(T0 + S, b)).rows("thread"), 30).value(
        "cpu_pct") == pytest.approx(50.0)


def test_a_counter_reset_by_overflow_reads_zero_not_negative() -> None:
    model = Model()
    a = rec(31, blkio_delay_total=2**63)
    model.update(sample(T0, a))
    row = only(model.update(sample(T0 + S, later(a, 1, blkio_delay_total=5))).rows("thread"),
               31)
    assert row.value("io_wait_pct") == 0


def test_an_impossible_wait_is_dropped_and_counted() -> None:
    """Delay accounting switched off and on during a wait: the kernel charges it from
    a stale start (from boot), more than the interval; that delta is dropped."""
    model = Model()
    a = rec(32, blkio_delay_total=S)
    model.update(sample(T0, a))
    b = later(a, 1, blkio_delay_total=S + 3000 * S, cpu_delay_total=S // 5)
    frame = model.update(sample(T0 + S, b))
    row = only(frame.rows("thread"), 32)
    assert row.value("io_wait_pct") == 0 and row.value("cpu_wait_pct") == pytest.approx(20)
    assert frame.discarded == 1 and frame_json(frame, [], Info("kernel"), ViewState())[
        "discarded_deltas"] == 1


def test_an_exited_threads_last_interval_stays_in_its_process() -> None:
    model = Model()
    lead, worker = rec(40, age_s=50), rec(41, 40, age_s=5, cpu_run_virtual_total=S)
    model.update(sample(T0, lead, worker))
    final = later(worker, 0.5, cpu_run_virtual_total=S + S // 2)  # +0.5 s, then exited
    gone = ExitRecord(task=final, pid=41, tgid=40)
    frame = model.update(sample(T0 + S, later(lead, 1, cpu_run_virtual_total=S // 4),
                                exits=(gone,)))
    proc = only(frame.rows("process"), 40)
    assert proc.value("cpu_pct") == pytest.approx(75.0) and not proc.exited
    assert only(frame.rows("thread"), 41).exited
    assert (frame.exits, frame.exits_total, frame.process_exits_total) == (1, 1, 0)


def test_exited_process_stays_marked_with_final_totals_then_goes() -> None:
    model = Model(retain_s=3)
    proc = rec(50, age_s=10, comm="dd", blkio_delay_total=S)
    model.update(sample(T0, proc, cgroups={50: "/jobs"}))
    final = later(proc, 0.5, blkio_delay_total=S + S // 2, read_bytes=1 << 20)
    final = final._replace(ac_flag=AGROUP, ac_exitcode=0)
    frame = model.update(sample(T0 + S, exits=(ExitRecord(task=final, pid=50, tgid=50),)))
    row = only(frame.rows("process"), 50)
    assert row.exited and row.command == "dd" and row.cgroup == "/jobs"
    assert row.value("io_wait_pct") == pytest.approx(50.0)  # its last interval
    assert row.total("read_bytes") == 1 << 20 and row.lifetime == pytest.approx(10.5)
    assert frame.process_exits_total == 1 and frame.exits_per_s == 1
    assert row_cells(row, False).split()[1] == "X"
    assert only(model.update(sample(T0 + 3 * S)).rows("process"), 50).exited
    assert not model.update(sample(T0 + 5 * S)).rows("process")


def test_a_pid_reused_and_ended_twice_in_one_interval() -> None:
    model = Model()
    model.update(sample(T0))
    first = rec(55, age_s=0.2, comm="a", flag=AGROUP)
    second = rec(55, age_s=0.1, comm="b", flag=AGROUP)
    frame = model.update(sample(T0 + S, exits=(ExitRecord(task=first, pid=55, tgid=55),
                                               ExitRecord(task=second, pid=55, tgid=55))))
    assert frame.process_exits_total == 2
    assert only(frame.rows("process"), 55).command == "b"


def test_exited_process_takes_the_group_records_totals() -> None:
    model = Model()
    lead = rec(60, age_s=20, cpu_run_virtual_total=S)
    model.update(sample(T0, lead))
    task = later(lead, 0.5, cpu_run_virtual_total=S)._replace(ac_flag=AGROUP)
    group = TaskStats(version=16, scope="tgid", cpu_run_virtual_total=9 * S, nvcsw=77,
                      ac_etime=40_000_000)
    frame = model.update(sample(T0 + S, exits=(ExitRecord(task=task, group=group, pid=60,
                                                          tgid=60),)))
    row = only(frame.rows("process"), 60)
    assert row.total("cpu_run_virtual_total") == 9 * S and row.total("nvcsw") == 77
    assert row.lifetime == pytest.approx(20.5)  # ac_tgetime, not the group's etime sum


def test_a_zombie_of_an_exited_process_is_not_listed_twice() -> None:
    model = Model()
    proc = rec(70, age_s=3)
    model.update(sample(T0, proc))
    done = later(proc, 0.2)._replace(ac_flag=AGROUP)
    frame = model.update(sample(T0 + S, later(proc, 1),
                                exits=(ExitRecord(task=done, pid=70, tgid=70),)))
    rows = [r for r in frame.rows("process") if r.pid == 70]
    assert [r.exited for r in rows] == [True]
    assert rows[0].values[0] == 0  # its last interval, against the zombie's last sample


def test_delay_accounting_off_shows_na_never_zero() -> None:
    model = Model()
    a = rec(80, cpu_delay_total=0, blkio_delay_total=0)
    model.update(sample(T0, a, delayacct=False))
    frame = model.update(sample(T0 + S, later(a, 1, cpu_delay_total=S // 10),
                                delayacct=False))
    row = only(frame.rows("process"), 80)
    assert row.value("cpu_wait_pct") == pytest.approx(10.0)
    assert row.value("io_wait_pct") is None and row.value("mem_wait_pct") is None
    cells = row_cells(row, True).split()
    assert cells[3:7] == ["10.0", "n/a", "n/a", "n/a"]
    out = frame_json(frame, [row], Info("kernel"), ViewState())
    assert out["delayacct"]["enabled"] is False
    line = out["rows"][0]
    assert line["io_wait_pct"] is None and line["blkio_delay_total"] is None
    assert line["cpu_wait_pct"] == 10.0 and line["cpu_delay_total"] == S // 10


def test_fields_an_older_struct_lacks_read_as_unknown() -> None:
    model = Model()
    a = rec(81)._replace(irq_delay_total=None, version=13)
    model.update(sample(T0, a))
    row = only(model.update(sample(T0 + S, later(a, 1))).rows("process"), 81)
    assert row.value("irq_pct") is None and row.value("io_wait_pct") == 0


_TASK = st.builds(
    lambda tid, tgid, age, cpu, io, flag: rec(tid, tgid, age_s=age, flag=flag,
                                              cpu_run_virtual_total=cpu, blkio_delay_total=io),
    st.integers(1, 6), st.integers(1, 3), st.floats(0, 5), st.integers(0, 10 * S),
    st.integers(0, 10 * S), st.sampled_from([0, AGROUP]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(_TASK, max_size=5), st.lists(_TASK, max_size=3),
                          st.integers(S // 10, 3 * S)), max_size=6))
def test_any_sequence_of_samples_and_exits_gives_sane_rows(
        steps: list[tuple[list[TaskStats], list[TaskStats], int]]) -> None:
    """Reused ids, counters going back, duplicate and unmatched exits: no exception,
    no negative value, no live thread waiting longer than its interval (+ the
    tolerance for the queries' spread: 1 ms + both spans)."""
    model, now = Model(retain_s=2), T0
    for tasks, exits, step in steps:
        now += step
        records = [ExitRecord(task=t, pid=t.ac_pid or 1, tgid=t.ac_tgid) for t in exits]
        frame = model.update(sample(now, *tasks, exits=tuple(records)))
        for level in ("process", "thread", "cgroup"):
            for row in view(frame, ViewState(level=level)):
                assert all(v is None or v >= 0 for v in row.values)
        for row in frame.rows("thread"):  # live: bounded by interval + 2 tolerances
            limit = 100 * (row.seconds * 1e9 + 2_004_000) / (row.seconds * 1e9 or 1)
            assert row.exited or (row.value("io_wait_pct") or 0) <= limit


# ------------------------------------------------------------------ view

def rows_for_view() -> tuple[Any, list[Row]]:
    model = Model()
    tasks = [rec(1, comm="init", uid=0, age_s=900), rec(200, comm="Postgres", age_s=90),
             rec(300, comm="backup", age_s=90), rec(301, 300, comm="backup", age_s=90)]
    cg = {1: "/init.scope", 200: "/system.slice/db.service", 300: "/system.slice/bk"}
    model.update(sample(T0, *tasks, cgroups=cg))
    bumps = {1: {"cpu_run_virtual_total": S // 10},
             200: {"blkio_delay_total": S // 2, "read_bytes": 1 << 20},
             300: {"cpu_run_virtual_total": S // 2, "blkio_delay_total": S // 10},
             301: {"cpu_run_virtual_total": S // 4}}
    frame = model.update(sample(T0 + S, *(later(t, 1, **bumps[t.ac_pid or 0]) for t in tasks),
                                cgroups=cg))
    return frame, list(frame.rows("process"))


def test_every_sort_order_is_named_keyed_and_puts_unknowns_last() -> None:
    _, rows = rows_for_view()
    assert [r.pid for r in sort_rows(rows, "cpu")] == [300, 1, 200]
    assert [r.pid for r in sort_rows(rows, "iowait")] == [200, 300, 1]
    assert [r.pid for r in sort_rows(rows, "iowait", reverse=True)] == [1, 300, 200]
    assert [r.pid for r in sort_rows(rows, "command")] == [300, 1, 200]
    assert [r.pid for r in sort_rows(rows, "pid")] == [1, 200, 300]
    assert [r.pid for r in sort_rows(rows, "user")] == [200, 300, 1]
    unknown = Row(pid=5, tgid=5, uid=0, user="root", command="x", cgroup=None, threads=1,
                  exited=False, seconds=1, totals=(0,) * len(COUNTED),
                  values=(None,) * len(METRICS))
    assert sort_rows([unknown, *rows], "read", reverse=True)[-1] is unknown
    assert len({s.key for s in SORTS.values()}) == len(SORTS)
    assert all(s.key in KEY_LINE for s in SORTS.values())


def test_filters_by_user_command_and_cgroup() -> None:
    frame, _ = rows_for_view()

    def pids(**kw: Any) -> list[int]:
        return sorted(r.pid for r in view(frame, ViewState(filters=Filters(**kw))))

    assert pids(user="alice") == pids(user="1000") == [200, 300]
    assert pids(command="postgres") == [200]
    assert pids(cgroup="/system.slice") == [200, 300]
    assert pids(cgroup="/system.slice/b") == []  # whole path components only
    assert parse_filters("user=root comm=init") == Filters(user="root", command="init")
    assert parse_filters("back") == Filters(command="back") and parse_filters("") == Filters()
    with pytest.raises(ValueError, match="unknown filter"):
        parse_filters("colour=red")


def test_group_by_cgroup_sums_processes() -> None:
    frame, rows = rows_for_view()
    groups = {r.command: r for r in group_by_cgroup(rows)}
    assert set(groups) == {"/init.scope", "/system.slice/db.service", "/system.slice/bk"}
    bk = groups["/system.slice/bk"]
    assert (bk.pid, bk.threads) == (1, 2) and bk.value("cpu_pct") == pytest.approx(75.0)
    shown = view(frame, ViewState(level="cgroup", sort="iowait"))
    assert shown[0].command == "/system.slice/db.service"
    assert view(frame, ViewState(level="thread", limit=2, sort="pid"))[1].pid == 200


def test_keys_change_the_view() -> None:
    state = ViewState()
    assert apply_key(state, "i") == ViewState(sort="iowait")
    assert apply_key(ViewState(sort="iowait"), "i") == ViewState(sort="iowait", reverse=True)
    assert apply_key(state, ">") == ViewState(sort="cpuwait")
    assert apply_key(state, "t") == ViewState(level="thread")
    assert apply_key(ViewState(level="thread"), "t") == ViewState()
    assert apply_key(state, "g") == ViewState(level="cgroup")
    assert apply_key(state, "+") == ViewState(interval=3.0)
    assert apply_key(ViewState(interval=0.5), "-") == ViewState(interval=0.5)
    assert apply_key(state, " ") == ViewState(paused=True)
    assert apply_key(state, "f") is None and apply_key(state, "q") is None
    assert len(help_lines()) < 24 and all(len(line) < 80 for line in help_lines())


def test_text_fits_80_columns_and_marks_the_sort_column() -> None:
    _, rows = rows_for_view()
    header = table_header(ViewState(sort="iowait"))
    assert "*IOW%" in header and header.count("*") == 1
    width = 80 - 1 - last_column_at()  # what the screen gives the last column at 80x24
    assert width >= 12 and header.index("COMMAND") == last_column_at()
    line = row_cells(rows[0], False, command_width=width)
    assert len(line) < 80
    cgroup_line = row_cells(group_by_cgroup(rows)[1], False, command_width=width)
    assert len(cgroup_line) == 79 and cgroup_line.endswith("..db.service")
    assert [pct(v) for v in (None, 0.04, 99.96, 1234.4)] == ["-", "0.0", "100.0", "1234"]
    assert [compact(v) for v in (0, 999, 1536, 3 << 20, 10 << 30)] == [
        "0", "999", "1.5K", "3.0M", "10G"]


# ------------------------------------------------------------------ live: batch mode

def _top(*args: str, backend: str = "auto", timeout: float = 60
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--backend", backend, "top", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.kernel
def test_batch_json_lines_one_object_per_refresh() -> None:
    done = _top("-b", "--json", "-n", "2", "-d", "0.2", backend="kernel")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2
    last = lines[-1]
    assert last["backend"] == "kernel" and last["exits"]["tracked"] is True
    assert 0.15 < last["interval_s"] < 5 and last["tasks"] >= last["processes"] > 0
    mine = [r for r in last["rows"] if r["ac_tgid"] == os.getpid()]
    assert mine and mine[0]["ac_comm"] and mine[0]["cpu_pct"] is not None
    assert set(mine[0]) >= {*(m.name for m in METRICS), *COUNTED, "user", "cgroup"}


@pytest.mark.kernel
def test_batch_text_tables_and_options() -> None:
    done = _top("-b", "-n", "2", "-d", "0.2", "-s", "iowait", "-P", "3", "-c", "python")
    assert done.returncode == 0, done.stderr
    blocks = [b for b in done.stdout.split("\n\n") if b.strip()]
    assert len(blocks) == 2
    lines = blocks[-1].splitlines()
    assert lines[0].startswith("taskstats top ") and lines[1].startswith("CPU ")
    assert "disk R/W/s total" in lines[1] and "delay accounting" in lines[2]
    assert lines[3].startswith("exits since start:")
    assert "sort IOW% desc" in lines[4] and "filter comm=python" in lines[4]
    assert "*IOW%" in lines[5] and "RSS  PEAK  THR" in lines[5] and 1 <= len(lines[6:]) <= 3
    assert all("python" in line.lower() for line in lines[6:])


def test_full_screen_needs_a_terminal() -> None:
    done = _top(timeout=30)
    assert done.returncode == 2 and "use -b" in done.stderr


@pytest.mark.kernel
def test_exited_threads_and_processes_are_accounted_live() -> None:
    """A thread that burns CPU and exits between samples still counts in its process
    (from its exit record); a short-lived child shows as an exited row."""
    code = ("import sys, threading, time\n"
            "def burn():\n    t = time.process_time()\n"
            "    while time.process_time() - t < 0.3: pass\n"
            "sys.stdin.readline(); th = threading.Thread(target=burn); th.start(); th.join()\n"
            "print('done', flush=True); sys.stdin.readline()\n")
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as helper:
        assert helper.stdin is not None and helper.stdout is not None
        try:
            with Client("kernel") as client:
                sampler, model = Sampler(client), Model()
                try:
                    model.update(sampler.sample())
                    helper.stdin.write("go\n")
                    helper.stdin.flush()
                    assert helper.stdout.readline() == "done\n"
                    with subprocess.Popen(["sleep", "0"]) as child:
                        pass  # waits for it
                    frame = model.update(sampler.sample())
                finally:
                    sampler.close()
        finally:
            helper.kill()
    proc = only(frame.rows("process"), helper.pid)
    assert proc.threads == 1 and (proc.value("cpu_pct") or 0) * frame.seconds > 25
    gone = only(frame.rows("process"), child.pid)
    assert gone.exited and gone.command == "sleep" and gone.lifetime is not None
    assert frame.process_exits_total >= 1 and frame.exits_total >= 2


@pytest.mark.kernel
def test_list_tasks_sees_every_thread_of_this_process() -> None:
    tasks = list_tasks()
    mine = {int(t) for t in os.listdir("/proc/self/task")}
    assert all(tasks[t] == os.getpid() for t in mine if t in tasks)
    assert os.getpid() in tasks


# ------------------------------------------------------------------ live: the screen in tmux

class Tmux:
    """A private tmux server with one 80x24 session running ``command``."""

    def __init__(self, tmp: Path, command: str) -> None:
        self.base = ["tmux", "-S", str(tmp / "tmux.sock"), "-f", "/dev/null"]
        self.status = tmp / "status"
        shell = f"{command}; echo $? > {self.status}"
        self.run("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", shell)

    def run(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True,
                              timeout=10, check=True)
        return done.stdout

    def screen(self) -> list[str]:
        return self.run("capture-pane", "-p", "-t", "top").split("\n")[:-1]

    def until(self, check: Callable[[list[str]], bool], what: str, timeout: float = 10
              ) -> list[str]:
        lines: list[str] = []

        def shown() -> list[str] | None:
            nonlocal lines
            lines = self.screen()
            return lines if check(lines) else None
        try:
            return wait_until(shown, what, timeout)
        except AssertionError:
            raise AssertionError(f"screen never showed {what}:\n" + "\n".join(lines)) from None

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[[str], Tmux]]:
    require_kernel()
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the screen test: install tmux (apt-get install -y tmux)")
        pytest.skip("tmux is not installed")
    started: list[Tmux] = []

    def start(command: str) -> Tmux:
        started.append(Tmux(tmp_path, command))
        return started[-1]

    yield start
    for t in started:
        t.close()


def test_screen_starts_sorts_resizes_and_quits(tmux: Callable[[str], Tmux]) -> None:
    # stale LINES/COLUMNS (as pytest exports them) must not freeze the size
    env = f"PYTHONPATH={ROOT / 'src'} LINES=24 COLUMNS=80"
    term = tmux(f"env {env} {sys.executable} -m pytaskstats top -d 0.5")
    started = time.monotonic()
    lines = term.until(lambda s: any("COMMAND" in line for line in s), "the column header")
    assert time.monotonic() - started < 5
    assert lines[0].startswith("taskstats top ") and "kernel" in lines[0]
    assert lines[1].startswith("CPU ") and lines[2].startswith("delay accounting")
    assert lines[3].startswith("exits")
    assert "sort CPU% desc" in lines[4] and "*CPU%" in lines[5] and "RSS" not in lines[5]
    assert len(lines) == 24 and lines[23].startswith("q quit")
    assert all(len(line) <= 80 for line in lines)
    term.run("send-keys", "-t", "top", "i")
    lines = term.until(lambda s: "sort IOW% desc" in s[4], "the new sort order")
    assert "*IOW%" in lines[5] and "*CPU%" not in lines[5]
    term.run("resize-window", "-t", "top", "-x", "100", "-y", "30")
    lines = term.until(lambda s: len(s) == 30 and s[29].startswith("q quit")
                       and "space pause" in s[29], "a redraw at 100x30")
    assert "*IOW%" in lines[5] and "RSS  PEAK  THR COMMAND" in lines[5]
    assert all(line.strip() for line in lines[6:29])
    term.run("send-keys", "-t", "top", "q")
    wait_until(lambda: term.status.exists() and term.status.read_text().strip(),
               "top to quit", 10)
    assert term.status.read_text().strip() == "0"


# ------------------------------------------------------------------ the "done when" load

IO_LOOP = """
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)
size = os.fstat(fd).st_size
offset = 0
while True:
    os.preadv(fd, [buf], offset)
    offset = (offset + (1 << 20)) % size
"""


@pytest.mark.kernel
def test_io_waiter_tops_the_io_wait_sort_under_io_and_cpu_load(delayacct_on: None,
                                                              tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(16 << 20))
    io = subprocess.Popen([sys.executable, "-c", IO_LOOP, str(data)])
    cpu = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = _top("-b", "--json", "-n", "4", "-d", "0.5", "-s", "iowait")
        assert done.returncode == 0, done.stderr
        frames = [json.loads(line) for line in done.stdout.splitlines()[1:]]
        assert frames and all(f["delayacct"]["enabled"] is True for f in frames)
        # ours, in the sort's order (other work on the machine may wait on IO too); on a
        # busy machine the IO loop may spend an interval waiting for a CPU instead, so
        # the claim is about an interval where it waited on IO
        ranked = [[r for r in f["rows"] if r["ac_tgid"] in (io.pid, cpu.pid)] for f in frames]
        waited = [rows for rows in ranked if len(rows) == 2 and max(
            r["io_wait_pct"] for r in rows) > 20]
        assert waited, [rows for rows in ranked]
        for top_row, burner in waited:
            assert top_row["ac_tgid"] == io.pid, (top_row, burner)
            assert top_row["read_bytes_per_s"] > 1 << 20
            assert burner["io_wait_pct"] < 1  # it never waits on IO
        assert any(r["cpu_pct"] > 1 for rows in ranked for r in rows if r["ac_tgid"] == cpu.pid)
    finally:
        for proc in (io, cpu):
            proc.kill()
            proc.wait()
