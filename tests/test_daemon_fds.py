"""File descriptors clients make taskstatsd hold (issue 11, finding F6): fds passed
with requests that do not use them, fds of pending cgroup requests, connections up
to RLIMIT_NOFILE, and accept() failing with EMFILE.  Real daemons, hostile clients
as nobody."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import subprocess
import textwrap
import time

import pytest

from pytaskstats import Client, extproto
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.kernel import Connection

from .conftest import NOBODY_PYTHON, wait_until
from .daemon_util import HOLD, RunningDaemon

pytestmark = pytest.mark.kernel

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
FDS_LIMIT = 64  # RLIMIT_NOFILE of the daemons run short of fds

# Connections that each send one datagram of 2000 GETs of the sender's pid (whose
# answers overrun the reply bound: the datagram stays half answered) with 4 fds, and
# never read; argv: socket, taskstats family id, plain connections, connections whose
# datagram also has a TASKSTATSD CGROUP request (seq 99999).  Prints "ready" once
# the daemon has read every datagram (nothing left in the sockets' send queues); on
# a line from stdin, reads the cgroup connections' answers and prints the CGROUP
# request's errnos.
SEND_FDS = textwrap.dedent("""
    import fcntl, os, socket, struct, sys, termios, time
    from pytaskstats import netlink as nl, taskstats as ts
    from pytaskstats import extproto
    path, family = sys.argv[1], int(sys.argv[2])
    plain, cgroup = int(sys.argv[3]), int(sys.argv[4])
    flood = b"".join(ts.encode_get_pid(family, os.getpid(), seq=i) for i in range(2000))
    ask = extproto.encode_request(extproto.CMD_CGROUP, {}, seq=99999)
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(4)]
    socks = []
    for i in range(plain + cgroup):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        socket.send_fds(s, [flood + (ask if i >= plain else b"")], fds)
        socks.append(s)
    def queued(s):
        return struct.unpack("i", fcntl.ioctl(s, termios.TIOCOUTQ, b"\\0" * 4))[0]
    deadline = time.monotonic() + 30
    while any(queued(s) for s in socks) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("ready" if not any(queued(s) for s in socks) else "stuck", flush=True)
    sys.stdin.readline()
    codes = []
    for s in socks[plain:]:
        s.settimeout(30)
        while True:
            msg = nl.walk(s.recv(1 << 20))[0]
            if msg.seq == 99999:
                codes.append(struct.unpack_from("i", msg.data, msg.start)[0])
                break
    print(" ".join(str(-c) for c in sorted(codes)), flush=True)
