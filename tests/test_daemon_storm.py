"""taskstatsd under load, killed, and with a full disk: nothing is lost unaccounted."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytaskstats import Client, ExitRecord
from pytaskstats.daemon import protocol

from .conftest import require_kernel
from .daemon_util import RunningDaemon

pytestmark = pytest.mark.kernel
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fork-storm generator (tests/storm.c), compiled for this run."""
    require_kernel()
    exe = tmp_path_factory.mktemp("storm") / "storm"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "storm.c")], check=True)
    return str(exe)


def _status(d: RunningDaemon) -> dict[str, Any]:
    with Client("daemon", socket_path=d.socket) as c:
        doc: dict[str, Any] = c.daemon_request(protocol.CMD_STATUS, {})
        return doc


def _journaled(d: RunningDaemon, comm: str) -> int:
    with Client("daemon", socket_path=d.socket) as c:
        rows = c.daemon_request(protocol.CMD_HISTORY, {"comm": comm, "group_by": "comm"})
    return int(rows[0]["exits"]) if rows else 0


def _settle(d: RunningDaemon, comm: str, expected: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    got = _journaled(d, comm)
    while got < expected and time.monotonic() < deadline:
        time.sleep(0.3)
        got = _journaled(d, comm)
    return got


def _caught_up(d: RunningDaemon, timeout: float = 30) -> dict[str, int]:
    """The daemon's counters once every exit it received is journaled or counted lost
    (other exits of a shared machine may still be on their way to the journal)."""
    deadline = time.monotonic() + timeout
    counters: dict[str, int] = _status(d)["counters"]
    while (counters["journaled"] != counters["received"] - _lost(counters)
           and time.monotonic() < deadline):
        time.sleep(0.1)
        counters = _status(d)["counters"]
    return counters


def _lost(counters: dict[str, int]) -> int:
    return sum(v for k, v in counters.items() if k.startswith(("lost_", "dropped_")))


def test_storm_of_50000_exits_is_journaled_in_full(storm: str) -> None:
    d = RunningDaemon()
    try:
        gens = [subprocess.Popen([storm, "25000"], stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
        forked = sum(int(g.communicate(timeout=300)[0]) for g in gens)
        generated = forked + len(gens)  # the children and the two generators
        journaled = _settle(d, "storm", generated)
        counters = _caught_up(d)
        print(f"storm: generated {generated}, journaled {journaled}, lost {_lost(counters)}")
        assert journaled + _lost(counters) >= generated
        assert _lost(counters) == 0 and journaled == generated
        assert counters["journaled"] == counters["received"] - _lost(counters)
    finally:
        d.close()


def _committed(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM exits").fetchone()[0])


def test_kill_9_during_a_storm_then_restart(storm: str, tmp_path: Path) -> None:
    d = RunningDaemon(tmp_path / "state")
    db = tmp_path / "state" / "journal.sqlite3"
    try:
        for _ in range(5):
            gen = subprocess.Popen([storm, "3000"], stdout=subprocess.DEVNULL)
            time.sleep(0.8)
            before = _committed(db)
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
            live = 0
            while events := listener.poll(0.5):
                live += sum(isinstance(e, ExitRecord) for e in events)
            counters = _status(d)["counters"]
            assert live >= 3000  # the live fan-out kept working
            assert counters["dropped_disk_low"] + counters["dropped_write_error"] > 0
            assert counters["journaled"] + _lost(counters) == counters["received"]
            assert c.pid(os.getpid()).ac_pid == os.getpid()  # queries too
        filler.unlink()
        time.sleep(6)  # the journal re-checks free space every 5 s
        before = _status(d)["counters"]["journaled"]
        subprocess.run([storm, "200"], check=True, stdout=subprocess.DEVNULL)
        time.sleep(1)
        status = _status(d)
        assert status["counters"]["journaled"] >= before + 200
        assert any(g[2] == "disk_low" for g in status["gaps"])
    finally:
        d.close()
