"""The metrics: the aggregator's accounting rules with injected records and clock, the
exact exposition text on a private registry, the HTTP endpoint, and (as root) live
samples and taskstatsd's endpoint against the real kernel."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from pytaskstats import Client, ExitRecord, Lost, TaskStats, TaskstatsError
from pytaskstats.cli import exporter
from pytaskstats.cli.main import build_parser
from pytaskstats.metrics import names
from pytaskstats.metrics.address import parse_listen
from pytaskstats.metrics.aggregate import (
    OTHER,
    UNKNOWN,
    VALUE_FIELDS,
    Aggregator,
    Live,
    Snapshot,
    cap_depth,
    parse_groups,
)
from pytaskstats.metrics.collector import TaskstatsCollector
from pytaskstats.metrics.health import Health, LossTracker
from pytaskstats.metrics.live import Sampler, SamplerThread, list_tasks
from pytaskstats.metrics.server import MetricsServer
from pytaskstats.metrics.service import MetricsService
from pytaskstats.procfs import cgroup_path
from pytaskstats.records import AGROUP

from .conftest import unique_command, wait_until
from .daemon_util import RunningDaemon

SEC = 1_000_000_000
ROOT = Path(__file__).resolve().parent.parent


def fetch(url: str) -> str:
    """GET ``url`` directly (never through a proxy from the environment)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as reply:
        return str(reply.read().decode())


class Clock:
    """An injectable monotonic clock (ns)."""

    def __init__(self) -> None:
        self.ns = 1000 * SEC

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * SEC)


def task(tid: int, *, age_s: float = 10.0, comm: str = "worker", ppid: int = 1,
         tgid: int | None = None, ended: bool = True, **values: int) -> TaskStats:
    """A per-task record ``age_s`` old with the given counter values."""
    return TaskStats(version=17, ac_pid=tid, ac_tgid=tgid or tid, ac_ppid=ppid, ac_comm=comm,
                     ac_etime=int(age_s * 1e6), ac_flag=AGROUP if ended else 0,
                     **values)  # type: ignore[arg-type]


def exit_of(stats: TaskStats) -> ExitRecord:
    """The exit record carrying ``stats``."""
    assert stats.ac_pid is not None
    return ExitRecord(task=stats, pid=stats.ac_pid, tgid=stats.ac_tgid)


def totals(agg: Aggregator, label: str) -> dict[str, int]:
    """A cgroup's totals by field name, plus the exit counts."""
    values = agg.snapshot().cgroups[label][0]
    return {**dict(zip(VALUE_FIELDS, values, strict=False)), "task_exits": values[-2],
            "process_exits": values[-1]}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def agg(clock: Clock) -> Aggregator:
    return Aggregator(clock=clock, resolve=lambda tgid: None)


# ---------------------------------------------------------------- accounting rules


def test_a_task_never_sampled_is_counted_from_its_exit(agg: Aggregator) -> None:
    agg.on_exit(exit_of(task(7, age_s=5, blkio_delay_total=3 * SEC, blkio_count=2,
                             ac_utime=50_000, read_bytes=4096)), "/a")
    t = totals(agg, "/a")
    assert (t["blkio_delay_total"], t["blkio_count"], t["ac_utime"], t["read_bytes"]) == (
        3 * SEC, 2, 50_000, 4096)
    assert (t["task_exits"], t["process_exits"]) == (1, 1)


def test_live_then_exit_counts_once(agg: Aggregator, clock: Clock) -> None:
    agg.on_sample([Live(5, 5, task(5, cpu_delay_total=100), "/a")], clock())
    assert totals(agg, "/a")["cpu_delay_total"] == 100
    clock.advance(15)
    agg.on_exit(exit_of(task(5, age_s=25, cpu_delay_total=250)), "/a")
    assert totals(agg, "/a")["cpu_delay_total"] == 250


def test_a_zombie_sampled_after_its_exit_adds_nothing(agg: Aggregator, clock: Clock) -> None:
    started = clock()
    agg.on_exit(exit_of(task(5, cpu_delay_total=250)), "/a")
    agg.on_sample([Live(5, 5, task(5, cpu_delay_total=250), "/a")], started)
    clock.advance(15)
    agg.on_sample([Live(5, 5, task(5, age_s=25, cpu_delay_total=250), "/a")], clock())
    assert totals(agg, "/a")["cpu_delay_total"] == 250
    assert agg.snapshot().regressions == 0


def test_a_late_exit_adds_only_what_the_samples_missed(agg: Aggregator, clock: Clock) -> None:
    agg.on_sample([Live(5, 5, task(5, cpu_delay_total=100), "/a")], clock())
    clock.advance(15)
    agg.on_sample([], clock())  # gone from /proc before its exit record was read
    agg.on_exit(exit_of(task(5, age_s=20, cpu_delay_total=130)), None)
    assert totals(agg, "/a")["cpu_delay_total"] == 130
    assert totals(agg, "/a")["task_exits"] == 1


