"""taskstatsd under load, killed, and with a full disk: nothing is lost unaccounted.

The daemons journal every exit on the machine; each test counts its own by the
unique comm of its storm generator (other test runs may storm at the same time)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytaskstats import Client, ExitRecord, extproto

from .conftest import STORM_LOCK, machine_lock, require_kernel, unique_command, wait_until
from .daemon_util import RunningDaemon

pytestmark = pytest.mark.kernel
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def built_storm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fork-storm generator (tests/storm.c), compiled for this run."""
    require_kernel()
    exe = tmp_path_factory.mktemp("storm") / "storm"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "storm.c")], check=True)
    return exe


@pytest.fixture
def storm(built_storm: Path, tmp_path: Path) -> Iterator[str]:
    """The generator under a comm of its own (its children inherit it), with the
    machine's storm lock held (STORM_LOCK: no other run's lossless check meanwhile)."""
    with machine_lock(STORM_LOCK):
        yield str(unique_command(tmp_path, "storm", source=str(built_storm)))


def _comm(exe: str) -> str:
    return Path(exe).name


def _status(d: RunningDaemon, flush: bool = True) -> extproto.Status:
    """The daemon's status; by default after a journal flush, so that its counters
    account for every exit it has received (journaled, dropped or lost)."""
    with Client("daemon", socket_path=d.socket) as c:
        doc = c.status(flush=flush)
        return doc


def _journaled(d: RunningDaemon, comm: str) -> int:
    with Client("daemon", socket_path=d.socket) as c:
        rows = c.history(comm=comm, group_by="comm")
    return int(rows[0]["exits"]) if rows else 0


def _settle(d: RunningDaemon, comm: str, expected: int, timeout: float = 30) -> int:
    """The exits of ``comm`` journaled, once ``expected`` are (or ``timeout`` passed)."""
    counts = [0]

    def enough() -> bool:
        counts[0] = _journaled(d, comm)  # a history request flushes the journal
        return counts[0] >= expected
    with contextlib.suppress(AssertionError):
        wait_until(enough, f"{expected} exits of {comm} in the journal", timeout)
    return counts[0]


def _lost(counters: dict[str, int]) -> int:
    return sum(v for k, v in counters.items() if k.startswith(("lost_", "dropped_")))


def test_storm_of_50000_exits_is_journaled_in_full(storm: str) -> None:
    d = RunningDaemon()
    try:
        gens = [subprocess.Popen([storm, "25000"], stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
        forked = sum(int(g.communicate(timeout=300)[0]) for g in gens)
        generated = forked + len(gens)  # the children and the two generators
        journaled = _settle(d, _comm(storm), generated)
        counters = _status(d)["counters"]
        print(f"storm: generated {generated}, journaled {journaled}, lost {_lost(counters)}")
        assert journaled + _lost(counters) >= generated
        assert _lost(counters) == 0 and journaled == generated
        assert counters["journaled"] == counters["received"] - _lost(counters)  # flushed
    finally:
        d.close()


def _committed(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM exits").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_kill_9_during_a_storm_then_restart(storm: str, tmp_path: Path) -> None:
    d = RunningDaemon(tmp_path / "state")
    db = tmp_path / "state" / "journal.sqlite3"
    try:
        for _ in range(5):
            start = _committed(db)
            gen = subprocess.Popen([storm, "3000"], stdout=subprocess.DEVNULL)
            before = wait_until(lambda: (n := _committed(db)) > start and n,  # noqa: B023
                                "a commit during the storm")
            d.stop(signal.SIGKILL)
            gen.wait(timeout=120)
            with sqlite3.connect(db) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            after_kill = _committed(db)
            assert after_kill >= before > 0
            d.start()
            assert _committed(db) >= after_kill
        gaps = _status(d)["gaps"]
        assert sum(1 for g in gaps if g[2] == "daemon_down") == 5
        assert all(end > start for start, end, _ in gaps)
    finally:
        d.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_suspends_journaling_and_resumes(storm: str, small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (3 << 20))
    d = RunningDaemon(small_disk / "state", "--low-free-pct", "10", "--resume-free-pct", "30")
    try:
        with Client("daemon", socket_path=d.socket) as c, c.listen() as listener:
            subprocess.run([storm, "3000"], check=True, stdout=subprocess.DEVNULL)
            live = [0]

            def all_live() -> bool:  # every exit on the machine comes: ours, or told lost
                live[0] += sum(isinstance(e, ExitRecord) and e.task.ac_comm == _comm(storm)
                               for e in listener.poll(0.1))
                return live[0] + listener.lost >= 3001  # the children and the generator
            wait_until(all_live, "the storm's exits through the live fan-out")
            assert live[0] > 0  # the live fan-out kept working
            counters = _status(d)["counters"]
            assert counters["dropped_disk_low"] + counters["dropped_write_error"] > 0
            assert counters["journaled"] + _lost(counters) == counters["received"]
            assert c.pid(os.getpid()).ac_pid == os.getpid()  # queries too
        filler.unlink()  # and room for whatever else runs on the machine meanwhile:
        subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
        wait_until(lambda: any(g[2] == "disk_low" for g in _status(d)["gaps"]),
                   "the journal to resume (it re-checks free space every 5 s)")
        again = unique_command(small_disk.parent, "storm", source=storm)
        subprocess.run([str(again), "200"], check=True, stdout=subprocess.DEVNULL)
        assert _settle(d, again.name, 201) == 201  # journaled again, every one
    finally:
        d.close()
