"""The exit journal's store: columns, queries, loss accounting, disk-low
hysteresis, restarts and retention; the writer's commit rule.  Synchronous: clocks
and statvfs are injected; no threads, no sleeps."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import pytaskstats
from pytaskstats import taskstats
from pytaskstats.daemon.journal import Store, commit_due
from pytaskstats.daemon.journal_queries import (
    AGGREGATES,
    TAG_COLUMNS,
    Budget,
    Gap,
    QueryTooLong,
    Scope,
)
from pytaskstats.daemon.journal_rows import JournalEntry, Tags, decode_raw
from pytaskstats.daemon.journal_schema import MIGRATIONS, JournalError, apply
from pytaskstats.daemon.journal_writer import Pending
from pytaskstats.fields import FIELDS, Timespec
from pytaskstats.records import AGROUP, ExitRecord
from tests.conftest import FIXTURES, fixture_bytes

FAMILY = 27
CONTEXT = ("time_ns", "cpu", "pid", "tgid", "ended_process", "cgroup")
V17 = "exit_v17_dual.bin"
EXIT_FIXTURES = ["exit_v8_tgid_version0.bin", "exit_v16_dual.bin", V17]
# query replies made exit messages (port id 0): the one-nest shape the writer inserts
# without decoding, in every golden layout (v15 interleaved, padded, v17 timespecs)
SINGLE_EXITS = [f"reply_v{v}.bin" for v in ("08", "09", "10", "13", "14", "15", "16",
                                             "16_padded", "17")]


class Clock:
    """An injected clock: seconds (monotonic) or ns (wall), moved by the test."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Wall:
    def __init__(self, ns: int = 1_000_000_000_000) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


class FsStats(NamedTuple):
    f_bavail: int
    f_blocks: int


class Disk:
    """A fake statvfs reporting ``free_pct`` percent available."""

    def __init__(self, free_pct: float = 50.0) -> None:
        self.free_pct = free_pct
        self.paths: list[str] = []

    def __call__(self, path: str) -> FsStats:
        self.paths.append(path)
        return FsStats(int(self.free_pct * 100), 10_000)


def exit_bytes(name: str) -> bytes:
    """A golden exit message; a reply fixture gets port id 0, which makes it one."""
    raw = bytearray(fixture_bytes(name))
    if name.startswith("reply_"):
        raw[12:16] = bytes(4)
    return bytes(raw)


def decoded(name: str = V17) -> ExitRecord:
    event = taskstats.decode(exit_bytes(name), FAMILY)[0]
    assert isinstance(event, ExitRecord)
    return event


def entry(pid: int = 4243, *, comm: str = "fixture", uid: int = 1000, time_ns: int = 10**9,
          cgroup: str | None = "/system.slice/a.service", name: str = V17,
          **fields: Any) -> JournalEntry:
    """An exit of ``pid`` (its own process), its raw bytes encoded to match."""
    base = decoded(name)
    task = base.task._replace(ac_pid=pid, ac_tgid=pid, ac_comm=comm, ac_uid=uid, **fields)
    group = None if base.group is None else base.group._replace()
    record = dataclasses.replace(base, task=task, group=group, pid=pid, tgid=pid)
    return JournalEntry(record, time_ns, cgroup, taskstats.encode_exit(FAMILY, record))