""")



def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _family() -> int:
    """The taskstats family id (the daemon answers with the kernel's)."""
    kernel = Connection()
    try:
        return kernel.family.id
    finally:
        kernel.close()


def _status(daemon: RunningDaemon) -> extproto.Status:
    with Client("daemon", socket_path=daemon.socket) as c:
        status = c.status()
    return status


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def test_passed_fds_are_kept_only_for_cgroup_requests(nobody_env: dict[str, str]) -> None:
    """nobody's 20 connections each send 2000 GET requests with 4 fds and read
    nothing, 5 more the same with a CGROUP request: the daemon keeps one fd for
    each of the 5 only (the kernel drops fds sent to a netlink socket), and with
    max_held_fds 3, 3 of them: the other 2 CGROUP requests fail with ENFILE, the 3
    with the kept fd (/dev/null) are judged on it (EINVAL: not a cgroup2 dir)."""
    daemon = RunningDaemon(None, "--max-held-fds", "3")
    proc = None
    try:
        _status(daemon)  # the journal's files are open from the first status on
        before = _fds(daemon.pid)
        proc = subprocess.Popen([*NOBODY, NOBODY_PYTHON, "-c", SEND_FDS, daemon.socket,
                                 str(_family()), "20", "5"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd="/", env=nobody_env)
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        counters = _status(daemon)["counters"]
        assert counters["client_fds_held"] == 3 and counters["client_fds_refused"] == 2
        # 25 connections and 3 kept fds (the 100 passed were held before), once the
        # status connection is gone
        wait_until(lambda: _fds(daemon.pid) - before <= 25 + 3, "25 connections and 3 fds")
        proc.stdin.write("\n")
        proc.stdin.flush()
        codes = sorted(int(c) for c in proc.stdout.readline().split())
        assert codes == sorted([errno.EINVAL] * 3 + [errno.ENFILE] * 2)
    finally:
        if proc is not None:
            _end(proc)
        daemon.close()
    assert daemon.proc is not None and daemon.proc.returncode == 0


@pytest.fixture
def short_of_fds() -> RunningDaemon:
    """A taskstatsd whose RLIMIT_NOFILE (soft and hard) is FDS_LIMIT."""
    return RunningDaemon(None, "--max-clients-per-uid", "1000", "--max-clients", "1000",
                         prefix=["prlimit", f"--nofile={FDS_LIMIT}:{FDS_LIMIT}", "--"])


def test_users_cannot_take_roots_fds(short_of_fds: RunningDaemon) -> None:
    """nobody opening as many connections as it can (per-uid limit out of the way:
    a user with subuids has many uids) is refused short of RLIMIT_NOFILE, so root
    still connects and gets its status while they are held."""
    daemon = short_of_fds
    holder = None
    try:
        holder = subprocess.Popen([*NOBODY, NOBODY_PYTHON, "-c", HOLD, daemon.socket,
                                   str(FDS_LIMIT)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd="/")
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == str(FDS_LIMIT)
        wait_until(lambda: _status(daemon)["counters"]["clients_refused"] > 0, "refusals")
        status = _status(daemon)
        assert status["clients"] < FDS_LIMIT - 16  # nobody's, and this one
        assert _fds(daemon.pid) < FDS_LIMIT - 16
        with Client("daemon", socket_path=daemon.socket) as root:
            assert root.pid(1).ac_pid == 1
    finally:
        if holder is not None:
            _end(holder)
        daemon.close()
    assert daemon.proc is not None and daemon.proc.returncode == 0


def _stderr_line(daemon: RunningDaemon, word: str, timeout: float = 20.0) -> str:
    """The daemon's next stderr line containing ``word`` ("" if it exited first)."""
    assert daemon.proc is not None and daemon.proc.stderr is not None
    fd, seen, deadline = daemon.proc.stderr.fileno(), b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = seen.split(b"\n")
        for line in lines[:-1]:
            if word.encode() in line:
                return line.decode()
        seen = lines[-1]
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            seen += chunk
    raise AssertionError(f"no stderr line with {word!r}")


def test_accept_out_of_fds_does_not_stop_the_daemon(short_of_fds: RunningDaemon) -> None:
    """Root (which the fd reserve does not stop) fills the daemon's fd table:
    connections, each sending GETs whose answers it does not read with a CGROUPSTATS
    request and an fd the daemon keeps.  One more connection makes accept() fail
    with EMFILE: the daemon says so, keeps running, and once the others close it
    accepts the waiting connection and answers it."""
    daemon = short_of_fds
    family = _family()
    flood = b"".join(ts.encode_get_pid(family, 1, seq=seq) for seq in range(2000))
    flood += ts.encode_cgroup_get(family, 0, seq=99999, ack=False)
    null = os.open("/dev/null", os.O_RDONLY)
    socks: list[socket.socket] = []
    try:
        for _ in range(FDS_LIMIT):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            socks.append(s)
            s.connect(daemon.socket)
            s.setblocking(False)
            with contextlib.suppress(OSError):  # refused: no fd left for its pidfd
                socket.send_fds(s, [flood], [null])
        wait_until(lambda: daemon.proc is not None and (
            daemon.proc.poll() is not None or _fds(daemon.pid) >= FDS_LIMIT), "a full fd table")
        late = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        socks.append(late)
        late.connect(daemon.socket)
        assert "cannot accept clients (Too many open files)" in _stderr_line(daemon, "accept")
        assert daemon.proc is not None and daemon.proc.poll() is None
        for s in socks[:-1]:
            s.close()
        late.settimeout(20)
        late.send(extproto.encode_request(extproto.CMD_STATUS, {}, seq=7))
        answer = nl.walk(late.recv(1 << 20))[0]
        assert answer.seq == 7 and answer.type == extproto.FAMILY_ID
        assert _status(daemon)["counters"]["client_accept_failures"] >= 1
    finally:
        for s in socks:
            s.close()
        os.close(null)
        daemon.close()
    assert daemon.proc is not None and daemon.proc.returncode == 0


def test_soft_nofile_limit_is_raised_to_the_hard_one() -> None:
    """Started with RLIMIT_NOFILE 64:4096 (systemd's default is 1024:524288), the
    daemon runs with 4096."""
    daemon = RunningDaemon(None, prefix=["prlimit", "--nofile=64:4096", "--"])
    try:
        with open(f"/proc/{daemon.pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"]
    finally:
        daemon.close()
