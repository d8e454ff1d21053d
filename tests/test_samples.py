"""Samples of live processes: the sampler's folds and exactly-once rule (pure), the
journal's samples table and history over exits and samples, and taskstatsd sampling
the real kernel (a worker through two intervals; the exactly-once identity)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from pytaskstats import Client, taskstats
from pytaskstats.backends import Answers
from pytaskstats.daemon import sampling as sampling_mod
from pytaskstats.daemon.journal import Store
from pytaskstats.daemon.journal_queries import Scope
from pytaskstats.daemon.journal_rows import JournalEntry, Tags
from pytaskstats.daemon.journal_schema import SAMPLE_COLUMNS
from pytaskstats.daemon.namespaces import NsTracker
from pytaskstats.daemon.sampler import ProcSample, Sampler, sample_values
from pytaskstats.daemon.sampling import Sampling
from pytaskstats.extproto import SAMPLE_DELTAS, SAMPLE_KEYS
from pytaskstats.records import Bulk, ExitRecord, TaskStats

from .conftest import (
    NOBODY_PYTHON,
    WAITS_FOR_EXITS,
    as_nobody,
    require_kernel,
    unique_command,
    wait_until,
)
from .daemon_util import RunningDaemon

pytestmark = WAITS_FOR_EXITS

S = 1_000_000_000


def _stats(pid: int, tgid: int, *, btime: int = 1000, comm: str = "worker",
           **values: int) -> TaskStats:
    base: dict[str, Any] = dict.fromkeys(SAMPLE_DELTAS, 0)
    base.update(values)
    return TaskStats(version=14, ac_pid=pid, ac_tgid=tgid, ac_btime=btime, ac_btime64=btime,
                     ac_comm=comm, ac_uid=1000, ac_gid=1000, ac_etime=1, hiwater_rss=10,
                     **base)


def _exit(pid: int, tgid: int, **values: Any) -> ExitRecord:
    return ExitRecord(task=_stats(pid, tgid, **values), pid=pid, tgid=tgid, cpu=0)


def _scan(sampler: Sampler, at: int, threads: dict[int, tuple[int, TaskStats]]
          ) -> list[ProcSample]:
    sampler.begin(at)
    for tid, (tgid, stats) in threads.items():
        sampler.feed(tid, tgid, stats)
    return sampler.finish()


# ------------------------------------------------------------------ the sampler


def test_the_first_scan_is_a_baseline_then_deltas_are_folded_per_process() -> None:
    sampler = Sampler()
    assert _scan(sampler, 10 * S, {1: (1, _stats(1, 1, ac_utime=500)),
                                   2: (1, _stats(2, 1, ac_utime=700))}) == []
    rows = _scan(sampler, 70 * S, {1: (1, _stats(1, 1, ac_utime=600, write_char=10)),
                                   2: (1, _stats(2, 1, ac_utime=900)),
                                   5: (5, _stats(5, 5))})  # idle: no row
    [row] = rows
    assert (row.tgid, row.time_ns, row.interval_ns, row.threads) == (1, 70 * S, 60 * S, 2)
    deltas = dict(zip(SAMPLE_DELTAS, row.deltas, strict=True))
    assert deltas["ac_utime"] == 300 and deltas["write_char"] == 10
    assert sampler.running(1, 1000) and sampler.running(1, 1001) and not sampler.running(1, 5)


def test_a_thread_born_in_the_interval_counts_since_birth_and_unmeasured_is_none() -> None:
    sampler = Sampler()
    _scan(sampler, 10 * S, {})
    new = _stats(3, 3, ac_utime=40)._replace(irq_count=None)
    [row] = _scan(sampler, 20 * S, {3: (3, new)})
    deltas = dict(zip(SAMPLE_DELTAS, row.deltas, strict=True))
    assert deltas["ac_utime"] == 40 and deltas["irq_count"] is None


def test_an_exit_takes_the_tail_once_and_a_zombie_read_after_it_is_ignored() -> None:
    sampler = Sampler()
    _scan(sampler, 10 * S, {4: (4, _stats(4, 4, ac_utime=100))})
    covered, tail = sampler.exit(_exit(4, 4, ac_utime=130, read_bytes=7), 15 * S)
    assert covered and tail is not None and tail.tail
    assert (tail.time_ns, tail.interval_ns) == (15 * S, 5 * S)
    assert dict(zip(SAMPLE_DELTAS, tail.deltas, strict=True))["ac_utime"] == 30
    assert _scan(sampler, 20 * S, {4: (4, _stats(4, 4, ac_utime=130))}) == []  # a zombie
    assert sampler.exit(_exit(4, 4, ac_utime=130), 21 * S) == (False, None)  # once


def test_an_exit_of_a_thread_never_sampled_is_not_covered_and_a_reused_tid_is_new() -> None:
    sampler = Sampler()
    _scan(sampler, 10 * S, {6: (6, _stats(6, 6, btime=500, ac_utime=100))})
    assert sampler.exit(_exit(7, 7, ac_utime=5), 11 * S) == (False, None)
    [row] = _scan(sampler, 20 * S, {6: (6, _stats(6, 6, btime=900, ac_utime=20))})
    assert dict(zip(SAMPLE_DELTAS, row.deltas, strict=True))["ac_utime"] == 20  # new thread
    # an exit of tid 6 begun at 1000 is another thread's than the one sampled (900)
    assert sampler.exit(_exit(6, 6, ac_utime=20), 21 * S) == (False, None)


def test_a_read_after_the_exit_snapshot_clamps_the_tail_and_a_late_zombie_is_ignored(
        ) -> None:
    """A scan may read an exiting task after the kernel took its exit record (a few
    more context switches): the tail is 0 there, and the thread counts once."""
    sampler = Sampler()
    _scan(sampler, 10 * S, {9: (9, _stats(9, 9, ac_utime=10, cpu_count=50))})
    covered, tail = sampler.exit(_exit(9, 9, ac_utime=40, cpu_count=48), 12 * S)
    assert covered and tail is not None
    deltas = dict(zip(SAMPLE_DELTAS, tail.deltas, strict=True))
    assert (deltas["ac_utime"], deltas["cpu_count"]) == (30, 0)
    # never sampled, its exit taken first: a zombie read later is not a new thread
    assert sampler.exit(_exit(11, 11, ac_utime=5), 13 * S) == (False, None)
    assert _scan(sampler, 20 * S, {11: (11, _stats(11, 11, ac_utime=5))}) == []


def test_an_idle_exit_is_covered_without_a_row() -> None:
    sampler = Sampler()
    _scan(sampler, 10 * S, {8: (8, _stats(8, 8, ac_utime=1))})
    assert sampler.exit(_exit(8, 8, ac_utime=1), 12 * S) == (True, None)


class FakeKernel:
    """query_many over fixed per-thread records (a thread missing: vanished)."""

    def __init__(self, records: dict[int, TaskStats]) -> None:
        self.records = records
        self.asked: list[list[int]] = []

    def query_many(self, scope: str, ids: Any, *, skip_denied: bool = False) -> Bulk:
        wanted = list(ids)
        self.asked.append(wanted)
        return Bulk({i: self.records[i] for i in wanted if i in self.records})


def _proc_tree(root: Path, threads: dict[int, list[int]]) -> None:
    for tgid, tids in threads.items():
        for tid in tids:
            (root / str(tgid) / "task" / str(tid)).mkdir(parents=True)
        (root / str(tgid) / "cgroup").write_text("0::/work.slice\n")


def test_a_scan_goes_in_slices_and_an_overrun_is_counted(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step reads one slice when its budget is spent: the loop goes on between;
    the rows of the busy process go out once the scan is read; a scan longer than
    its interval counts an overrun; interval 0 takes none."""
    monkeypatch.setattr(sampling_mod, "SLICE_TASKS", 2)
    _proc_tree(tmp_path, {100: [100, 101, 102], 200: [200]})
    records = {t: _stats(t, 100 if t < 200 else 200) for t in (100, 101, 102, 200)}
    kernel, now = FakeKernel(records), [0.0]
    rows: list[Sequence[Any]] = []
    answers = cast(Answers, kernel)
    sampling = Sampling(answers, 10.0, rows.extend, NsTracker(str(tmp_path)),
                        proc=str(tmp_path), clock=lambda: now[0], wall_ns=lambda: 7 * S)
    while sampling.counters["samples_taken"] == 0:
        sampling.step(budget_s=0)
    assert max(map(len, kernel.asked)) == 2 and len(kernel.asked) >= 2  # in slices
    assert rows == [] and sampling.due_in() == 10.0  # the baseline
    records[101] = records[101]._replace(ac_utime=5000, read_bytes=4096)
    now[0] = 10.0
    while sampling.counters["samples_taken"] == 1:
        sampling.step(budget_s=0)
        now[0] += 4.0  # each slice takes 4 s: the scan outlives its interval
    [row] = rows
    values = dict(zip(SAMPLE_COLUMNS, row, strict=True))
    assert (values["tgid"], values["threads"], values["ac_utime"]) == (100, 3, 5000)
    assert values["cgroup"] == "/work.slice" and values["owner_sees"] is None  # no status
    assert sampling.counters["sample_overruns"] == 1 and sampling.due_in() == 0.0
    off = Sampling(answers, 0, rows.extend, NsTracker(str(tmp_path)), proc=str(tmp_path))
    assert off.due_in() == float("inf") and not off.exit(_exit(100, 100), S, None, Tags())