def test_a_reused_tid_is_a_new_task(agg: Aggregator, clock: Clock) -> None:
    agg.on_sample([Live(5, 5, task(5, age_s=100, cpu_delay_total=1000), "/a")], clock())
    clock.advance(15)  # task 5 exited unseen (record lost); a new task 5 is 2 s old
    agg.on_sample([Live(5, 5, task(5, age_s=2, cpu_delay_total=40), "/a")], clock())
    assert totals(agg, "/a")["cpu_delay_total"] == 1040
    assert agg.snapshot().regressions == 0


def test_shrinking_counters_are_clamped_and_counted(agg: Aggregator, clock: Clock) -> None:
    agg.on_sample([Live(5, 5, task(5, age_s=100, cpu_delay_total=1000, ac_stime=9), "/a")],
                  clock())
    clock.advance(15)
    agg.on_sample([Live(5, 5, task(5, age_s=115, cpu_delay_total=900, ac_stime=12), "/a")],
                  clock())
    t = totals(agg, "/a")
    assert (t["cpu_delay_total"], t["ac_stime"]) == (1000, 12)
    assert agg.snapshot().regressions == 1
    clock.advance(15)
    agg.on_sample([Live(5, 5, task(5, age_s=130, cpu_delay_total=1100), "/a")], clock())
    assert totals(agg, "/a")["cpu_delay_total"] == 1100


def test_increments_follow_a_task_that_moves(agg: Aggregator, clock: Clock) -> None:
    agg.on_sample([Live(5, 5, task(5, ac_utime=10), "/a")], clock())
    clock.advance(15)
    agg.on_sample([Live(5, 5, task(5, age_s=25, ac_utime=25), "/b")], clock())
    assert totals(agg, "/a")["ac_utime"] == 10
    assert totals(agg, "/b")["ac_utime"] == 15


def test_threads_count_each_and_a_process_once(agg: Aggregator) -> None:
    agg.on_exit(exit_of(task(11, tgid=10, ended=False, ac_utime=5)), "/a")
    agg.on_exit(exit_of(task(10, tgid=10, ended=True, ac_utime=7)), "/a")
    t = totals(agg, "/a")
    assert (t["ac_utime"], t["task_exits"], t["process_exits"]) == (12, 2, 1)


def test_exit_cgroup_falls_back_to_the_sampled_cgroup_then_the_parent(clock: Clock) -> None:
    paths = {1: "/init.scope", 200: "/svc/parent"}
    agg = Aggregator(clock=clock, resolve=paths.get)
    agg.on_sample([Live(5, 5, task(5), "/sampled")], clock())
    agg.on_exit(exit_of(task(5)), None)  # the process is gone: its sampled cgroup
    agg.on_exit(exit_of(task(6, ppid=200)), None)  # never sampled: its parent's
    agg.on_exit(exit_of(task(7, ppid=300)), None)  # nothing known
    agg.on_exit(exit_of(task(8, ppid=200)), "/given")  # the caller's wins
    snap = agg.snapshot()
    assert {label: v[0][-2] for label, v in snap.cgroups.items()} == {
        "/sampled": 1, "/svc/parent": 1, UNKNOWN: 1, "/given": 1}


def test_command_groups_first_match_wins(clock: Clock) -> None:
    rules = parse_groups(["db=^postgres", "web=nginx|postgres", "py=python"])
    agg = Aggregator(clock=clock, groups=rules)
    for tid, comm in enumerate(["postgres", "nginx", "python3", "bash"], start=1):
        agg.on_exit(exit_of(task(tid, comm=comm, swapin_count=1)), "/")
    groups = agg.snapshot().groups
    swapin = VALUE_FIELDS.index("swapin_count")
    assert {g: v[swapin] for g, v in groups.items()} == {"db": 1, "web": 1, "py": 1, OTHER: 1}
    with pytest.raises(ValueError, match="NAME=REGEX"):
        parse_groups(["nogroup"])
    with pytest.raises(ValueError, match="bad regex"):
        parse_groups(["x=("])


def test_depth_cap_series_cap_and_retirement(clock: Clock) -> None:
    assert cap_depth("/a/b/c/d", 3) == "/a/b/c"
    assert cap_depth("/", 3) == "/"
    agg = Aggregator(clock=clock, depth=2, max_series=2, ttl_s=60)
    for tid, path in enumerate(["/a/b/c", "/a/b/d", "/x/y", "/z", "/z", "/w"], start=1):
        agg.on_exit(exit_of(task(tid)), path)
    snap = agg.snapshot()
    assert {k: v[0][-2] for k, v in snap.cgroups.items()} == {"/a/b": 2, "/x/y": 1, OTHER: 3}
    assert snap.series_dropped == 2  # /z (once) and /w
    clock.advance(61)
    agg.on_sample([Live(9, 9, task(9), "/x/y/live")], clock())  # /x/y has a task: kept
    assert set(agg.snapshot().cgroups) == {"/x/y", OTHER}
    agg.on_exit(exit_of(task(10)), "/new")  # a freed slot
    assert "/new" in agg.snapshot().cgroups
    with pytest.raises(ValueError):
        Aggregator(depth=0)