Factory = Callable[..., Store]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Factory]:
    """Open stores (default: a file in tmp_path, frozen clocks); close them all after."""
    opened: list[Store] = []

    def factory(path: str | Path | None = None, **kwargs: Any) -> Store:
        kwargs.setdefault("clock", Clock())
        kwargs.setdefault("wall_ns", Wall())
        kwargs.setdefault("statvfs", Disk())
        journal = Store(tmp_path / "journal.db" if path is None else path, **kwargs)
        opened.append(journal)
        return journal

    yield factory
    for journal in opened:
        journal.close()


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both stores: the in-memory twin and a WAL file."""
    return ":memory:" if request.param == "memory" else str(tmp_path / "journal.db")


def integrity(path: str | Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]


def committed(journal: Store) -> int:
    """Rows journaled."""
    count: int = journal.queries.totals()["exits"]
    return count


# ---------------------------------------------------------------- commit rules

def test_commit_rule_fires_on_size_or_age_and_not_before() -> None:
    assert not commit_due(9, 0.0, 0.1, 10, 0.25)
    assert commit_due(10, 0.0, 0.1, 10, 0.25)
    assert not commit_due(3, 100.0, 100.249, 10, 0.25)
    assert commit_due(3, 100.0, 100.25, 10, 0.25)
    # aw-core compared the times the wrong way round: old data must commit, young not
    assert commit_due(1, 0.0, 1_000.0, 10, 0.25)
    assert not commit_due(1, 1_000.0, 1_000.0, 10, 0.25)
    assert not commit_due(0, 0.0, 1_000.0, 10, 0.25)


def test_batch_size_commits_nothing_before_and_everything_at(make: Factory) -> None:
    pending, journal = Pending(batch_size=10, max_delay_s=0.25, queue_size=1000), make()
    for pid in range(9):
        assert pending.add([entry(pid).item], 0.0) == 0
    assert not pending.due(0.0) and len(pending) == 9
    pending.add([entry(9).item], 0.0)
    assert pending.due(0.0)
    assert journal.insert(pending.take()) == 10
    assert committed(journal) == 10 and journal.counters()["journaled"] == 10
    assert len(pending) == 0 and pending.due_in(0.0) == float("inf")


def test_max_delay_commits_once_the_oldest_is_old_enough() -> None:
    pending = Pending(batch_size=100, max_delay_s=0.25, queue_size=1000)
    pending.add([entry(1).item], 100.0)
    pending.add([entry(2).item], 100.2)  # a younger record does not restart the age
    assert not pending.due(100.249)
    assert pending.due_in(100.2) == pytest.approx(0.05)
    assert pending.due(100.25) and pending.due_in(100.25) == 0
    assert len(pending.take()) == 2
    pending.add([entry(3).item], 100.3)  # the next batch ages from its own first record
    assert not pending.due(100.4)
    assert pending.due(1_000.0)


def test_insert_commits_at_once(make: Factory, store: str) -> None:
    journal = make(store)
    assert journal.insert([entry(1).item]) == 1
    assert committed(journal) == 1


# ---------------------------------------------------------------- columns and raw bytes

def expected_columns(record: ExitRecord) -> dict[str, Any]:
    task = record.task
    out: dict[str, Any] = {}
    for f in FIELDS:
        value = task[f.position]
        out[f.name] = value.to_ns() if isinstance(value, Timespec) else value
    return out


@pytest.mark.parametrize("name", EXIT_FIXTURES + SINGLE_EXITS)
def test_every_column_round_trips(make: Factory, store: str, name: str) -> None:
    record = dataclasses.replace(decoded(name), cpu=3)
    raw = exit_bytes(name)
    # dual and padded messages take the decoding path, the rest the struct-order INSERT
    assert (taskstats.single_exit(raw) is None) == (name in EXIT_FIXTURES or "padded" in name)
    journal = make(store)
    journal.insert([JournalEntry(record, 123_456_789, "/a/b", raw).item])
    journal.maintain()
    [row] = journal.queries.query(raw=True)
    assert set(row) == {*CONTEXT, *(f.name for f in FIELDS), "raw", "kind", "sampled"}
    assert {k: row[k] for k in CONTEXT} == {
        "time_ns": 123_456_789, "cpu": 3, "pid": record.pid, "tgid": record.tgid,
        "ended_process": record.ended_process, "cgroup": "/a/b"}
    assert {f.name: row[f.name] for f in FIELDS} == expected_columns(record)
    assert row["raw"] == raw
    assert decode_raw(row["raw"]) == dataclasses.replace(record, cpu=None)


def test_absent_values_are_sql_null(make: Factory, tmp_path: Path) -> None:
    base = decoded("exit_v8_tgid_version0.bin")
    record = dataclasses.replace(base, group=None, tgid=None)
    journal = make()
    journal.insert([JournalEntry(record, 1, None, taskstats.encode_exit(FAMILY, record)).item])
    journal.maintain()
    [row] = journal.queries.query()
    assert row["cpu"] is row["tgid"] is row["cgroup"] is row["ended_process"] is None
    absent = [f.name for f in FIELDS if f.version > 8]
    assert absent and all(row[name] is None for name in absent)
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        types = conn.execute(f"SELECT {', '.join(['cpu', 'cgroup', *absent])} FROM exits")
        assert set(types.fetchone()) == {None}


def test_ended_process_false_and_huge_u64(make: Factory, store: str) -> None:
    huge = 2**64 - 1
    record = dataclasses.replace(entry(5, ac_flag=0, cpu_count=huge).record, group=None)
    journal = make(store)
    journal.insert([JournalEntry(record, 1, None, taskstats.encode_exit(FAMILY, record)).item])
    journal.maintain()
    [row] = journal.queries.query()
    assert row["ended_process"] is False
    assert row["cpu_count"] == huge
    assert journal.counters()["journaled"] == 1


@pytest.mark.parametrize("flag", [0, AGROUP, 0xFF])
def test_single_exit_rows_take_ended_process_from_agroup(make: Factory, flag: int) -> None:
    record = dataclasses.replace(entry(5, ac_flag=flag).record, group=None)
    raw = taskstats.encode_exit(FAMILY, record)
    assert taskstats.single_exit(raw) == (5, 36)
    journal = make()
    journal.insert([JournalEntry(record, 1, None, raw).item])
    journal.maintain()
    [row] = journal.queries.query()
    assert row["ended_process"] is bool(flag & AGROUP) is record.ended_process


def test_bytes_without_an_exit_record_are_counted_not_journaled(make: Factory) -> None:
    good = entry(7)
    journal = make()
    journal.insert([good.item])
    journal.insert([dataclasses.replace(good, raw=fixture_bytes("cgroupstats.bin")).item])
    journal.insert([dataclasses.replace(good, raw=exit_bytes(V17)[:40]).item])
    journal.maintain()
    assert [row["pid"] for row in journal.queries.query()] == [7]
    assert journal.counters()["dropped_write_error"] == 2
    assert journal.queries.accounted() == 3


def test_entry_checks_its_types() -> None:
    with pytest.raises(TypeError):
        JournalEntry(decoded(), 1, None, bytearray(b"x"))  # type: ignore[arg-type]


# ---------------------------------------------------------------- queries

@pytest.fixture
def sample(make: Factory, store: str) -> Store:
    journal = make(store)
    rows = [(1, "bash", 0, "/s/x"), (2, "make", 1000, "/s/y"), (3, "make", 1000, "/t"),
            (4, "cc1", 1000, "/sx"), (5, "bash", 0, None)]
    for pid, comm, uid, cgroup in rows:
        journal.insert([(entry(pid, comm=comm, uid=uid, cgroup=cgroup, time_ns=pid * 100,
                             ac_utime=pid * 10, hiwater_rss=pid)).item])
    journal.maintain()
    return journal


def pids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["pid"] for row in rows]


def test_filters(sample: Store) -> None:
    assert pids(sample.queries.query()) == [1, 2, 3, 4, 5]
    assert pids(sample.queries.query(comm="make")) == [2, 3]
    assert pids(sample.queries.query(uid=0)) == [1, 5]
    assert pids(sample.queries.query(pid=4)) == [4]
    assert pids(sample.queries.query(tgid=4)) == [4]
    assert pids(sample.queries.query(since_ns=200, until_ns=400)) == [2, 3]
    assert pids(sample.queries.query(cgroup="/s")) == [1, 2]  # the cgroup and its descendants
    assert pids(sample.queries.query(cgroup="/s/x/")) == [1]
    assert pids(sample.queries.query(cgroup="/")) == [1, 2, 3, 4]
    assert pids(sample.queries.query(comm="make", uid=0)) == []
    assert sample.queries.query(comm="x'; DROP TABLE exits; --") == []
    assert len(sample.queries.query()) == 5


def test_sort_and_limit(sample: Store) -> None:
    assert pids(sample.queries.query(sort="-pid")) == [5, 4, 3, 2, 1]
    assert pids(sample.queries.query(sort="ac_comm")) == [1, 5, 4, 2, 3]
    assert pids(sample.queries.query(sort="-ac_utime", limit=2)) == [5, 4]
    assert sample.queries.query(limit=0) == []


@pytest.mark.parametrize("bad", ["bogus", "-", "pid DESC", "pid; DROP TABLE exits", "raw"])
def test_rejected_sort_names_the_allowed(sample: Store, bad: str) -> None:
    with pytest.raises(ValueError, match=r"choose one of .*ac_utime"):
        sample.queries.query(sort=bad)


def test_rejected_group_and_limit(sample: Store) -> None:
    with pytest.raises(ValueError, match="comm, uid, cgroup"):
        sample.queries.query(group_by="pid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="choose one of ac_comm, exits"):
        sample.queries.query(group_by="comm", sort="pid")
    with pytest.raises(ValueError, match="non-negative"):
        sample.queries.query(limit=-1)
    with pytest.raises(ValueError):
        sample.queries.query(group_by="comm", raw=True)


def test_group_by_sums_counts_and_peaks(sample: Store) -> None:
    groups = sample.queries.query(group_by="comm", sort="-exits")
    assert [(g["ac_comm"], g["exits"]) for g in groups] == [
        ("bash", 2), ("make", 2), ("cc1", 1)]
    by_comm = {g["ac_comm"]: g for g in groups}
    assert by_comm["make"]["ac_utime"] == 50
    assert by_comm["make"]["hiwater_rss"] == 3
    assert set(by_comm["make"]) == {"ac_comm", "exits", "samples", "implausible", *AGGREGATES}
    by_uid = sample.queries.query(group_by="uid", sort="ac_uid")
    assert [(g["ac_uid"], g["exits"]) for g in by_uid] == [(0, 2), (1000, 3)]
    by_cgroup = sample.queries.query(group_by="cgroup", cgroup="/s", limit=1)
    assert [(g["cgroup"], g["exits"]) for g in by_cgroup] == [("/s/x", 1)]


def test_aggregates_follow_units() -> None:
    assert AGGREGATES["cpu_delay_total"] == "SUM(cpu_delay_total)"
    assert AGGREGATES["read_bytes"] == "SUM(read_bytes)"
    assert AGGREGATES["hiwater_vm"] == "MAX(hiwater_vm)"
    assert AGGREGATES["irq_delay_max"] == "MAX(irq_delay_max)"
    assert AGGREGATES["cpu_delay_min"] == "MIN(NULLIF(cpu_delay_min, 0))"
    for name in ("version", "ac_uid", "ac_flag", "ac_btime", "ac_tgetime", "ac_comm",
                 "cpu_delay_max_ts", "ac_exe_dev"):
        assert name not in AGGREGATES


def test_totals(sample: Store) -> None:
    totals = sample.queries.totals(comm="bash")
    assert totals["exits"] == 2
    assert totals["ac_utime"] == 60
    assert totals["hiwater_rss"] == 5
    assert sample.queries.totals(comm="nobody")["exits"] == 0


def test_sums_beyond_int64_fall_back_to_total(make: Factory, store: str) -> None:
    journal = make(store)
    for pid in (1, 2):
        journal.insert([entry(pid, cpu_count=2**62 + 2**40).item])
    journal.maintain()
    assert journal.queries.totals()["cpu_count"] == 2**63 + 2**41


# ---------------------------------------------------------------- loss accounting

def test_queue_full_drops_are_counted(make: Factory) -> None:
    """The writer holds at most queue_size; what it refuses it counts in the store."""
    pending, journal = Pending(batch_size=1000, max_delay_s=0.25, queue_size=5), make()
    assert pending.add([entry(pid).item for pid in range(5)], 0.0) == 0
    refused = pending.add([entry(99).item], 0.0)
    assert refused == 1
    journal.note("dropped_queue_full", refused)
    assert journal.counters()["dropped_queue_full"] == 1
    journal.insert(pending.take())
    assert pending.add([entry(6).item], 0.0) == 0
    journal.insert(pending.take())
    assert journal.counters()["journaled"] == 6
    assert journal.queries.accounted() == 7


def test_disk_low_suspends_and_resumes_with_hysteresis(make: Factory, tmp_path: Path) -> None:
    clock, wall, disk = Clock(), Wall(5_000), Disk(50.0)
    journal = make(clock=clock, wall_ns=wall, statvfs=disk, check_interval_s=5.0)
    assert journal.insert([entry(1).item])
    journal.maintain()

    def tick(free_pct: float, at_ns: int) -> None:
        disk.free_pct, wall.ns = free_pct, at_ns
        clock.now += 5.0
        journal.maintain()

    tick(1.5, 6_000)
    assert journal.suspended
    assert not journal.insert([entry(2).item])
    tick(3.9, 7_000)  # above the low mark, under the resume mark: still suspended
    assert journal.suspended
    assert not journal.insert([entry(3).item])
    tick(4.0, 8_000)
    assert not journal.suspended
    assert journal.insert([entry(4).item])
    journal.maintain()
    counts = journal.counters()
    assert (counts["journaled"], counts["dropped_disk_low"], counts["suspensions"]) == (2, 2, 1)
    assert journal.queries.gaps() == [Gap(6_000, 8_000, "disk_low")]
    assert journal.queries.accounted() == 4
    assert disk.paths[-1] == str(tmp_path)


def test_starts_suspended_on_a_low_disk(make: Factory) -> None:
    journal = make(statvfs=Disk(0.5))
    assert journal.suspended
    assert not journal.insert([entry(1).item])
    assert journal.counters()["suspensions"] == 1


def test_disk_full_error_drops_the_batch_and_suspends(make: Factory, tmp_path: Path) -> None:
    clock = Clock()
    journal = make(clock=clock)
    pages: int = journal._conn.execute("PRAGMA page_count").fetchone()[0]
    journal._conn.execute(f"PRAGMA max_page_count = {pages}")
    journal.insert([entry(pid).item for pid in range(50)])  # SQLITE_FULL: counted, not retried
    assert journal.suspended
    assert journal.counters()["dropped_disk_low"] == 50
    journal._conn.execute("PRAGMA max_page_count = 1073741823")
    clock.now += 5.0
    journal.maintain()  # the next check finds free space (the fake disk says 50 %)
    assert not journal.suspended
    assert journal.insert([entry(99).item])
    journal.maintain()
    assert journal.counters()["journaled"] == 1
    assert [gap.reason for gap in journal.queries.gaps()] == ["disk_low"]
    assert integrity(tmp_path / "journal.db") == ["ok"]


def test_other_write_errors_are_counted_not_raised(make: Factory) -> None:
    journal = make(":memory:")
    journal._conn.execute("PRAGMA query_only = ON")
    journal.insert([entry(1).item])
    journal.maintain()
    assert journal.counters()["dropped_write_error"] == 1
    assert not journal.suspended
    journal._conn.execute("PRAGMA query_only = OFF")
    journal.insert([entry(2).item])
    journal.maintain()
    assert journal.counters()["journaled"] == 1
    assert journal.queries.accounted() == 2


def test_accounted_equals_received_plus_noted_losses(make: Factory) -> None:
    clock, disk = Clock(), Disk(50.0)
    journal = make(":memory:", clock=clock, statvfs=disk)
    pending = Pending(batch_size=1000, max_delay_s=0.25, queue_size=10)
    received = 0
    for pid in range(15):  # 10 held, 5 refused: queue full
        journal.note("dropped_queue_full", pending.add([entry(pid).item], clock.now))
        received += 1
    journal.insert(pending.take())
    journal._conn.execute("PRAGMA query_only = ON")
    journal.insert([entry(20).item])
    received += 1
    journal.maintain()  # a write error
    journal._conn.execute("PRAGMA query_only = OFF")
    journal.note_lost("overrun", 7)
    journal.note_lost("malformed")
    counts = journal.counters()
    assert (counts["journaled"], counts["dropped_queue_full"],
            counts["dropped_write_error"]) == (10, 5, 1)
    assert journal.queries.lost_total() == 8
    assert journal.queries.accounted() == received + 8
    with pytest.raises(ValueError):
        journal.note_lost("Bad Reason", 1)


# ---------------------------------------------------------------- restart

def test_restart_keeps_counters_and_records_a_stopped_gap(make: Factory,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    first = make(path, wall_ns=Wall(2_000))
    first.insert([entry(1).item])
    first.insert([entry(2).item])
    first.note_lost("overrun", 3)
    first.close()
    second = make(path, wall_ns=Wall(5_000))
    assert second.counters()["journaled"] == 2
    assert second.counters()["lost_overrun"] == 3
    assert second.queries.gaps() == [Gap(2_000, 5_000, "stopped")]
    second.insert([entry(3).item])
    second.close()
    third = make(path, wall_ns=Wall(9_000))
    assert third.counters()["journaled"] == 3
    assert [gap.reason for gap in third.queries.gaps()] == ["stopped", "stopped"]
    assert len(third.queries.query()) == 3
    third.close()
    assert integrity(path) == ["ok"]


CRASH = """
import os, sys
from pytaskstats import taskstats
from pytaskstats.daemon.journal import Store
from pytaskstats.daemon.journal_rows import JournalEntry
raw = open(sys.argv[2], "rb").read()
journal = Store(sys.argv[1], wall_ns=lambda: 7_000, clock=lambda: 0.0)
journal.insert([JournalEntry(taskstats.decode(raw, 27)[0], 7_000, None, raw).item])
os._exit(0)  # a crash: no close()
"""


def test_unclean_stop_leaves_a_daemon_down_gap(make: Factory, tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    env = {**os.environ, "PYTHONPATH": str(Path(pytaskstats.__file__).parent.parent)}
    subprocess.run([sys.executable, "-c", CRASH, str(path), str(FIXTURES / V17)],
                   check=True, timeout=60, env=env)
    journal = make(path, wall_ns=Wall(9_000))
    assert journal.queries.gaps() == [Gap(7_000, 9_000, "daemon_down")]
    assert journal.counters()["journaled"] == 1
    assert len(journal.queries.query()) == 1
    journal.close()
    assert integrity(path) == ["ok"]


def test_unclean_stop_commits_what_it_holds_and_leaves_a_daemon_down_gap(
        make: Factory, tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    first = make(path, wall_ns=Wall(2_000))
    first.insert([entry(9).item])
    first.close(clean=False)
    second = make(path, wall_ns=Wall(5_000))
    assert second.queries.gaps() == [Gap(2_000, 5_000, "daemon_down")]
    assert [row["pid"] for row in second.queries.query()] == [9]


def test_schema(make: Factory, tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    make(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(exits)")]
        assert columns == ["id", *CONTEXT, *(f.name for f in FIELDS), *TAG_COLUMNS,
                           "sampled", "nl_family", "nl_seq", "extra"]
        indexed = {row[2] for row in conn.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'")}
        assert indexed == {"CREATE INDEX exits_time_ns ON exits (time_ns)",
                           "CREATE INDEX exits_uid ON exits (ac_uid)",
                           "CREATE INDEX samples_time_ns ON samples (time_ns)",
                           "CREATE INDEX samples_uid_time ON samples (ac_uid, time_ns)"}
        conn.execute("ALTER TABLE exits DROP COLUMN irq_delay_max_ts")  # an older table
    make(path).close()  # a field column missing from an older journal is added
    with sqlite3.connect(path) as conn:
        assert "irq_delay_max_ts" in {row[1] for row in conn.execute("PRAGMA table_info(exits)")}


def _tagged(pid: int, tags: Tags, **kw: Any) -> JournalEntry:
    kw.setdefault("ac_gid", 65534)
    return dataclasses.replace(entry(pid, uid=65534, **kw), tags=tags)


@pytest.mark.parametrize("name", [V17, "reply_v16.bin"])  # decoded and fast-path rows
def test_scopes_keep_to_the_owner_and_the_namespace(make: Factory, name: str) -> None:
    """Non-admins read only rows their owner may see; a namespaced client only rows
    of its PID namespace (and below) with known pids, translated to its level."""
    journal = make()
    for e in (_tagged(11, Tags(True, "", None), name=name),
              _tagged(12, Tags(False, "", None), name=name),
              _tagged(13, Tags(None, None, None), name=name),
              _tagged(14, Tags(True, "900", "5/5/1"), name=name),
              _tagged(15, Tags(True, "900/901", "6 2/6 2/5 1"), name=name),
              _tagged(16, Tags(True, "900", "/5/"), name=name),  # pids unknown
              _tagged(17, Tags(True, "9000", "7/7/"), name=name),  # another namespace
              _tagged(18, Tags(True, "", None), name=name, ac_gid=4)):
        journal.insert([e.item])
    journal.maintain()
    assert [r["pid"] for r in journal.queries.query()] == list(range(11, 19))
    owner = Scope(65534, 65534)
    assert [r["pid"] for r in journal.queries.query(scope=owner)] == [11, 14, 15, 16, 17]
    assert journal.queries.totals(scope=owner)["exits"] == 5
    inner = Scope(65534, 65534, "900", 1)
    rows = journal.queries.query(scope=inner)
    assert [(r["pid"], r["tgid"], r["ac_pid"], r["ac_ppid"]) for r in rows] == [
        (5, 5, 5, 1), (6, 6, 6, 5)]
    assert "ns_ids" not in rows[0]
    assert [r["pid"] for r in journal.queries.query(scope=inner, pid=6)] == [6]
    assert journal.queries.query(scope=inner, pid=15) == []  # a host pid means nothing there
    assert journal.queries.aggregate(scope=inner, group_by="uid")[0]["exits"] == 2
    deeper = Scope(None, None, "900/901", 2)  # a namespaced admin: any owner, its level
    assert [(r["pid"], r["ac_ppid"]) for r in journal.queries.query(scope=deeper)] == [(2, 1)]


def test_rows_from_before_the_policy_columns_are_admin_only(make: Factory,
                                                             tmp_path: Path) -> None:
    """A journal of schema 1 is migrated; its rows have no verdict and no namespace,
    so no restricted reader gets them (fail closed)."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in MIGRATIONS[0]:
            apply(conn, statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO exits (time_ns, pid, raw, ac_uid, ac_gid) "
                     "VALUES (1, 77, x'00', 65534, 65534)")
    journal = make(path)
    journal.insert([_tagged(78, Tags(True, "900", "3/3/1")).item])
    journal.maintain()
    assert [r["pid"] for r in journal.queries.query()] == [77, 78]
    assert [r["pid"] for r in journal.queries.query(scope=Scope(65534, 65534))] == [78]
    assert [r["pid"] for r in journal.queries.query(scope=Scope(None, None, "900", 1))] == [3]