# ------------------------------------------------------------------ the journal


def _sample(tgid: int, at: int, *, comm: str = "db", tail: bool = False,
            **values: int) -> tuple[Any, ...]:
    deltas = tuple(values.get(name, 0) for name in SAMPLE_DELTAS)
    row = ProcSample(at, 60 * S, tgid, comm, 1000, 1000, 1000, 2, tail, deltas, 55)
    return sample_values(row, "/svc", (True, "", None), tgid)


def test_samples_and_exits_count_every_task_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "j.db")
    sampled = JournalEntry(_exit(20, 20, ac_utime=1000), 100 * S, "/svc", b"",
                           Tags(True, "", None, True))
    plain = JournalEntry(_exit(21, 21, ac_utime=7), 110 * S, "/svc", b"", Tags(True, "", None))
    store.insert([dataclasses.replace(e, raw=taskstats.encode_exit(0x17, e.record)).item
                  for e in (sampled, plain)])
    assert store.insert_samples([_sample(20, 60 * S, ac_utime=900, write_char=5),
                                 _sample(20, 100 * S, tail=True, ac_utime=100)]) == 2
    q = store.queries
    assert q.totals(kind="exit")["ac_utime"] == 1007
    assert q.totals(kind="sample")["ac_utime"] == 1000
    both = q.totals()
    assert (both["ac_utime"], both["exits"], both["samples"]) == (1007, 2, 2)
    assert both["write_char"] == 5 and both["hiwater_rss"] is not None
    [group] = q.query(group_by="cgroup")
    assert group["ac_utime"] == 1007
    rows = q.query()
    assert [(r["kind"], r["time_ns"] // S) for r in rows] == [
        ("sample", 60), ("exit", 100), ("sample", 100), ("exit", 110)]
    assert set(rows[0]) == set(SAMPLE_KEYS) and not rows[0]["running"]
    assert rows[1]["sampled"] and not rows[3]["sampled"]
    assert [r["kind"] for r in q.query(kind="sample", sort="-ac_utime")] == ["sample"] * 2
    assert q.query(kind="sample", sort="-ac_utime")[0]["ac_utime"] == 900
    [bucket] = q.aggregate(bucket_s=3600, fields=["ac_utime"])
    assert (bucket["ac_utime"], bucket["samples"]) == (1007, 2)
    assert q.at_window(30 * S) == (1, 60 * S + 1)
    # before the first interval, nothing holds it: the minute around it, not (0, 60 s]
    assert q.at_window(-30 * S) == (-60 * S, 0)
    assert [r["kind"] for r in q.query(at_ns=30 * S)] == ["sample"]
    # "scan": the samples of scans only (what top --replay steps by), not exit tails
    assert [r["time_ns"] // S for r in q.query(kind="scan")] == [60]
    assert [r["time_ns"] // S for r in q.query(kind="scan", sort="-time_ns", limit=1)] == [60]
    with pytest.raises(ValueError, match="kind"):
        q.query(kind="bogus")
    with pytest.raises(ValueError, match="kind"):
        q.totals(kind="scan")  # sums count tails too: no "scan" there
    store.close()


def test_samples_keep_to_the_reader_s_scope_and_namespace(tmp_path: Path) -> None:
    """A restricted reader gets the sample rows of its uid whose owner may see them;
    a namespaced one those of its namespace, with the tgid as it knows it."""
    store = Store(tmp_path / "j.db")
    mine = ProcSample(S, S, 4000, "app", 1000, 1000, 1, 1, False, (1,) * len(SAMPLE_DELTAS),
                      None)
    store.insert_samples([
        sample_values(mine, None, (True, "900", "3/3/"), 4000),
        sample_values(mine._replace(tgid=4001), None, (False, "", None), 4001),  # hidden
        sample_values(mine._replace(tgid=4002), None, (None, None, None), 4002),  # unknown
    ])
    q = store.queries
    assert [r["tgid"] for r in q.query(kind="sample")] == [4000, 4001, 4002]
    assert [r["tgid"] for r in q.query(kind="sample", scope=Scope(1000, 1000))] == [4000]
    boxed = q.query(kind="sample", scope=Scope(None, None, "900", 1))
    assert [r["tgid"] for r in boxed] == [3]
    assert [r["tgid"] for r in q.query(scope=Scope(None, None, "900", 1), pid=3)] == [3]
    store.close()


def test_retention_applies_to_samples(tmp_path: Path) -> None:
    now = [1000 * S]
    store = Store(tmp_path / "j.db", retention_s=100, wall_ns=lambda: now[0],
                  check_interval_s=1, clock=lambda: now[0] / S)
    store.insert_samples([_sample(1, 800 * S), _sample(1, 950 * S)])
    now[0] += 5 * S
    assert store.maintain()
    assert [r["time_ns"] for r in store.queries.query(kind="sample")] == [950 * S]
    assert store.counters()["samples_retired"] == 1
    store.close()


def test_sample_columns_are_integers_text_or_null() -> None:
    values = _sample(3, S)
    assert len(values) == len(SAMPLE_COLUMNS)
    assert all(v is None or isinstance(v, int | str) for v in values)


# ------------------------------------------------------------------ the real kernel

WORKER = """
import os, sys, threading, time
end = time.monotonic() + float(sys.argv[1])
zero = os.open("/dev/zero", os.O_RDONLY)
null = os.open("/dev/null", os.O_WRONLY)
def spin(seconds):
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        pass
def side():
    while time.monotonic() < end:
        spin(0.02)
        os.read(zero, 4096)
        time.sleep(0.1)
t = threading.Thread(target=side)
t.start()
n = 0
while time.monotonic() < end:
    spin(0.05)
    os.write(null, b"x" * 65536)
    os.read(zero, 65536)
    n += 1
    if n % 4 == 0:  # a short-lived child, same comm: born and gone between samples
        pid = os.fork()
        if pid == 0:
            spin(0.01)
            os.write(null, b"y" * 1000)
            os._exit(0)
        os.waitpid(pid, 0)
    time.sleep(0.15)
t.join()
sys.stdout.write(str(n))
"""
EXACT = ("ac_utime", "ac_stime", "write_char", "read_char", "write_syscalls", "read_syscalls")
# the kernel takes a task's exit record before its last context switches: a scan that
# reads the exiting task in between sees a few more (the tail is then 0, not negative)
SCHEDULING = ("cpu_count", "cpu_delay_total", "nvcsw", "nivcsw", "ac_minflt")
SUMMED = (*EXACT, *SCHEDULING)
TICK_US = 10_000  # a clock tick (CONFIG_HZ >= 100), in us


@pytest.fixture(scope="module")
def sampling_daemon() -> Any:
    require_kernel()
    d = RunningDaemon(None, "--sample-interval-s", "1")
    try:
        yield d
    finally:
        d.close()


@pytest.mark.kernel
def test_a_worker_through_two_intervals_is_sampled_exactly_once(
        sampling_daemon: RunningDaemon, tmp_path: Path) -> None:
    """A worker (two threads, with known CPU and IO, and short-lived children of its
    comm) lives through >= 2 sample intervals: history finds its sample rows with
    deltas, and over its life sum(samples) + sum(exits not sampled) equals the
    kernel's own totals (the sum of every exit record) within a tick; scheduling
    counters may be a little above (see SCHEDULING)."""
    exe = unique_command(tmp_path, "smpl", os.path.realpath(sys.executable))
    with Client("daemon", socket_path=sampling_daemon.socket) as client:
        started = time.time_ns()
        worker = subprocess.Popen([str(exe), "-c", WORKER, "3.6"], stdout=subprocess.PIPE)
        seen = wait_until(lambda: [r for r in client.history(comm=exe.name, kind="sample")
                                   if r["tgid"] == worker.pid and r["running"]],
                          "a sample row of the running worker")
        assert seen[0]["comm"] == exe.name and seen[0]["btime"]
        out, _ = worker.communicate(timeout=30)
        writes = int(out) * 65536
        client.status(flush=True)

        def exits_in() -> list[dict[str, Any]]:
            rows = list(client.history(comm=exe.name, kind="exit", since_ns=started))
            children = int(out) // 4
            return rows if len(rows) >= 2 + children else []

        exits = wait_until(exits_in, "the worker's and its children's exits")
        kernel = {f: sum(r[f] or 0 for r in exits) for f in SUMMED}
        samples = list(client.history(comm=exe.name, kind="sample", since_ns=started))
        scans = [r for r in samples if r["tgid"] == worker.pid and r["interval_ns"] > 0
                 and r["threads"] == 2]
        assert len(scans) >= 2, samples
        assert all(r["write_char"] > 0 and r["ac_utime"] + r["ac_stime"] > 0 for r in scans)
        assert sum(r["write_char"] for r in samples if r["tgid"] == worker.pid) >= writes
        assert any(r["sampled"] for r in exits) and not all(r["sampled"] for r in exits)
        both = client.history(comm=exe.name, since_ns=started, totals=True)[0]
        if os.environ.get("SAMPLES_DEBUG"):
            Path(os.environ["SAMPLES_DEBUG"]).write_text(json.dumps(
                {"exits": exits, "samples": samples, "both": both}, default=str))
        for field in EXACT:
            slack = TICK_US * 2 if field in ("ac_utime", "ac_stime") else 0
            assert abs(both[field] - kernel[field]) <= slack, (field, both[field], kernel)
        for field in SCHEDULING:  # never less; a twice-counted thread would be 2x
            assert kernel[field] <= both[field] <= kernel[field] * 1.1 + 100, (field, both)
        assert both["write_char"] >= writes
        at = client.history(comm=exe.name, at_ns=scans[0]["time_ns"] - 1, kind="sample")
        assert any(r["tgid"] == worker.pid for r in at)
        _cli_shows_samples(sampling_daemon, exe.name, worker.pid, scans[0]["time_ns"])
        wait_until(lambda: not any(r["running"] for r in client.history(
            comm=exe.name, kind="sample", since_ns=started)), "the worker no longer running")
        status = client.status()["counters"]
        assert status["samples_taken"] >= 3 and status["sample_rows"] >= 2


def _cli_shows_samples(daemon: RunningDaemon, comm: str, tgid: int, scan_ns: int) -> None:
    """`taskstats history --kind sample` and `--at` show the worker's sample rows."""
    cli = [sys.executable, "-m", "pytaskstats", "--socket", daemon.socket, "history",
           "--comm", comm]
    text = subprocess.run([*cli, "--kind", "sample"], capture_output=True, text=True,
                          check=True).stdout
    assert f"tgid {tgid} {comm}" in text and "iowait" in text
    at = subprocess.run([*cli, "--at", f"{(scan_ns - 1000) / 1e9:.6f}", "--json"],
                        capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in at.splitlines()]
    assert any(r["kind"] == "sample" and r["tgid"] == tgid for r in rows)
    assert all(scan_ns - 2 * 10**9 < r["time_ns"] <= scan_ns for r in rows)  # its interval
    clash = subprocess.run([*cli, "--at", "1h", "--since", "2h"], capture_output=True,
                           text=True, check=False)
    assert clash.returncode == 2 and "--at" in clash.stderr


SPIN = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\n" \
       "while time.monotonic() < end:\n    pass\n"


@pytest.mark.kernel
def test_a_user_sees_the_samples_of_its_own_processes_only(
        sampling_daemon: RunningDaemon, nobody_env: dict[str, str]) -> None:
    """The access policy applies to samples as to exits: nobody's history holds the
    sample rows of its own busy process, not those of root's."""
    nobody = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               NOBODY_PYTHON, "-c", SPIN, "2.5"], env=nobody_env, cwd="/")
    root = subprocess.Popen([sys.executable, "-c", SPIN, "2.5"])
    assert nobody.wait(timeout=30) == 0 and root.wait(timeout=30) == 0
    with Client("daemon", socket_path=sampling_daemon.socket) as client:
        wait_until(lambda: {nobody.pid, root.pid} <= {
            r["tgid"] for r in client.history(kind="sample", pid=nobody.pid)}
            | {r["tgid"] for r in client.history(kind="sample", pid=root.pid)},
            "sample rows of both spinners")
    env = {**nobody_env, "TASKSTATS_SOCKET": sampling_daemon.socket}
    out = as_nobody(env, "-m", "pytaskstats", "history", "--kind", "sample", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["ac_uid"] for r in rows} == {65534}
    tgids = {r["tgid"] for r in rows}
    assert nobody.pid in tgids and root.pid not in tgids


def test_a_time_no_interval_holds_is_not_answered_with_another(tmp_path: Path) -> None:
    """`history --at 1h` on a journal begun 10 minutes ago showed its first interval's
    rows as if they had run then; before the first interval, or in a gap (daemon
    down), --at gets the exits around it and no sample."""
    store = Store(tmp_path / "j.db")
    assert store.insert_samples([_sample(20, 600 * S), _sample(20, 660 * S),
                                 _sample(20, 1000 * S)]) == 3
    q = store.queries
    assert q.at_window(630 * S) == (600 * S + 1, 660 * S + 1)  # held: unchanged
    assert q.at_window(100 * S) == (70 * S, 130 * S)  # before the journal
    assert q.at_window(800 * S) == (770 * S, 830 * S)  # the gap 660 s .. 940 s
    assert q.query(at_ns=100 * S) == [] and q.query(at_ns=800 * S) == []
    assert [r["time_ns"] for r in q.query(at_ns=960 * S)] == [1000 * S]
    store.close()
