"""taskstatsd against the real kernel: the kernel's semantics over its socket,
access policy, fan-out, malformed frames, the journal through `taskstats history`."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytaskstats import AccessDenied, Client, ExitRecord, Lost
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.kernel import Connection

from .conftest import NOBODY_PYTHON, WAITS_FOR_EXITS, as_nobody, unique_command, wait_until
from .daemon_util import RunningDaemon

pytestmark = [pytest.mark.kernel, WAITS_FOR_EXITS]


def _exits(conn: Connection, pid: int, timeout: float = 2.0) -> list[ExitRecord]:
    """Exit records of ``pid`` received on a registered connection (the socket's
    timeout is restored: requests after this wait as long as before)."""
    before = conn.sock.sock.gettimeout()
    conn.sock.sock.settimeout(0.2)
    out: list[ExitRecord] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            n = conn.sock.recv()
        except TimeoutError:
            if out:
                break
            continue
        out += [e for e in ts.decode(conn.sock.view, conn.family.id, n, source="daemon")
                if isinstance(e, ExitRecord) and e.pid == pid]
    conn.sock.sock.settimeout(before)
    return out


def test_query_through_the_daemon_matches_the_kernel(daemon: RunningDaemon) -> None:
    with Client("daemon", socket_path=daemon.socket) as via, Client("kernel") as direct:
        assert via.backend == "daemon"
        rec = via.pid(os.getpid())
        assert rec.source == "daemon" and rec.ac_pid == os.getpid()
        assert rec.ac_comm == direct.pid(os.getpid()).ac_comm
        assert via.tgid(os.getpid()).scope == "tgid"
        assert set(via.pids([os.getpid(), 1])) == {os.getpid(), 1}
        cg = via.cgroup("/sys/fs/cgroup/cpu")
        assert cg.source == "daemon" and cg.nr_sleeping > 0
        v2 = via.cgroup("/sys/fs/cgroup/unified")  # the daemon counts cgroup2 from /proc
        assert v2.source == "daemon" and v2.nr_sleeping + v2.nr_running > 0


def test_register_rules_duplicate_deregister_and_prune(daemon: RunningDaemon) -> None:
    conn = Connection(socket_path=daemon.socket)
    witness = Connection(socket_path=daemon.socket)  # stays registered throughout
    witness.register("0-1")
    conn.register("0-1")
    conn.register("0-1")  # a duplicate is ignored: each exit comes once
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert len(_exits(conn, proc.pid)) == 1
    assert len(_exits(witness, proc.pid)) == 1
    conn.register("0-1", deregister=True)
    proc = subprocess.Popen(["true"])
    proc.wait()
    # the daemon fans an exit out to every listener at once: once the witness has it,
    # conn would have it queued too
    assert len(_exits(witness, proc.pid)) == 1
    assert _exits(conn, proc.pid, timeout=0.05) == []
    conn.register("0-1")
    with Client("daemon", socket_path=daemon.socket) as c:
        def listeners() -> int:
            doc = c.status()
            return int(doc["listeners"]["client_listeners"])
        before = listeners()
        conn.close()  # disconnect prunes the listener
        wait_until(lambda: listeners() == before - 1, "the listener to be pruned", 10)
    witness.close()


def _raw(daemon: RunningDaemon, data: bytes, fds: list[int] | None = None) -> list[object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(2)
        s.connect(daemon.socket)
        if fds:
            socket.send_fds(s, [data], fds)
        else:
            s.send(data)
        reply = s.recv(1 << 17)
    return list(ts.decode(reply, 0x7FFF))


def test_malformed_and_oversized_frames_get_errors(daemon: RunningDaemon) -> None:
    (reply,) = _raw(daemon, b"\0" * 70000)
    assert isinstance(reply, nl.ErrorReply) and reply.error == errno.EMSGSIZE
    # a truncated or corrupt header is dropped silently, as by the kernel
    # (tests/test_fidelity.py): the next reply answers the next request
    probe = nl.encode_message(0x7FFE, nl.NLM_F_REQUEST, 3, 0, b"\1\1\0\0")
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(2)
        s.connect(daemon.socket)
        for frame in (b"\x01\x02", b"\xff" * 40):
            s.send(frame)
            s.send(probe)
            (reply,) = ts.decode(s.recv(1 << 17), 0x7FFF)
            assert isinstance(reply, nl.ErrorReply) and reply.seq == 3
    # a request for a family nobody registered
    (reply,) = _raw(daemon, nl.encode_message(0x7FFE, nl.NLM_F_REQUEST, 5, 0, b"\1\1\0\0"))
    assert isinstance(reply, nl.ErrorReply) and reply.error == errno.ENOENT and reply.seq == 5


def _pipes_held(pid: int, inode: int) -> int:
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held += os.readlink(f"/proc/{pid}/fd/{fd}") == f"pipe:[{inode}]"
        except OSError:
            continue
    return held


def test_unexpected_fds_are_closed(daemon: RunningDaemon) -> None:
    r, w = os.pipe()
    try:
        for _ in range(5):
            (reply,) = _raw(daemon, ts.encode_get_pid(0x7FFD, os.getpid(), seq=1), [r, w])
            assert isinstance(reply, nl.ErrorReply)
        assert _pipes_held(daemon.pid, os.fstat(r).st_ino) == 0
    finally:
        os.close(r)
        os.close(w)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=300))
def test_fuzzed_frames_never_break_the_daemon(daemon: RunningDaemon, frame: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(2)
        s.connect(daemon.socket)
        s.send(frame)
        s.settimeout(0.05)
        with contextlib.suppress(TimeoutError):  # some frames (NOOP...) get no answer
            s.recv(1 << 17)
    with Client("daemon", socket_path=daemon.socket) as c:
        assert c.pid(os.getpid()).ac_pid == os.getpid()


def test_unprivileged_user_sees_own_tasks_only(daemon: RunningDaemon,
                                               nobody_env: dict[str, str]) -> None:
    code = ("import os, sys\nfrom pytaskstats import Client, AccessDenied\n"
            "c = Client(socket_path=sys.argv[1])\n"
            "print(c.backend, c.pid(os.getpid()).ac_uid)\n"
            "try:\n  c.pid(1)\nexcept AccessDenied as e:\n  print('denied', e.pid)\n")
    done = as_nobody(nobody_env, "-c", code, daemon.socket)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["daemon 65534", "denied 1"]
    cli = as_nobody(nobody_env, "-m", "pytaskstats", "--socket", daemon.socket, "cgroup",
                    "/sys/fs/cgroup/cpu", "--json")
    assert cli.returncode == 0 and "nr_sleeping" in cli.stdout, cli.stderr
    assert AccessDenied.__module__ == "pytaskstats"


LISTEN_AS = """
import os, sys, time
from pytaskstats import Client, ExitRecord
path, ready, done, own = sys.argv[1:5]
with Client(socket_path=path) as c, c.listen() as listener:
    open(ready, "w").close()
    deadline = time.monotonic() + 30
    seen, mine = set(), False
    def take(events):
        global mine
        for e in events:
            if isinstance(e, ExitRecord):
                seen.add(e.task.ac_uid)
                mine = mine or e.task.ac_comm == own
    # until its own marker came and every marker has been fanned out (done)
    while not (mine and os.path.exists(done)) and time.monotonic() < deadline:
        take(listener.poll(0.1))
    take(listener.drain())
    print(sorted(seen))