def test_counters_never_go_down_under_a_random_mix(clock: Clock) -> None:
    """Property: whatever order samples, exits, zombies and reuse come in, every
    exported counter is monotone."""
    rng = random.Random(6)
    agg = Aggregator(clock=clock, max_series=3)
    values: dict[int, int] = {}
    born: dict[int, int] = {}
    previous: dict[str, tuple[int, ...]] = {}
    for _ in range(3000):
        tid = rng.randint(1, 8)
        born.setdefault(tid, clock())
        values[tid] = values.get(tid, 0) + rng.randint(-2, 20)
        rec = task(tid, age_s=(clock() - born[tid]) / SEC, cpu_delay_total=max(values[tid], 0))
        roll = rng.random()
        if roll < 0.5:
            agg.on_sample([Live(tid, tid, rec, f"/g{tid % 5}")], clock() - rng.randint(0, SEC))
        elif roll < 0.8:
            agg.on_exit(exit_of(rec), rng.choice([None, f"/g{tid % 4}"]))
            if rng.random() < 0.5:
                born.pop(tid)
                values.pop(tid)
        clock.advance(rng.random() * 3)
        for label, (row, _) in agg.snapshot().cgroups.items():
            if label in previous:
                assert all(a >= b for a, b in zip(row, previous[label], strict=True))
            previous[label] = row


# ---------------------------------------------------------------- exposition