def test_rows_named_by_namespace_inode_become_admin_only(make: Factory,
                                                         tmp_path: Path) -> None:
    """Schemas 2 to 4 named a PID namespace by its inode, which the kernel reuses: on
    migration such rows (exits and samples) lose their tags (admin-only, fail
    closed), so a later namespace given the same inode never reads them; rows of the
    initial namespace ("") keep theirs; rows written after name namespaces uniquely."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in (s for migration in MIGRATIONS[:4] for s in migration):
            apply(conn, statement)
        conn.execute("PRAGMA user_version = 4")
        conn.execute("INSERT INTO samples (time_ns, pid, owner_sees, pidns, ns_ids) "
                     "VALUES (1, 5, 1, '4026532177', '5/5/1'), (1, 6, 1, '', NULL)")
        for pid, pidns, ids in ((77, "", None), (78, "4026532177", "3/3/1"),
                                (79, "4026532177/4026532178", "4 2/4 2/3 1")):
            conn.execute("INSERT INTO exits (time_ns, pid, raw, ac_uid, ac_gid, owner_sees, "
                         "pidns, ns_ids) VALUES (1, ?, x'00', 65534, 65534, 1, ?, ?)",
                         (pid, pidns, ids))
    journal = make(path)
    journal.insert([_tagged(80, Tags(True, "b/n7", "5/5/1")).item])
    journal.maintain()
    def pids(scope: Scope | None = None) -> list[int]:
        return [r["pid"] for r in journal.queries.query(kind="exit", scope=scope)]

    assert pids() == [77, 78, 79, 80]
    assert pids(Scope(65534, 65534)) == [77, 80]
    assert pids(Scope(None, None, "4026532177", 1)) == []
    assert pids(Scope(None, None, "b/n7", 1)) == [5]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT pid, owner_sees, pidns, ns_ids FROM samples ORDER BY pid"
                            ).fetchall() == [(5, None, None, None), (6, 1, "", None)]


def test_a_schema_2_journal_gets_the_uid_index_and_uses_it(make: Factory,
                                                             tmp_path: Path) -> None:
    """Restricted readers filter on their uid: a journal from before the index gets
    it on open, and the query plan of a scoped history uses it (no full scan)."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
            apply(conn, statement)
        conn.execute("PRAGMA user_version = 2")
    make(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        names = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "exits_uid" in names
        plan = " ".join(row[-1] for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM exits WHERE ac_uid = 7 AND ac_gid = 7 "
            "AND owner_sees = 1 AND ac_comm = 'x'"))
        assert "exits_uid" in plan