"""


def test_two_users_each_see_their_own_exits(daemon: RunningDaemon,
                                            nobody_env: dict[str, str]) -> None:
    """Each user's listener sees its own exits and no other user's (uids only: other
    test runs may run tasks as these users too)."""
    base = Path(tempfile.mkdtemp(prefix="two-users-", dir=daemon.base))
    base.chmod(0o777)  # for the ready files
    done = base / "done"
    markers = {uid: unique_command(base, f"u{uid}-") for uid in (65534, 40000, 0)}
    procs = []
    with Client("daemon", socket_path=daemon.socket) as root, root.listen() as witness:
        for uid in (65534, 40000):
            ready = base / f"ready-{uid}"
            proc = subprocess.Popen(
                ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 NOBODY_PYTHON, "-c", LISTEN_AS, daemon.socket, str(ready), str(done),
                 markers[uid].name], env=nobody_env, cwd="/", stdout=subprocess.PIPE,
                text=True)
            procs.append(proc)
            wait_until(lambda: ready.exists() or proc.poll() is not None,  # noqa: B023
                       f"the listener of uid {uid}")
            assert proc.poll() is None, "listener died"
        for uid, marker in markers.items():
            subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                            str(marker)], check=True)
        names = {m.name for m in markers.values()}
        got: set[str] = set()
        lost = False

        def fanned_out() -> bool:
            # root's listener gets every exit of a busy machine and may be told of a
            # loss: then a marker journaled counts as fanned out (same daemon step)
            nonlocal lost
            for event in witness.poll(0.1):
                if isinstance(event, ExitRecord):
                    got.add(event.task.ac_comm or "")
                else:
                    lost = True
            if lost and not names <= got:
                root.status(flush=True)
                got.update(n for n in names - got if root.history(comm=n))
            return names <= got
        wait_until(fanned_out, "the three markers' exits at root's listener", timeout=40)
    done.touch()
    seen = [json.loads(p.communicate(timeout=40)[0]) for p in procs]
    assert seen == [[65534], [40000]]


class _Readers(threading.Thread):
    """Reads every connection as fast as it can, counting exits of ``comm`` and the
    records the daemon says it dropped for each (its ENOBUFS notices)."""

    def __init__(self, conns: list[Connection], comm: str) -> None:
        super().__init__(daemon=True)
        self.conns, self.comm = conns, comm
        self.counts = [0] * len(conns)
        self.lost = [0] * len(conns)
        self.done = threading.Event()

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for i, c in enumerate(self.conns):
            c.sock.setblocking(False)
            sel.register(c.sock.fileno(), selectors.EVENT_READ, i)
        while not self.done.is_set():
            for key, _ in sel.select(0.1):
                self._read(key.data)
        sel.close()

    def _read(self, i: int) -> None:
        conn = self.conns[i]
        while True:
            try:
                n = conn.sock.recv()
            except BlockingIOError:
                return
            for e in ts.decode(conn.sock.view, conn.family.id, n):
                if isinstance(e, ExitRecord):
                    self.counts[i] += e.task.ac_comm == self.comm
                elif isinstance(e, nl.ErrorReply) and e.error == errno.ENOBUFS:
                    self.lost[i] += e.ext_offset or 1


def test_slow_client_loses_only_its_own_records() -> None:
    """100 clients listen while one stalls: the others get every exit; the stalled
    one loses records, is told how many (a Lost event), and nobody waits for it.
    Every client gets every exit on the machine: under other load the readers (one
    thread) may fall behind too, and then they must have been told of their loss."""
    small = RunningDaemon(None, "--client-queue-records", "400")
    clients = [Connection(socket_path=small.socket) for _ in range(100)]
    owner = Client("daemon", socket_path=small.socket)
    stalled = owner.listen()
    exe = unique_command(small.base, "slow")
    readers = _Readers(clients, exe.name)
    try:
        for c in clients:
            c.register("0-1")
        readers.start()
        n = 1000  # more than the stalled socket's buffer (~150) and queue (400) hold
        for _ in range(n):
            subprocess.run([str(exe)], check=True)
            time.sleep(0.001)  # pacing, not sync: a rate the 100 readers (one thread) keep
        def pairs() -> list[tuple[int, int]]:  # (exits of ours, records told lost)
            return list(zip(readers.counts, readers.lost, strict=True))
        with contextlib.suppress(AssertionError):
            wait_until(lambda: all(got >= n or lost for got, lost in pairs()),
                       "every reader's exits or a loss notice", 30)
        # each got every one, or was told it lost some: nothing silent, nothing extra
        assert all(got == n or lost > 0 for got, lost in pairs()), pairs()
        assert all(got <= n for got, _ in pairs()), pairs()
        events = stalled.drain()

        def told() -> bool:  # the daemon sends the rest, with the loss notice, once we read
            events.extend(stalled.drain())
            return any(isinstance(e, Lost) for e in events)
        wait_until(told, "the stalled listener's loss notice", 10)
        got = sum(isinstance(e, ExitRecord) and e.task.ac_comm == exe.name for e in events)
        lost = sum(e.records for e in events if isinstance(e, Lost))
        assert lost > 0 and got < n and stalled.lost == lost
        status = owner.status()
        assert status["clients"] >= 101 and status["counters"]["client_dropped"] >= lost
    finally:
        readers.done.set()
        readers.join()
        stalled.close()
        owner.close()
        for c in clients:
            c.close()
        small.close()


def test_history_and_status_through_the_cli(daemon: RunningDaemon) -> None:
    marker = unique_command(daemon.base, "hist").name
    for _ in range(3):
        subprocess.run([f"{daemon.base}/{marker}"], check=True)
    with Client("daemon", socket_path=daemon.socket) as c:  # a history query flushes
        wait_until(lambda: len(c.history(comm=marker)) >= 3,
                   "the three exits in the journal", 10)
    cli = [sys.executable, "-m", "pytaskstats", "--socket", daemon.socket]
    out = subprocess.run([*cli, "history", "--comm", marker, "--json"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    rows = [json.loads(line) for line in out]
    assert len(rows) == 3 and all(r["ac_comm"] == marker for r in rows)
    assert all(r["ac_utime"] is not None and "time_ns" in r and "cpu" in r for r in rows)
    grouped = subprocess.run([*cli, "history", "--comm", marker, "--group-by", "comm",
                              "--json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(grouped)["exits"] == 3
    status = subprocess.run([*cli, "status", "--json"], capture_output=True, text=True,
                            check=True).stdout
    doc = json.loads(status)["daemon"]
    assert doc["counters"]["received"] >= 3 and doc["kernel"]["struct_version"] >= 8
    bad = subprocess.run([*cli, "history", "--sort", "nonsense"], capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 2 and "nonsense" in bad.stderr  # a usage error


def test_cli_commands_work_for_a_non_root_user(daemon: RunningDaemon,
                                               nobody_env: dict[str, str]) -> None:
    """run and get, as nobody, through the daemon (auto backend); listen and cgroup
    are covered above."""
    env = {**nobody_env, "TASKSTATS_SOCKET": daemon.socket}
    run = as_nobody(env, "-m", "pytaskstats", "run", "--json", "--",
                    "sh", "-c", "/bin/true; /bin/echo hi > /dev/null; exit 4")
    assert run.returncode == 4, run.stderr
    assert "using taskstatsd" in run.stderr  # the fallback is said
    doc = json.loads(run.stdout)
    comms = sorted(p["comm"] for p in doc["processes"])
    assert comms == ["echo", "sh", "true"] and doc["lost"] == 0
    get = as_nobody(env, "-m", "pytaskstats", "get", "1")
    assert get.returncode == 1 and "permission denied" in get.stderr


IN_CONTAINER = """
import os, subprocess, sys, time
from pytaskstats import AccessDenied, Client, ExitRecord, NoSuchTask
path = sys.argv[1]
out = []
try:
    Client("kernel").pid(os.getpid())