EXPECTED = """\
# HELP taskstats_delay_seconds_total Time tasks spent waiting, by delay kind; task-seconds summed over tasks (live and exited), not wall-clock: unlike PSI it grows by N per second while N tasks wait.
# TYPE taskstats_delay_seconds_total counter
taskstats_delay_seconds_total{cgroup="/system.slice/postgresql.service",kind="cpu"} 0.0
taskstats_delay_seconds_total{cgroup="/system.slice/postgresql.service",kind="blkio"} 1.5
taskstats_delay_seconds_total{cgroup="/system.slice/postgresql.service",kind="swapin"} 0.0
taskstats_delay_seconds_total{cgroup="/system.slice/postgresql.service",kind="freepages"} 0.0
taskstats_delay_seconds_total{cgroup="/system.slice/postgresql.service",kind="thrashing"} 0.0
taskstats_delay_seconds_total{cgroup="/system.slice/postgresql.service",kind="compact"} 0.0
taskstats_delay_seconds_total{cgroup="/system.slice/postgresql.service",kind="wpcopy"} 0.0
taskstats_delay_seconds_total{cgroup="/system.slice/postgresql.service",kind="irq"} 0.0
taskstats_delay_seconds_total{cgroup="/user.slice",kind="cpu"} 0.002
taskstats_delay_seconds_total{cgroup="/user.slice",kind="blkio"} 0.0
taskstats_delay_seconds_total{cgroup="/user.slice",kind="swapin"} 0.0
taskstats_delay_seconds_total{cgroup="/user.slice",kind="freepages"} 0.0
taskstats_delay_seconds_total{cgroup="/user.slice",kind="thrashing"} 0.0
taskstats_delay_seconds_total{cgroup="/user.slice",kind="compact"} 0.0
taskstats_delay_seconds_total{cgroup="/user.slice",kind="wpcopy"} 0.0
taskstats_delay_seconds_total{cgroup="/user.slice",kind="irq"} 0.0
# HELP taskstats_delays_total Delay episodes (the kernel's KIND_count), live and exited tasks.
# TYPE taskstats_delays_total counter
taskstats_delays_total{cgroup="/system.slice/postgresql.service",kind="cpu"} 0.0
taskstats_delays_total{cgroup="/system.slice/postgresql.service",kind="blkio"} 3.0
taskstats_delays_total{cgroup="/system.slice/postgresql.service",kind="swapin"} 0.0
taskstats_delays_total{cgroup="/system.slice/postgresql.service",kind="freepages"} 0.0
taskstats_delays_total{cgroup="/system.slice/postgresql.service",kind="thrashing"} 0.0
taskstats_delays_total{cgroup="/system.slice/postgresql.service",kind="compact"} 0.0
taskstats_delays_total{cgroup="/system.slice/postgresql.service",kind="wpcopy"} 0.0
taskstats_delays_total{cgroup="/system.slice/postgresql.service",kind="irq"} 0.0
taskstats_delays_total{cgroup="/user.slice",kind="cpu"} 4.0
taskstats_delays_total{cgroup="/user.slice",kind="blkio"} 0.0
taskstats_delays_total{cgroup="/user.slice",kind="swapin"} 0.0
taskstats_delays_total{cgroup="/user.slice",kind="freepages"} 0.0
taskstats_delays_total{cgroup="/user.slice",kind="thrashing"} 0.0
taskstats_delays_total{cgroup="/user.slice",kind="compact"} 0.0
taskstats_delays_total{cgroup="/user.slice",kind="wpcopy"} 0.0
taskstats_delays_total{cgroup="/user.slice",kind="irq"} 0.0
# HELP taskstats_group_delay_seconds_total Time tasks spent waiting, by command group and delay kind; task-seconds summed over tasks (live and exited), not wall-clock: unlike PSI it grows by N per second while N tasks wait.
# TYPE taskstats_group_delay_seconds_total counter
taskstats_group_delay_seconds_total{group="db",kind="cpu"} 0.0
taskstats_group_delay_seconds_total{group="db",kind="blkio"} 1.5
taskstats_group_delay_seconds_total{group="db",kind="swapin"} 0.0
taskstats_group_delay_seconds_total{group="db",kind="freepages"} 0.0
taskstats_group_delay_seconds_total{group="db",kind="thrashing"} 0.0
taskstats_group_delay_seconds_total{group="db",kind="compact"} 0.0
taskstats_group_delay_seconds_total{group="db",kind="wpcopy"} 0.0
taskstats_group_delay_seconds_total{group="db",kind="irq"} 0.0
taskstats_group_delay_seconds_total{group="other",kind="cpu"} 0.002
taskstats_group_delay_seconds_total{group="other",kind="blkio"} 0.0
taskstats_group_delay_seconds_total{group="other",kind="swapin"} 0.0
taskstats_group_delay_seconds_total{group="other",kind="freepages"} 0.0
taskstats_group_delay_seconds_total{group="other",kind="thrashing"} 0.0
taskstats_group_delay_seconds_total{group="other",kind="compact"} 0.0
taskstats_group_delay_seconds_total{group="other",kind="wpcopy"} 0.0
taskstats_group_delay_seconds_total{group="other",kind="irq"} 0.0
# HELP taskstats_group_delays_total Delay episodes by command group and delay kind.
# TYPE taskstats_group_delays_total counter
taskstats_group_delays_total{group="db",kind="cpu"} 0.0
taskstats_group_delays_total{group="db",kind="blkio"} 3.0
taskstats_group_delays_total{group="db",kind="swapin"} 0.0
taskstats_group_delays_total{group="db",kind="freepages"} 0.0
taskstats_group_delays_total{group="db",kind="thrashing"} 0.0
taskstats_group_delays_total{group="db",kind="compact"} 0.0
taskstats_group_delays_total{group="db",kind="wpcopy"} 0.0
taskstats_group_delays_total{group="db",kind="irq"} 0.0
taskstats_group_delays_total{group="other",kind="cpu"} 4.0
taskstats_group_delays_total{group="other",kind="blkio"} 0.0
taskstats_group_delays_total{group="other",kind="swapin"} 0.0
taskstats_group_delays_total{group="other",kind="freepages"} 0.0
taskstats_group_delays_total{group="other",kind="thrashing"} 0.0
taskstats_group_delays_total{group="other",kind="compact"} 0.0
taskstats_group_delays_total{group="other",kind="wpcopy"} 0.0
taskstats_group_delays_total{group="other",kind="irq"} 0.0
# HELP taskstats_delay_max_seconds Longest single delay of any task that exited since start (KIND_delay_max; absent on kernels without it).
# TYPE taskstats_delay_max_seconds gauge
taskstats_delay_max_seconds{cgroup="/system.slice/postgresql.service",kind="blkio"} 1.0
# HELP taskstats_implausible_delays_total Tasks whose delay of this kind was longer than the task had lived (a kernel accounting error), left out of the delay sums; once per task.
# TYPE taskstats_implausible_delays_total counter
taskstats_implausible_delays_total{kind="blkio"} 0.0
taskstats_implausible_delays_total{kind="compact"} 0.0
taskstats_implausible_delays_total{kind="cpu"} 0.0
taskstats_implausible_delays_total{kind="freepages"} 0.0
taskstats_implausible_delays_total{kind="irq"} 0.0
taskstats_implausible_delays_total{kind="swapin"} 0.0
taskstats_implausible_delays_total{kind="thrashing"} 0.0
taskstats_implausible_delays_total{kind="wpcopy"} 0.0
# HELP taskstats_cpu_seconds_total CPU time in user and system mode, live and exited tasks.
# TYPE taskstats_cpu_seconds_total counter
taskstats_cpu_seconds_total{cgroup="/system.slice/postgresql.service",mode="user"} 0.25
taskstats_cpu_seconds_total{cgroup="/system.slice/postgresql.service",mode="system"} 0.125
taskstats_cpu_seconds_total{cgroup="/user.slice",mode="user"} 1.0
taskstats_cpu_seconds_total{cgroup="/user.slice",mode="system"} 0.0
# HELP taskstats_io_bytes_total Bytes read from and written to storage, live and exited tasks.
# TYPE taskstats_io_bytes_total counter
taskstats_io_bytes_total{cgroup="/system.slice/postgresql.service",direction="read"} 8192.0
taskstats_io_bytes_total{cgroup="/system.slice/postgresql.service",direction="write"} 4096.0
taskstats_io_bytes_total{cgroup="/user.slice",direction="read"} 0.0
taskstats_io_bytes_total{cgroup="/user.slice",direction="write"} 0.0
# HELP taskstats_task_exits_total Tasks that exited (every thread counts).
# TYPE taskstats_task_exits_total counter
taskstats_task_exits_total{cgroup="/system.slice/postgresql.service"} 1.0
taskstats_task_exits_total{cgroup="/user.slice"} 0.0
# HELP taskstats_process_exits_total Processes that exited (their last thread exited).
# TYPE taskstats_process_exits_total counter
taskstats_process_exits_total{cgroup="/system.slice/postgresql.service"} 1.0
taskstats_process_exits_total{cgroup="/user.slice"} 0.0
# HELP taskstats_exit_events_received_total Exit records received from the kernel (the denominator for losses).
# TYPE taskstats_exit_events_received_total counter
taskstats_exit_events_received_total 1.0
# HELP taskstats_exit_events_lost_total Exit records known lost before aggregation, by reason (overrun, truncated, malformed).
# TYPE taskstats_exit_events_lost_total counter
taskstats_exit_events_lost_total{reason="malformed"} 0.0
taskstats_exit_events_lost_total{reason="overrun"} 5.0
taskstats_exit_events_lost_total{reason="truncated"} 0.0
# HELP taskstats_netlink_dropped_messages_total Exit messages the kernel dropped on a listener socket (its drop counter), by the socket's cpulist.
# TYPE taskstats_netlink_dropped_messages_total counter
taskstats_netlink_dropped_messages_total{listener="0"} 5.0
taskstats_netlink_dropped_messages_total{listener="1"} 0.0
# HELP taskstats_netlink_overruns_total Receive buffer overrun episodes (ENOBUFS) on a listener socket.
# TYPE taskstats_netlink_overruns_total counter
taskstats_netlink_overruns_total{listener="0"} 1.0
taskstats_netlink_overruns_total{listener="1"} 0.0
# HELP taskstats_journal_records_written_total Exit records committed to the journal.
# TYPE taskstats_journal_records_written_total counter
taskstats_journal_records_written_total 1.0
# HELP taskstats_journal_records_dropped_total Exit records aggregated here but not journaled, by reason.
# TYPE taskstats_journal_records_dropped_total counter
taskstats_journal_records_dropped_total{reason="disk_low"} 0.0
taskstats_journal_records_dropped_total{reason="queue_full"} 0.0
# HELP taskstats_journal_suspended 1 while journaling is suspended for lack of disk space.
# TYPE taskstats_journal_suspended gauge
taskstats_journal_suspended 0.0
# HELP taskstats_client_records_dropped_total Exit records not delivered to slow listening clients.
# TYPE taskstats_client_records_dropped_total counter
taskstats_client_records_dropped_total 2.0
# HELP taskstats_series_dropped_total Cgroups folded into cgroup="other" by the series cap.
# TYPE taskstats_series_dropped_total counter
taskstats_series_dropped_total 0.0
# HELP taskstats_clamped_observations_total Task observations whose counters went down; not exported (clamped).
# TYPE taskstats_clamped_observations_total counter
taskstats_clamped_observations_total 0.0
# HELP taskstats_live_tasks Tasks in the last live sample.
# TYPE taskstats_live_tasks gauge
taskstats_live_tasks 1.0
# HELP taskstats_live_sample_duration_seconds Duration of the last live sample.
# TYPE taskstats_live_sample_duration_seconds gauge
taskstats_live_sample_duration_seconds 0.0
# HELP taskstats_scrape_errors_total Live samples that failed.
# TYPE taskstats_scrape_errors_total counter
taskstats_scrape_errors_total 0.0
# HELP taskstats_up 1 if the last live sample succeeded (0 before the first).
# TYPE taskstats_up gauge
taskstats_up 1.0
# HELP taskstats_build_info Always 1: pytaskstats version and the kernel's struct taskstats version.
# TYPE taskstats_build_info gauge
taskstats_build_info{taskstats_version="17",version="0.1.0"} 1.0
"""  # noqa: E501