def test_a_budget_caps_rows_and_interrupts(make: Factory) -> None:
    """Within a Budget: at most max_rows + 1 rows whatever the SQL's limit; a tick
    that says stop ends the query (QueryTooLong); what a tick raises is raised."""
    journal = make()
    for pid in range(1, 31):
        journal.insert([entry(pid).item])
    journal.maintain()
    with journal.queries.bounded(Budget(9, lambda: False)):
        assert len(journal.queries.query()) == 10
        assert len(journal.queries.query(limit=3)) == 3
    assert len(journal.queries.query()) == 30  # the bound ends with its block
    with journal.queries.bounded(Budget(9, lambda: True)), pytest.raises(QueryTooLong):
        journal.queries.totals()

    def broken() -> bool:
        raise KeyError("in the drain")

    with journal.queries.bounded(Budget(9, broken)), pytest.raises(KeyError, match="in the drain"):
        journal.queries.totals()


def test_unusable_files_raise_a_clear_error(make: Factory, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(JournalError, match="not a usable SQLite journal"):
        make(garbage)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(JournalError, match="newer"):
        make(newer)


def test_stop_is_final_and_idempotent(make: Factory) -> None:
    with make(":memory:") as journal:
        journal.insert([entry(1).item])
    journal.close()
    with pytest.raises(RuntimeError):
        journal.insert([entry(2).item])
    with pytest.raises(RuntimeError):
        journal.queries.query()


# ---------------------------------------------------------------- retention

def test_retention_by_age(make: Factory) -> None:
    clock, wall = Clock(), Wall(1_000 * 10**9)
    journal = make(clock=clock, wall_ns=wall, retention_s=60.0)
    for pid, age_s in ((1, 120), (2, 61), (3, 59), (4, 1)):
        journal.insert([entry(pid, time_ns=wall.ns - age_s * 10**9).item])
    journal.maintain()
    assert len(journal.queries.query()) == 4
    clock.now += 5.0
    journal.maintain()
    assert pids(journal.queries.query()) == [3, 4]
    assert journal.counters()["retired"] == 2
    assert journal.queries.accounted() == 4  # retention is not loss


def test_retention_by_size_keeps_the_newest(make: Factory, tmp_path: Path) -> None:
    clock = Clock()
    limit = 256 * 1024
    journal = make(clock=clock, max_bytes=limit)
    for pid in range(400):
        journal.insert([entry(pid).item])
    journal.maintain()
    clock.now += 5.0
    journal.maintain()
    kept = pids(journal.queries.query())
    assert 0 < len(kept) < 400
    assert kept == list(range(400 - len(kept), 400))
    assert journal.counters()["retired"] == 400 - len(kept)
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        page_size, pages, free = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                                  for p in ("page_size", "page_count", "freelist_count"))
    assert (pages - free) * page_size <= limit