except AccessDenied as err:
    out.append("kernel refused: " + ("taskstatsd" in str(err)) * "names the daemon")
with Client(socket_path=path) as c:
    out.append(f"backend {c.backend}")
    me = c.pid(os.getpid())
    out.append(f"me {me.ac_pid == os.getpid()} uid {me.ac_uid} ppid {me.ac_ppid}")
    try:
        c.pid(999999)
    except NoSuchTask:
        out.append("outside invisible")
    with c.listen() as listener:
        children = []
        for _ in range(3):  # short-lived: placed at fork by the proc connector's events
            child = subprocess.Popen(["sleep", "0.05"])
            child.wait()
            children.append(child.pid)
        deadline = time.monotonic() + 20
        mine = []
        while len(mine) < 3 and time.monotonic() < deadline:
            mine += [e for e in listener.poll(0.2) if isinstance(e, ExitRecord)
                     and e.task.ac_comm == "sleep"]
        pids = sorted(e.pid for e in mine)  # CPUs' exits may come in either order
        out.append(f"exit pid {pids == sorted(children)} uid {mine[0].task.ac_uid}")
print("\\n".join(out))
"""


def test_a_container_sees_its_own_pids_and_uids(daemon: RunningDaemon,
                                                nobody_env: dict[str, str]) -> None:
    """A client in new user and PID namespaces (started by nobody, mapped to root)."""
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "--pid",
         "--user", "--map-root-user", "--fork", "--mount-proc", NOBODY_PYTHON, "-c",
         IN_CONTAINER, daemon.socket], capture_output=True, text=True, timeout=60,
        env=nobody_env, cwd="/", check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "kernel refused: names the daemon", "backend daemon", "me True uid 0 ppid 0",
        "outside invisible", "exit pid True uid 0"]


def test_bulk_query_can_skip_tasks_the_policy_refuses(daemon: RunningDaemon,
                                                      nobody_env: dict[str, str]) -> None:
    # nobody's own tasks only: others of this uid may run on the machine and be seen
    code = ("import os, sys\nfrom pytaskstats import Client, AccessDenied\n"
            "ids = [int(p) for p in os.listdir('/proc') if p.isdigit()]\n"
            "c = Client('daemon', socket_path=sys.argv[1])\n"
            "got = c.pids(ids, skip_denied=True)\n"
            "mine = os.getpid() in got and all(r.ac_uid == os.getuid() for r in got.values())\n"
            "print(mine, len(got.denied) > 0 and not set(got.denied) & set(got))\n"
            "try:\n  c.pids(ids)\nexcept AccessDenied:\n  print('strict raises')\n")
    done = as_nobody(nobody_env, "-c", code, daemon.socket)
    assert done.stdout.split() == ["True", "True", "strict", "raises"], done.stderr


def test_daemon_on_proc_without_taskstats(tmp_path: Path) -> None:
    """taskstatsd --source procfs (as on a kernel without TASKSTATS): queries from /proc
    with absent fields still None at the client, exits from the proc connector."""
    d = RunningDaemon(None, "--source", "procfs", "--procfs-interval-s", "0.2")
    try:
        with Client("daemon", socket_path=d.socket) as c, c.listen() as listener:
            me = c.pid(os.getpid())
            assert me.source == "procfs" and me.ac_pid == os.getpid()
            assert me.swapin_count is None and me.ac_utime is not None  # absent, not 0
            worker = unique_command(tmp_path, "procw", source=sys.executable)
            # lives 1 s (the behaviour under test): sampled while it runs, every 0.2 s
            subprocess.run([str(worker), "-c", "import time; sum(range(2_000_000)); "
                            "time.sleep(1)"], check=True)
            mine: list[ExitRecord] = []

            def seen() -> bool:
                mine.extend(e for e in listener.poll(0.2) if isinstance(e, ExitRecord)
                            and e.task.ac_comm == worker.name)
                return bool(mine)
            wait_until(seen, "the worker's exit", 10)
            assert mine and mine[0].task.source == "procfs" and mine[0].ended_process
            assert (mine[0].task.ac_utime or 0) > 0  # sampled while it ran
            status = c.status()
        assert status["kernel"]["source"] == "procfs"
        assert "proc connector" in status["kernel"]["blind_spot"]
    finally:
        d.close()