def _scenario(clock: Clock) -> Aggregator:
    agg = Aggregator(clock=clock, depth=2, groups=parse_groups(["db=^postgres"]))
    agg.on_exit(exit_of(task(7, comm="postgres", blkio_delay_total=1_500_000_000,
                             blkio_count=3, blkio_delay_max=1_000_000_000, ac_utime=250_000,
                             ac_stime=125_000, read_bytes=8192, write_bytes=4096)),
                "/system.slice/postgresql.service/sub")
    agg.on_sample([Live(9, 9, task(9, comm="bash", cpu_delay_total=2_000_000, cpu_count=4,
                                   ac_utime=1_000_000), "/user.slice")], clock())
    return agg


def _health() -> Health:
    return Health(received=1, lost={"malformed": 0, "overrun": 5, "truncated": 0},
                  kernel_drops={"0": 5, "1": 0}, overruns={"0": 1, "1": 0},
                  journal_written=1, journal_dropped={"disk_low": 0, "queue_full": 0},
                  journal_suspended=False, client_dropped=2)


def test_exposition_text_exactly(clock: Clock) -> None:
    registry = CollectorRegistry()
    registry.register(TaskstatsCollector(_scenario(clock), _health))
    text, duration = _split_duration(generate_latest(registry).decode())
    assert text == EXPECTED
    assert 0 <= duration < 60


