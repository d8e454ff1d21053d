"""What one client may cost taskstatsd (issue 11, findings 5, 6, 7, 9), each attack run
against a real daemon, the hostile clients as nobody; and the cpumask answers side by
side with the kernel's."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from pytaskstats import Client, ExitRecord, TaskstatsError, extproto
from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.daemon.listeners import cpumask_maxlen
from pytaskstats.kernel import Connection, possible_cpus

from .conftest import NOBODY_PYTHON, WAITS_FOR_EXITS, wait_until
from .daemon_util import HOLD, RunningDaemon

pytestmark = [pytest.mark.kernel, WAITS_FOR_EXITS]

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
MIB = 1 << 20


def _rss(pid: int) -> int:
    """VmRSS of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _status(daemon: RunningDaemon) -> extproto.Status:
    """The daemon's status; a connect refused for a full accept backlog (EAGAIN, while
    a test floods it with connections) is tried again."""
    def attempt() -> extproto.Status | None:
        try:
            with Client("daemon", socket_path=daemon.socket) as c:
                status = c.status()
        except TaskstatsError as err:
            if getattr(err.__cause__, "errno", None) != errno.EAGAIN:
                raise
            return None
        return status
    return wait_until(attempt, "a connection to the daemon past a full backlog")


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    wait_until(check, what, timeout)


def _end(proc: subprocess.Popen[str]) -> None:
    """Kill a helper process and close its pipes."""
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def _register_frame(family: int, payload: bytes, seq: int) -> bytes:
    body = nl.encode_attr(ts.ATTR_REGISTER_CPUMASK, payload)
    return genl.encode(family, ts.CMD_GET, body, seq=seq,
                       flags=nl.NLM_F_REQUEST | nl.NLM_F_ACK)


def _answers(sock: socket.socket, family: int, count: int) -> dict[int, int]:
    """seq -> errno (0: ACK) of the next ``count`` error/ACK messages on ``sock``."""
    out: dict[int, int] = {}
    while len(out) < count:
        for event in ts.decode(sock.recv(1 << 17), family):
            if isinstance(event, nl.ErrorReply):
                out[event.seq] = event.error
    return out


