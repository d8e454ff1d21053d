"""taskstatsd's journal with its writer in a child process: the same rows as the
store alone, exact accounting, health pushed and never waited for, clean and
unclean ends, a stalled or dead child."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import pytaskstats
from pytaskstats.daemon.journal import Store
from pytaskstats.daemon.journal_process import JournalProcess
from pytaskstats.daemon.journal_rows import JournalEntry, Tags
from pytaskstats.daemon.journal_schema import JournalError
from tests.conftest import wait_until
from tests.test_journal import EXIT_FIXTURES, SINGLE_EXITS, decoded, entry, exit_bytes


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[JournalProcess]:
    j = JournalProcess(tmp_path / "journal.db")
    yield j
    j.stop()


def variety() -> list[JournalEntry]:
    """Every golden exit shape, with and without cpu and cgroup (non-UTF-8 too)."""
    out = []
    for i, name in enumerate(EXIT_FIXTURES + SINGLE_EXITS):
        record = dataclasses.replace(decoded(name), cpu=None if i % 3 == 0 else i)
        cgroup = [None, "/a/b", "/odd/\udcff", ""][i % 4]
        out.append(JournalEntry(record, 1_000 + i, cgroup, exit_bytes(name)))
    return out


def test_rows_are_those_of_the_store(journal: JournalProcess, tmp_path: Path) -> None:
    entries = variety()
    with Store(tmp_path / "store.db") as reference:
        assert reference.insert([e.item for e in entries]) == len(entries)
        assert all(journal.submit(e) for e in entries)
        expected = reference.queries.query(raw=True)
    journal.flush()
    assert journal.queries.query(raw=True) == expected
    assert len(expected) == len(entries)
    assert journal.pending == 0


def test_policy_tags_are_those_of_the_store(journal: JournalProcess,
                                                    tmp_path: Path) -> None:
    """Each exit's verdict and PID namespace cross the process boundary intact."""
    tags = [Tags(), Tags(True, "", None), Tags(False, "900", "5/5/1"),
            Tags(None, "900/901", "6 2/6 2/"), Tags(True, None, None)]
    entries = [dataclasses.replace(e, tags=tags[i % len(tags)])
               for i, e in enumerate(variety())]
    sql = "SELECT owner_sees, pidns, ns_ids FROM exits ORDER BY id"
    with Store(tmp_path / "store.db") as reference:
        reference.insert([e.item for e in entries])
        assert all(journal.submit(e) for e in entries)
    journal.flush()
    with sqlite3.connect(tmp_path / "store.db") as a, \
            sqlite3.connect(tmp_path / "journal.db") as b:
        expected = a.execute(sql).fetchall()
        assert b.execute(sql).fetchall() == expected
    assert expected[:5] == [(None, None, None), (1, "", None), (0, "900", "5/5/1"),
                            (None, "900/901", "6 2/6 2/"), (1, None, None)]


def test_accounting_is_exact(journal: JournalProcess) -> None:
    for pid in range(1, 301):
        journal.submit(entry(pid))
    journal.note_lost("overrun", 7)
    journal.flush()
    counters = journal.counters()
    assert counters["journaled"] == 300 and counters["lost_overrun"] == 7
    assert journal.queries.accounted() == 307 and journal.queries.lost_total() == 7
    assert journal.queries.totals()["exits"] == 300
    assert not journal.suspended


def test_clean_stop_then_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    first = JournalProcess(path)
    first.submit(entry(3))
    first.stop()
    first.stop()  # idempotent
    with pytest.raises(RuntimeError, match="stopped"):
        first.submit(entry(4))
    second = JournalProcess(path)
    try:
        assert [g.reason for g in second.queries.gaps()] == ["stopped"]
        assert [row["pid"] for row in second.queries.query()] == [3]
    finally:
        second.stop()