def _split_duration(text: str) -> tuple[str, float]:
    """The exposition without its last family, the scrape duration, and its value (s)."""
    head, _, tail = text.partition(f"# HELP {names.SCRAPE_DURATION.name} ")
    match = re.fullmatch(rf"{re.escape(names.SCRAPE_DURATION.help)}\n"
                         rf"# TYPE {names.SCRAPE_DURATION.name} gauge\n"
                         rf"{names.SCRAPE_DURATION.name} (\S+)\n", tail)
    assert match, tail
    return head, float(match[1])


def test_scrape_duration_covers_the_snapshot_and_the_families(clock: Clock) -> None:
    """A snapshot that takes 50 ms shows in the scrape's duration."""
    class Slow(Aggregator):
        def snapshot(self) -> Snapshot:
            started = time.perf_counter()
            while time.perf_counter() - started < 0.05:  # busy, not a sleep: CPU time
                pass
            return super().snapshot()

    registry = CollectorRegistry()
    registry.register(TaskstatsCollector(Slow(clock=clock)))
    _, duration = _split_duration(generate_latest(registry).decode())
    assert 0.05 <= duration < 60


def test_the_service_serves_its_own_process_metrics(clock: Clock) -> None:
    """MetricsService (the exporter's and taskstatsd's endpoint) adds this process's
    process_* metrics: its fd limit, its start time, its memory."""
    service = MetricsService(Aggregator(clock=clock), "127.0.0.1:0")
    try:
        got = _scrape(service.url)
    finally:
        service.close()
    assert got["process_max_fds"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        btime = next(int(x.split()[1]) for x in f if x.startswith("btime "))
    started = btime + start_ticks / os.sysconf("SC_CLK_TCK")
    assert abs(got["process_start_time_seconds"] - started) < 1.0
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert 0.5 * resident < got["process_resident_memory_bytes"] < 2 * resident
    assert got["process_cpu_seconds_total"] > 0 and got["process_open_fds"] >= 3
    assert got[names.SCRAPE_DURATION.name] >= 0


def test_every_documented_metric_is_exported_and_vice_versa(clock: Clock) -> None:
    registry = CollectorRegistry()
    registry.register(TaskstatsCollector(_scenario(clock),
                                         lambda: _health()._replace(samples=(3, 2, 1))))
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)$", generate_latest(registry).decode(),
                              re.M))
    assert exported == {(m.name, m.type) for m in names.METRICS}


def test_describe_is_empty_so_registering_does_not_collect(clock: Clock) -> None:
    class Spy(TaskstatsCollector):
        calls = 0

        def collect(self):  # type: ignore[no-untyped-def]
            Spy.calls += 1
            return super().collect()

    registry = CollectorRegistry(auto_describe=True)
    registry.register(Spy(Aggregator(clock=clock)))
    assert Spy.calls == 0
    generate_latest(registry)
    assert Spy.calls == 1


def test_docs_list_every_metric() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert names.markdown() in doc


@pytest.mark.parametrize("path", ["contrib/grafana-taskstats.json", "docs/metrics.md"])
def test_dashboard_and_docs_use_only_exported_metrics(path: str) -> None:
    text = (ROOT / path).read_text()
    if path.endswith(".json"):
        json.loads(text)
    labels = {label for m in names.METRICS for label in m.labels}
    used = {n for n in re.findall(r"\btaskstats_[a-z_]+", text)
            if not n.endswith("_") and n not in labels}
    assert len(used) > 5 and used <= {m.name for m in names.METRICS}


def test_loss_tracker_counts_records_and_episodes() -> None:
    tracker = LossTracker()
    tracker.on_exit()
    tracker.on_lost(Lost(records=7, reason="overrun", cpus="1"))
    tracker.on_lost(Lost(records=1, reason="malformed", cpus="0"))
    health = tracker.health(None)
    assert health.received == 1
    assert health.lost == {"overrun": 7, "truncated": 0, "malformed": 1}
    assert health.overruns == {"1": 1}


# ---------------------------------------------------------------- live sampling


def test_list_tasks_reads_task_dirs_and_filters_by_owner(tmp_path: Path) -> None:
    for tid in (100, 101):
        (tmp_path / "100" / "task" / str(tid)).mkdir(parents=True)
    (tmp_path / "200").mkdir()  # exited while listed: no task/ any more
    (tmp_path / "self").mkdir()
    assert sorted(list_tasks(str(tmp_path))) == [(100, 100), (101, 100)]
    assert sorted(list_tasks(str(tmp_path), uid=os.geteuid())) == [(100, 100), (101, 100)]
    assert list_tasks(str(tmp_path), uid=os.geteuid() + 1) == []