MAXLEN = cpumask_maxlen(possible_cpus()[-1] + 1)
MASKS = [b"", b"\0", b"0\0", b"0-1", b"0-", b"0-99999999\0", b"0-9999999\0",
         b"0-4294967295\0", b"0-4294967296\0", b"99999999999\0", b"1-0\0", b"x\0",
         b"0-1:1/2\0", b"0-1:2\0", b"0-1:3/2\0", b"0-1:1/0\0", b"N\0", b"0-N\0", b"all\0",
         b"allx\0", b" 0 , 0 \0", b"0\nx\0", b"0\0garbage", b",\0", b"-1\0", b"0x1\0",
         b"0-\0", b"x,0-99999999\0", b"0-99999999,x\0", b"255\0", b"8191\0",
         b"0," * ((MAXLEN - 1) // 2) + b"0"[:(MAXLEN - 1) % 2] + b"\0",
         b"0," * (MAXLEN // 2) + b"\0" * (MAXLEN % 2 + 1),
         b"\0" * MAXLEN, b"\0" * (MAXLEN + 1), b"0-" + b"9" * 100 + b"\0"]


def test_cpumask_answers_are_the_kernels(daemon: RunningDaemon) -> None:
    """Every mask, as raw attribute bytes, gets the kernel's errno from the daemon:
    the length limit is TASKSTATS_CPUMASK_MAXLEN (100 + 6 * NR_CPUS), ERANGE before
    anything is built, EOVERFLOW, the pattern syntax, the NUL handling."""
    assert len(MASKS[-5]) == MAXLEN and len(MASKS[-3]) == MAXLEN
    with Connection() as conn:
        family = conn.family.id
    kernel = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 16)
    ours = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    with kernel, ours:
        kernel.bind((0, 0))
        ours.connect(daemon.socket)
        for sock in (kernel, ours):
            sock.settimeout(5)
        got = {}
        for sock, fam in ((kernel, family), (ours, family)):
            for seq, mask in enumerate(MASKS, 1):
                sock.send(_register_frame(fam, mask, seq))
            got[sock] = _answers(sock, fam, len(MASKS))
    table = {mask: (got[kernel][seq], got[ours][seq]) for seq, mask in enumerate(MASKS, 1)}
    assert {m: k for m, (k, d) in table.items() if k != d} == {}, table
    assert table[b"0-99999999\0"] == (errno.ERANGE, errno.ERANGE)
    assert table[MASKS[-5]][0] == 0 and table[MASKS[-1 - 1]][0] == errno.E2BIG


HUGE_MASKS = textwrap.dedent("""
    import socket, sys
    sys.path[:0] = [sys.argv[2]]
    from pytaskstats import genetlink as genl, netlink as nl, taskstats as ts
    from pytaskstats.kernel import Connection
    family = Connection(socket_path=sys.argv[1]).family.id
    masks = [b"0-99999999\\0", b"0-9999999\\0"] * 6
    frames = b"".join(genl.encode(family, ts.CMD_GET,
                                  nl.encode_attr(ts.ATTR_REGISTER_CPUMASK, m), seq=i + 1,
                                  flags=nl.NLM_F_REQUEST | nl.NLM_F_ACK)
                      for i, m in enumerate(masks))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(10)
    s.connect(sys.argv[1])
    s.send(frames)
    errors = []
    while len(errors) < len(masks):
        errors += [e.error for e in ts.decode(s.recv(1 << 17), family)
                   if isinstance(e, nl.ErrorReply)]
    print(" ".join(map(str, errors)))
""")


def test_huge_cpumasks_cost_nothing(daemon: RunningDaemon, nobody_env: dict[str, str]
                                    ) -> None:
    """Finding 5: 12 masks like 0-99999999 in one datagram from nobody (these made the
    daemon build lists of 10^8 CPUs: 2 GB, OOM) are answered ERANGE, as the kernel
    answers them, and leave the daemon's RSS where it was."""
    _status(daemon)
    before = _rss(daemon.pid)
    out = subprocess.run([*NOBODY, NOBODY_PYTHON, "-c", HUGE_MASKS, daemon.socket,
                          nobody_env["PYTHONPATH"]], capture_output=True, text=True,
                         timeout=60, check=False, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(errno.ERANGE)] * 12
    assert _rss(daemon.pid) - before < 4 * MIB
    with Connection() as kernel, pytest.raises(Exception, match="ERANGE"):
        kernel.register("0-99999999")  # the kernel's answer to the same mask


FLOOD = textwrap.dedent("""
    import socket, struct, sys
    sys.path[:0] = [sys.argv[2]]
    from pytaskstats import netlink as nl, taskstats as ts
    from pytaskstats.kernel import Connection
    family = Connection(socket_path=sys.argv[1]).family.id
    count, per = int(sys.argv[3]), 2000
    me = __import__("os").getpid()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("@ll", 1, 0))
    sent = 0
    for i in range(count):
        data = b"".join(ts.encode_get_pid(family, me, seq=i * per + j + 1)
                        for j in range(per))
        try:
            s.send(data)
        except (BlockingIOError, TimeoutError):
            break  # the daemon stopped reading us
        sent += 1
    print("sent", sent, me, flush=True)
    sys.stdin.readline()  # hold still, unread, until told
    s.settimeout(10)
    answers, latest = 0, 0
    while answers < sent * per:
        for e in ts.decode(s.recv(1 << 17), family, source="daemon"):
            answers += 1
            if isinstance(e, ts.StatsReply):
                latest = max(latest, e.stats.ac_etime)
    print("answers", answers, latest, flush=True)
""")


def test_unread_replies_are_bounded_and_do_not_stall_others(
        daemon: RunningDaemon, nobody_env: dict[str, str]) -> None:
    """Findings 6 and 9: nobody sends up to 149 datagrams of 2,000 GETs and reads
    nothing.  The daemon queues at most its reply bound for it and stops reading its
    requests (so its sends block: it cannot send them all), its RSS stays put, others
    are answered and exits delivered meanwhile, and the flooder's datagram, half
    answered, is finished only after another client's request: no datagram holds
    the loop.  Once it reads, it gets every answer."""
    status = _status(daemon)
    limit = 256 * 1024
    before = _rss(daemon.pid)
    proc = subprocess.Popen([*NOBODY, NOBODY_PYTHON, "-c", FLOOD, daemon.socket,
                             nobody_env["PYTHONPATH"], "149"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd="/", env=nobody_env)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        _, sent, pid = proc.stdout.readline().split()
        assert 0 < int(sent) < 149  # backpressure: its requests were left unread
        _wait_for("the flooder's queue to fill",
                  lambda: _status(daemon)["counters"]["client_reply_peak_bytes"] >= limit)
        with Client("daemon", socket_path=daemon.socket) as other:
            asked = other.pid(int(pid)).ac_etime  # answered while the flood waits
            with other.listen() as listener:  # and exits still flow
                child = subprocess.Popen(["true"])
                child.wait()
                _wait_for("the exit of a child", lambda: any(
                    isinstance(e, ExitRecord) and e.pid == child.pid
                    for e in listener.poll(0.1)))
        status = _status(daemon)
        assert status["counters"]["client_reply_peak_bytes"] < limit + 4096
        assert _rss(daemon.pid) - before < 16 * MIB
        proc.stdin.write("\n")
        proc.stdin.flush()
        _, answers, latest = proc.stdout.readline().split()
        assert int(answers) == int(sent) * 2000
        assert asked is not None and int(latest) > asked
    finally:
        _end(proc)




def _hold(uid: int, daemon: RunningDaemon, count: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                             NOBODY_PYTHON, "-c", HOLD, daemon.socket, str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == str(count)
    return proc


def _cli(daemon: RunningDaemon, env: dict[str, str], *user: str
         ) -> subprocess.CompletedProcess[str]:
    python = NOBODY_PYTHON if user else sys.executable
    return subprocess.run([*user, python, "-m", "pytaskstats", "--backend", "daemon",
                           "--socket", daemon.socket, "get", "1"], capture_output=True,
                          text=True, timeout=60, check=False, env=env, cwd="/")


def test_connection_limits_keep_root_in(nobody_env: dict[str, str]) -> None:
    """Finding 7: nobody opening 300 connections holds only its per-uid share (also
    as root of its own namespaces), a second user fills up to the admin reserve, and
    root's `taskstats get` through the daemon still works; a refused client gets one
    line saying why, no traceback."""
    small = RunningDaemon(None, "--max-clients", "40", "--admin-reserved-clients", "4",
                          "--max-clients-per-uid", "30")
    holders: list[subprocess.Popen[str]] = []
    try:
        holders.append(_hold(65534, small, 300))
        _wait_for("270 refusals", lambda: _status(small)["counters"]["clients_refused"] >= 270)
        refused = _cli(small, nobody_env, *NOBODY)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.count("\n") == 1 and "max_clients_per_uid" in refused.stderr
        # root of its own user and pid namespaces is still uid 65534 here
        contained = _cli(small, nobody_env, *NOBODY, "unshare", "--pid", "--user",
                         "--map-root-user", "--fork", "--mount-proc")
        assert contained.returncode == 1 and "max_clients_per_uid" in contained.stderr
        holders.append(_hold(65533, small, 10))
        _wait_for("the reserve", lambda: _status(small)["counters"]["clients_refused"] >= 276)
        assert _status(small)["clients"] == 37  # 30 + 6, and this status query
        other = _cli(small, nobody_env, "setpriv", "--reuid=65533", "--regid=65533",
                     "--clear-groups")
        assert other.returncode == 1 and "kept for root" in other.stderr
        root = _cli(small, dict(os.environ))
        assert root.returncode == 0, root.stderr
        assert root.stdout.startswith("pid 1 (") and "from daemon" in root.stdout
    finally:
        for proc in holders:
            _end(proc)
        small.close()