DIES = """
import os, signal, sys
from tests.test_journal import entry
from pytaskstats.daemon.journal_process import JournalProcess
from tests.conftest import wait_until
j = JournalProcess(sys.argv[1], batch_size=1000, max_delay_s=30)
for pid in range(1, 501):
    j.submit(entry(pid))
j.push()
# the writer has them all (it says so unasked), none committed yet (max_delay_s)
wait_until(lambda: j.health.received == 500 and j.health.pending == 500, "the exits", 30)
print(j._proc.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_daemon_leaves_its_records_committed_and_a_daemon_down_gap(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    root = Path(pytaskstats.__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{Path(__file__).parent.parent}"}
    done = subprocess.run([sys.executable, "-c", DIES, str(path)], capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    child = int(done.stdout)
    _wait_gone(child)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM exits").fetchone()[0] == 500
    reopened = JournalProcess(path)
    try:
        assert [g.reason for g in reopened.queries.gaps()] == ["daemon_down"]
    finally:
        reopened.stop()


def _wait_gone(pid: int) -> None:
    """Wait until process ``pid`` (not our child) has exited."""
    def gone() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
        except (FileNotFoundError, ProcessLookupError):
            return True
    wait_until(gone, f"writer {pid} to exit", 30)


def test_a_dead_writer_fails_calls_and_submits(journal: JournalProcess) -> None:
    journal.submit(entry(1))
    journal._proc.kill()
    with pytest.raises(RuntimeError, match="exited with status -9"):
        journal.flush()
    with pytest.raises(RuntimeError, match="writer failed"):
        journal.submit(entry(2))


def test_the_writer_ignores_sigterm_and_sigint(journal: JournalProcess) -> None:
    journal._proc.send_signal(signal.SIGTERM)
    journal._proc.send_signal(signal.SIGINT)
    journal.submit(entry(1))
    journal.flush()
    assert journal.counters()["journaled"] == 1


def test_a_stalled_writer_never_blocks_submit_and_drops_are_counted(tmp_path: Path) -> None:
    journal = JournalProcess(tmp_path / "journal.db", queue_size=1000)
    try:
        os.kill(journal._proc.pid, signal.SIGSTOP)
        accepted = sum(journal.submit(entry(pid)) for pid in range(1, 20_001))
        os.kill(journal._proc.pid, signal.SIGCONT)
        journal.flush()
        counters = journal.counters()
        assert accepted < 20_000  # the socket and the queue filled while it was stopped
        assert counters["dropped_queue_full"] == 20_000 - accepted
        assert counters["journaled"] == accepted
    finally:
        journal.stop()


def test_an_unusable_file_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"not sqlite" * 1000)
    with pytest.raises(JournalError, match="not a usable SQLite journal"):
        JournalProcess(path)


def test_settings_are_checked_before_spawning(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        JournalProcess(tmp_path / "journal.db", synchronous="OFF")
    with pytest.raises(ValueError, match="batch_size"):
        JournalProcess(tmp_path / "journal.db", batch_size=0)


def test_accounting_holds_with_concurrent_producers(tmp_path: Path) -> None:
    """Real clocks and threads: whatever was dropped, nothing goes unaccounted."""
    pool = [entry(pid) for pid in range(50)]
    with JournalProcess(tmp_path / "journal.db", batch_size=64, queue_size=500) as journal:
        def produce() -> None:
            for item in pool * 40:
                journal.submit(item)

        threads = [threading.Thread(target=produce) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        journal.flush()
        counts = journal.counters()
        assert journal.queries.accounted() == 4 * 2000
        assert counts["journaled"] == journal.queries.totals()["exits"]
        assert counts["journaled"] + counts["dropped_queue_full"] == 8000
        assert journal.pending == 0


def test_health_is_pushed_unasked(journal: JournalProcess) -> None:
    """Committed exits and noted losses reach the daemon's view without a call."""
    assert journal.health.counters["journaled"] == 0 and journal.health.open
    for pid in range(1, 11):
        journal.submit(entry(pid))
    journal.note_lost("overrun", 2)
    journal.push()
    wait_until(lambda: journal.counters().get("journaled") == 10
               and journal.counters().get("lost_overrun") == 2, "the pushed health", 30)
    assert journal.pending == 0 and not journal.suspended
    assert journal.health.received == 10


def test_health_never_waits_for_a_stopped_writer(journal: JournalProcess) -> None:
    """A writer that does not answer (SIGSTOP) leaves status readers unaffected:
    they read the last health pushed."""
    journal.submit(entry(1))
    journal.flush()
    os.kill(journal._proc.pid, signal.SIGSTOP)
    try:
        journal.submit(entry(2))
        seen: list[object] = []
        reader = threading.Thread(target=lambda: seen.extend(
            [journal.counters(), journal.pending, journal.suspended, journal.health]))
        reader.start()
        reader.join(30)
        assert not reader.is_alive() and len(seen) == 4
        assert seen[0] == journal.health.counters
        assert journal.health.counters["journaled"] == 1
        assert seen[1] == 1  # the exit the writer has not taken
    finally:
        os.kill(journal._proc.pid, signal.SIGCONT)
    journal.flush()
    assert journal.counters()["journaled"] == 2 and journal.pending == 0
