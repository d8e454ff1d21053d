"""systemd's file descriptor store, emulated: taskstatsd hands its registered listener
sockets to $NOTIFY_SOCKET; after kill -9 they come back (sd_listen_fds) and the exits
of the downtime, buffered in them, are journaled."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from pytaskstats import Client

from .conftest import WAITS_FOR_EXITS, require_kernel, unique_command, wait_until
from .daemon_util import RunningDaemon

pytestmark = [pytest.mark.kernel, WAITS_FOR_EXITS]


def _collect(sock: socket.socket) -> list[tuple[str, int]]:
    """FDSTORE messages until READY=1: (name, fd) pairs."""
    stored: list[tuple[str, int]] = []
    while True:
        data, fds, _, _ = socket.recv_fds(sock, 4096, 8)
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        if fields.get("FDSTORE") == "1":
            assert fields.get("FDPOLL") == "0" and len(fds) == 1
            stored.append((fields["FDNAME"], fds[0]))
        if fields.get("READY") == "1":
            return stored


def _journaled(d: RunningDaemon, comm: str) -> int:
    with Client("daemon", socket_path=d.socket) as c:
        rows = c.history(comm=comm, group_by="comm")
    return int(rows[0]["exits"]) if rows else 0


def test_exits_during_a_crash_are_kept_by_the_fd_store(tmp_path: Path) -> None:
    require_kernel()
    notify_path = str(tmp_path / "notify.sock")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(notify_path)
    systemd.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path}
    d = RunningDaemon(tmp_path / "state")  # a first run without systemd: no store
    d.stop()
    marker = unique_command(tmp_path, "downtime")  # its exits only, not other runs'
    stored: list[tuple[str, int]] = []
    try:
        d.start(env=env)
        stored = _collect(systemd)
        assert [name for name, _ in stored] == ["taskstats-cpus-0", "taskstats-cpus-1"]
        d.stop(signal.SIGKILL)
        for _ in range(20):  # while no daemon runs
            subprocess.run([str(marker)], check=True)
        d.start(env=env, stored=stored)
        _collect(systemd)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: _journaled(d, marker.name) >= 20, "20 exits journaled", 10)
        assert _journaled(d, marker.name) == 20
        with Client("daemon", socket_path=d.socket) as c:
            status = c.status()
        assert status["counters"]["lost_overrun"] == 0
        assert any(g[2] == "daemon_down" for g in status["gaps"])
    finally:
        for _, fd in stored:
            os.close(fd)
        systemd.close()
        d.close()