def test_a_failed_sample_is_counted_and_said_once(
        tmp_path: Path, clock: Clock, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "7" / "task" / "7").mkdir(parents=True)
    agg = Aggregator(clock=clock)

    def query(ids: list[int]) -> dict[int, TaskStats]:
        raise TaskstatsError("no answer")

    sampler = Sampler(agg, query, root=str(tmp_path), resolve={7: "/fake"}.get, clock=clock)
    assert not sampler.sample() and not sampler.sample()
    snap = agg.snapshot()
    assert (snap.sample_errors, snap.sample_ok) == (2, False)
    assert capsys.readouterr().err.count("live sample failed: no answer") == 1
    sampler.query = lambda ids: {7: task(7, ac_utime=3)}
    assert sampler.sample()
    snap = agg.snapshot()
    assert snap.sample_ok and snap.live_tasks == 1 and set(snap.cgroups) == {"/fake"}


def test_sampler_thread_samples_at_once_and_stops(clock: Clock) -> None:
    calls: list[int] = []

    def query(ids: list[int]) -> dict[int, TaskStats]:
        calls.append(len(ids))
        return {}

    thread = SamplerThread(Sampler(Aggregator(clock=clock), query), interval=3600)
    thread.start()
    wait_until(lambda: calls, "the sampler thread's first sample", timeout=10)
    thread.stop()
    assert len(calls) == 1 and calls[0] > 0


# ---------------------------------------------------------------- endpoint and CLI