def test_checkpoint_truncates_the_wal(make: Factory, tmp_path: Path) -> None:
    clock = Clock()
    journal = make(clock=clock)
    for pid in range(200):
        journal.insert([entry(pid).item])
    journal.maintain()
    assert (tmp_path / "journal.db-wal").stat().st_size > 0
    clock.now += 5.0
    journal.maintain()
    assert (tmp_path / "journal.db-wal").stat().st_size == 0


@pytest.mark.parametrize("bad", [{"synchronous": "OFF"}, {"check_interval_s": 0},
                                 {"retention_s": 0}, {"max_bytes": -1},
                                 {"low_free_pct": 5.0, "resume_free_pct": 4.0}])
def test_rejected_settings(make: Factory, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make(":memory:", **bad)


def test_heartbeat_without_traffic(make: Factory, tmp_path: Path) -> None:
    clock, wall = Clock(), Wall(1_000)
    journal = make(clock=clock, wall_ns=wall)
    wall.ns = 2_000
    clock.now += 5.0
    journal.maintain()
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert meta == {"last_alive_ns": 2_000}


def test_stop_while_suspended_closes_the_disk_low_gap(make: Factory, tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    make(path, statvfs=Disk(1.0), wall_ns=Wall(3_000)).close()
    journal = make(path, wall_ns=Wall(4_000))
    assert journal.queries.gaps() == [Gap(3_000, 3_000, "disk_low"), Gap(3_000, 4_000, "stopped")]