@pytest.mark.parametrize(("text", "expected"), [
    ("9100", ("127.0.0.1", 9100)), (":9100", ("127.0.0.1", 9100)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9100", ("::1", 9100)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:http", "1.2.3.4:70000"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="ADDR:PORT"):
        parse_listen(text)


def test_server_serves_the_registry_on_loopback_and_releases_the_port(clock: Clock) -> None:
    registry = CollectorRegistry()
    registry.register(TaskstatsCollector(_scenario(clock)))
    server = MetricsServer(registry, "0")
    try:
        assert server.url.startswith("http://127.0.0.1:")
        body = fetch(server.url)
        assert 'taskstats_task_exits_total{cgroup="/system.slice/postgresql.service"} 1.0' in body
    finally:
        server.close()
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    _assert_released(port)


def _assert_released(port: int) -> None:
    """Nobody listens on ``port`` any more (TIME_WAIT left by a scrape is fine)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_exporter_subcommand_options() -> None:
    args = build_parser().parse_args(["exporter", "--listen", "9999", "--interval", "2",
                                      "--group", "db=^postgres", "--cgroup-depth", "2"])
    assert args.func is exporter.run
    assert (args.listen, args.interval, args.group, args.cgroup_depth, args.max_series) == (
        "9999", 2.0, ["db=^postgres"], 2, 500)


WITHOUT_CLIENT = ("import sys; sys.modules['prometheus_client'] = None\n"
                  "import pytaskstats.metrics.live, pytaskstats.metrics.names\n"
                  "from pytaskstats.{} import main\n"
                  "sys.exit(main(sys.argv[1:]))")


def test_without_prometheus_client_only_the_endpoint_is_missing() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_CLIENT.format("cli.main"),
                           "exporter"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "pip install 'pytaskstats[exporter]'" in done.stderr


def test_exporter_rejects_a_bad_group() -> None:
    done = subprocess.run([sys.executable, "-m", "pytaskstats", "exporter", "--group", "x=("],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "bad regex" in done.stderr


# ---------------------------------------------------------------- real kernel (root)


@pytest.mark.kernel
def test_live_sample_of_the_real_system(client: Client) -> None:
    agg = Aggregator()
    assert (os.getpid(), os.getpid()) in list_tasks()
    assert Sampler(agg, client.pids).sample()
    snap = agg.snapshot()
    mine = cap_depth(cgroup_path(os.getpid()) or "/", 3)
    assert snap.sample_ok and snap.live_tasks > 1 and mine in snap.cgroups
    assert snap.cgroups[mine][0][VALUE_FIELDS.index("ac_stime")] > 0


def _scrape(url: str) -> dict[str, float]:
    lines = fetch(url).splitlines()
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in lines if ln[:1] != "#")}


def _scrape_when(url: str, done: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """Scrape ``url`` until ``done`` says so (at most 20 s)."""
    def scrape() -> dict[str, float] | None:
        with contextlib.suppress(OSError):  # not serving yet
            got = _scrape(url)
            return got if done(got) else None
        return None
    return wait_until(scrape, f"a scrape of {url} that passes")


def _metrics_url(daemon: RunningDaemon) -> str:
    """The URL taskstatsd serves metrics at (from its status)."""
    with Client("daemon", socket_path=daemon.socket) as c:
        url: str = c.status()["metrics"]
    return url


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


@pytest.mark.kernel
def test_taskstatsd_says_when_the_metrics_extra_is_missing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_CLIENT.format("daemon.main"), "--foreground",
         "--metrics-listen", "0", "--config", os.devnull, "--state-dir", str(tmp_path),
         "--socket", str(tmp_path / "s.sock")],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "pip install 'pytaskstats[exporter]'" in done.stderr


@pytest.mark.kernel
def test_taskstatsd_serves_metrics_with_its_loss_and_journal_counters() -> None:
    daemon = RunningDaemon(None, "--metrics-listen", "127.0.0.1:0")  # a port of its own
    try:
        url = _metrics_url(daemon)
        got = _scrape_when(url, lambda m: "taskstats_up" in m)  # serving
        subprocess.run(["sh", "-c", "true & true & wait"], check=True)
        got = _scrape_when(url, lambda m: sum(
            v for k, v in m.items() if k.startswith("taskstats_task_exits_total")) >= 3)
        assert got["taskstats_exit_events_received_total"] >= 3
        assert got["taskstats_journal_suspended"] == 0
        assert 'taskstats_journal_records_dropped_total{reason="queue_full"}' in got
        assert 'taskstats_netlink_dropped_messages_total{listener="0"}' in got
        assert got["taskstats_up"] == 1 and got["taskstats_live_tasks"] > 1
        assert 'taskstats_implausible_delays_total{kind="blkio"}' in got  # its count too
    finally:
        daemon.close()
    _assert_released(_port(url))


@pytest.mark.kernel
def test_taskstatsd_metrics_endpoint_with_command_groups(tmp_path: Path) -> None:
    """taskstatsd --metrics-listen with --metrics-groups: an exit of a matching command
    is counted under its group, and the URL is in the daemon's status."""
    d = RunningDaemon(None, "--metrics-listen", "127.0.0.1:0",
                      "--metrics-groups", "marks=^groupmark,rest=.")
    try:
        url = _metrics_url(d)
        exe = tmp_path / "groupmark-x"
        exe.write_bytes(Path("/bin/true").read_bytes())
        exe.chmod(0o755)
        for _ in range(3):
            subprocess.run([str(exe)], check=True)
        series = 'taskstats_group_delays_total{group="marks",kind="cpu"}'
        wait_until(lambda: series in fetch(url), "the group's series", timeout=10)
    finally:
        d.close()


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must lint the metrics: no promtool (Debian's `prometheus`)")
        pytest.skip("no promtool (Debian's `prometheus` package)")
    assert path is not None
    return path


def _lint(promtool: str, url: str) -> None:
    """`promtool check metrics` accepts what ``url`` serves (rc 0, no complaint)."""
    body = fetch(url)
    done = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), body


@pytest.mark.kernel
def test_promtool_accepts_the_exporters_and_taskstatsds_metrics(tmp_path: Path) -> None:
    """The real /metrics of `taskstats exporter` and of taskstatsd, with exits and
    live samples in them, pass `promtool check metrics` (its naming rules)."""
    promtool = _promtool()
    exe = unique_command(tmp_path, "lint")
    err = tmp_path / "exporter.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "pytaskstats", "--backend", "kernel",
                                 "exporter", "--listen", "127.0.0.1:0", "--interval", "1",
                                 "--group", "lint=^lint"], stdout=subprocess.DEVNULL, stderr=f)
    daemon = RunningDaemon(None, "--metrics-listen", "127.0.0.1:0", "--metrics-groups",
                           "lint=^lint")
    try:
        def serving() -> re.Match[str] | None:
            assert proc.poll() is None, err.read_text()
            return re.search(r"serving (http://127\.0\.0\.1:\d+/metrics)", err.read_text())
        urls = [wait_until(serving, "the exporter to serve").group(1), _metrics_url(daemon)]
        subprocess.run([str(exe)], check=True)
        for url in urls:
            got = _scrape_when(url, lambda m: any(k.startswith("taskstats_task_exits_total")
                                                  for k in m) and m.get("taskstats_up") == 1)
            assert {"process_cpu_seconds_total", "process_resident_memory_bytes",
                    "process_open_fds", names.SCRAPE_DURATION.name} <= set(got), url
            _lint(promtool, url)
    finally:
        daemon.close()
        proc.terminate()
        proc.wait(timeout=30)


def test_a_listen_address_that_cannot_be_had_says_what_to_do() -> None:
    """'Address already in use' alone left the user guessing (newcomer review)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TaskstatsError, match=r"Address already in use: something else "
                           r"listens there: give another port \(0: any free one\)"):
            MetricsService(Aggregator(resolve=lambda tgid: None), f"127.0.0.1:{port}")
    with pytest.raises(TaskstatsError, match="not an address of this machine"):
        MetricsService(Aggregator(resolve=lambda tgid: None), "192.0.2.1:0")
