"""taskstatsd's access policy against the real kernel: admin rights come from the
socket (SO_PEERCRED, SO_PEERGROUPS at connect), never from /proc of the peer's pid;
GET, exit records, history and status follow the /proc rule and the client's PID
namespace (see daemon/policy.py).  Hostile cases run as nobody, and as nobody in
new user and PID namespaces."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytaskstats import Client, ExitRecord, connector, extproto
from pytaskstats.daemon.policy import ExitPolicy
from pytaskstats.transport import ConnectorSocket

from .conftest import NOBODY_PYTHON, WAITS_FOR_EXITS, as_nobody, require_kernel, wait_until
from .daemon_util import RunningDaemon
from .test_journal import decoded

pytestmark = [pytest.mark.kernel, WAITS_FOR_EXITS]
ADMIN_GID = 43210

# Connects as uid/gid 65534 without groups (saved uid 0 kept), then, while the
# daemon is stopped and has not accepted yet, joins the admin group in /proc's
# eyes; then asks for pid 1 as nobody.
REGROUP = """
import os, socket, struct, sys
from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
os.setgroups([])
os.setresgid(65534, 65534, 0)
os.setresuid(65534, 65534, 0)
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])                          # connect(): creds recorded now
os.setresuid(0, 0, 0)
os.setgroups([int(sys.argv[2])])
os.setresuid(65534, 65534, 0)
print("connected", flush=True)
sys.stdin.readline()                            # the daemon resumes and accepts
s.send(genl.encode_get_family(ts.FAMILY_NAME, seq=1))
family = genl.decode_family(nl.split_messages(s.recv(65536))[0]).id
s.send(ts.encode_get_pid(family, 1, seq=2))
reply = s.recv(65536)
kind, = struct.unpack_from("=H", reply, 4)
print("denied" if kind == 2 and struct.unpack_from("=i", reply, 16)[0] == -1 else "admin")
"""


@pytest.fixture
def daemon() -> Iterator[RunningDaemon]:
    require_kernel()
    d = RunningDaemon(None, "--admin-group", str(ADMIN_GID))
    try:
        yield d
    finally:
        d.close()


def test_admin_groups_come_from_the_socket_not_proc(daemon: RunningDaemon) -> None:
    """Old code read Groups: from /proc/<peer pid>/status after accept and made
    this peer admin; its groups at connect() did not include the admin group."""
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        proc = subprocess.Popen([sys.executable, "-c", REGROUP, daemon.socket,
                                 str(ADMIN_GID)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "connected"
        groups = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Groups:\t{ADMIN_GID}" in groups  # /proc says admin group now
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    out, _ = proc.communicate("\n", timeout=30)
    assert out.strip() == "denied"


def test_admin_group_at_connect_is_admin(daemon: RunningDaemon) -> None:
    code = REGROUP.replace("os.setgroups([])", f"os.setgroups([{ADMIN_GID}])")
    out = subprocess.run([sys.executable, "-c", code, daemon.socket, str(ADMIN_GID)],
                         input="\n", capture_output=True, text=True, timeout=30,
                         check=False)
    assert out.stdout.split() == ["connected", "admin"], out.stderr


# As nobody: start a task, then compare the daemon's GET with /proc/PID/io.
GET_VS_PROC = """
import os, subprocess, sys, time
from pytaskstats import AccessDenied, Client
kind = sys.argv[2]
argv = (["passwd"] if kind == "setuid" else
        [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0);"
         "print(flush=True); sys.stdin.read()"] if kind == "nodump" else ["cat"])
p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)
if kind == "nodump":
    p.stdout.readline()                          # non-dumpable from here on
elif kind == "setuid":
    deadline = time.monotonic() + 10
    while open(f"/proc/{p.pid}/status").read().split("Uid:")[1].split()[1] != "0":
        assert time.monotonic() < deadline, "passwd never became setuid root"
        time.sleep(0.01)                         # until it exec'd the setuid binary
try:
    open(f"/proc/{p.pid}/io").close()
    proc = "readable"
except PermissionError:
    proc = "denied"
try:
    Client("daemon", socket_path=sys.argv[1]).pid(p.pid)
    daemon = "readable"
except AccessDenied:
    daemon = "denied"
p.kill()
print(proc, daemon)
"""


@pytest.mark.parametrize(("kind", "expected"), [("setuid", "denied"), ("nodump", "denied"),
                                                ("plain", "readable")])
def test_get_follows_the_proc_io_rule(daemon: RunningDaemon, nobody_env: dict[str, str],
                                      kind: str, expected: str) -> None:
    """Old code answered nobody's GET for its setuid passwd and non-dumpable tasks."""
    done = as_nobody(nobody_env, "-c", GET_VS_PROC, daemon.socket, kind)
    assert done.stdout.split() == [expected, expected], done.stderr


# ---------------------------------------------------------------- exit records, history

# A client run as nobody (or in a container) and driven line by line on stdin; each
# command answers one JSON line.  It listens from the start; "sync" runs a marker
# and reads until the marker's exit: every exit published before it has arrived, and
# every proc connector event emitted before has been read by the daemon.
AGENT = r"""
import json, subprocess, sys, time
from pytaskstats import Client, ExitRecord
client = Client("daemon", socket_path=sys.argv[1])
listener = client.listen()
got, alive = [], {}
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    cmd, args = line.split(None, 1)[0], line.split()[1:]
    if cmd == "run":                               # a program, to its end
        p = subprocess.Popen(args)
        p.wait()
        out = p.pid
    elif cmd in ("start", "nodump"):               # a program that lives until "stop"
        if cmd == "nodump":                        # ... made non-dumpable at once
            args = [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(None).prctl("
                    "4, 0, 0, 0, 0); print(flush=True); sys.stdin.read()"]
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        alive[p.pid] = p
        if cmd == "nodump":
            p.stdout.readline()
        out = p.pid
    elif cmd == "stop":
        p = alive.pop(int(args[0]))
        p.stdin.close()
        p.wait()
        out = p.pid
    elif cmd == "sync":  # with "cat": a GET places it in a container's view first
        p = subprocess.Popen(args, stdin=subprocess.PIPE)
        if args == ["cat"]:
            client.pid(p.pid)
        p.stdin.close()
        p.wait()
        deadline = time.monotonic() + 15
        while p.pid not in got and time.monotonic() < deadline:
            got += [e.pid for e in listener.poll(0.1) if isinstance(e, ExitRecord)]
        out = sorted(got) if p.pid in got else None
    elif cmd == "drain":  # after a reply, what was published before it has arrived
        client.status()
        got += [e.pid for e in listener.poll(0) if isinstance(e, ExitRecord)]
        out = sorted(got)
    elif cmd == "history":
        out = client.history(**json.loads(line.split(None, 1)[1]))
    elif cmd == "status":
        out = client.status()
    elif cmd == "reconnect":  # to a restarted daemon
        client = Client("daemon", socket_path=sys.argv[1])
        listener, got = client.listen(), []
        out = True
    print(json.dumps(out), flush=True)
"""


class Agent:
    """The AGENT script as a process: ``ask`` sends a command and returns its answer."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd="/")
        assert self.ask(None) == "ready", self.stderr()

    def ask(self, command: str | None) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the agent died: {self.stderr()}"
        return json.loads(line)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
CONTAINER = ["unshare", "--pid", "--user", "--map-root-user", "--fork", "--mount-proc"]


@contextlib.contextmanager
def agent(daemon: RunningDaemon, env: dict[str, str], *, contained: bool = False
          ) -> Iterator[Agent]:
    """The agent as nobody, or as nobody in new user and PID namespaces."""
    argv = [*NOBODY, *(CONTAINER if contained else []), NOBODY_PYTHON, "-c", AGENT,
            daemon.socket]
    a = Agent(argv, env)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture
def suid_dir() -> Iterator[Path]:
    """A directory others can enter, on a mount that honours setuid bits (/tmp may be
    nosuid), with: a setuid-root copy of true, a plain copy of true and of cat, and
    a symlink to true (a task's comm is the name it was exec'd by).  Removed after."""
    for base in ("/tmp", "/var/tmp", "/root"):
        options = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", "-T", base],
                                 capture_output=True, text=True, check=False).stdout
        if options and "nosuid" not in options.split(","):
            break
    else:
        pytest.skip("no mount without nosuid for a setuid test binary")
    where = Path(tempfile.mkdtemp(prefix="tsd-suid-", dir=base))
    try:
        where.chmod(0o755)
        for name, source, mode in (("suidtrue", "true", 0o4755), ("plaintrue", "true", 0o755),
                                   ("plaincat", "cat", 0o755)):
            program = shutil.which(source)
            assert program is not None
            shutil.copyfile(program, where / name)
            os.chmod(where / name, mode)
        (where / "tsmark").symlink_to(shutil.which("true") or "/bin/true")
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _status(daemon: RunningDaemon) -> extproto.Status:
    with Client("daemon", socket_path=daemon.socket) as c:
        doc = c.status()
    return doc


def _root_sees(listener: Any, pids: set[int], seen: set[int],
               daemon: RunningDaemon | None = None) -> None:
    """Read ``listener`` (root's) until every pid of ``pids`` exited there.  Root's
    listener gets every exit of a busy machine: when it is told of a loss (its
    queue overflowed), a pid journaled by ``daemon`` counts as processed."""
    deadline = time.monotonic() + 30
    lost = False
    while not pids <= seen and time.monotonic() < deadline:
        for event in listener.poll(0.1):
            if isinstance(event, ExitRecord):
                seen.add(event.pid)
            else:
                lost = True
        if lost and daemon is not None and not pids <= seen:
            seen.update(p for p in pids - seen if _journaled(daemon, p))
    assert pids <= seen, f"root never got the exits of {sorted(pids - seen)} (lost: {lost})"


def _journaled(daemon: RunningDaemon, pid: int) -> bool:
    with Client("daemon", socket_path=daemon.socket) as c:
        c.status(flush=True)
        return bool(c.history(pid=pid))


def test_setuid_exec_reports_an_id_change_before_its_exec(suid_dir: Path) -> None:
    """The kernel fact the exit policy rests on: commit_creds() in the exec of a
    setuid binary sends PROC_EVENT_UID (euid 0) before PROC_EVENT_EXEC."""
    require_kernel()
    events = ConnectorSocket(4 << 20)
    try:
        events.sock.settimeout(5)
        proc = subprocess.run([*NOBODY, str(suid_dir / "suidtrue")], check=True)
        assert proc.returncode == 0
        seen: list[connector.Event] = []
        execs = 0
        child = None
        deadline = time.monotonic() + 10
        while execs < 2 and time.monotonic() < deadline:
            for ev in connector.decode(events.view, events.recv()):
                if isinstance(ev, connector.Fork) and ev.ppid == os.getpid():
                    child = ev.pid
                if ev.pid == child and not isinstance(ev, connector.Fork):
                    seen.append(ev)
                    execs += isinstance(ev, connector.Exec)
    finally:
        events.close()
    assert execs == 2, seen  # setpriv, then the setuid copy
    first = next(i for i, ev in enumerate(seen) if isinstance(ev, connector.Exec))
    between = seen[first + 1:[i for i, ev in enumerate(seen)
                              if isinstance(ev, connector.Exec)][1]]
    assert any(isinstance(ev, connector.IdChange) and ev.kind == "uid" and ev.real == 65534
               and ev.effective == 0 for ev in between), seen


def _exit_of(pid: int, exe: Path | None) -> ExitRecord:
    """An exit record of process ``pid`` run from ``exe`` (None: never learned)."""
    base = decoded()
    st = exe.stat() if exe is not None else None
    task = base.task._replace(ac_exe_dev=st.st_dev if st else 1,
                              ac_exe_inode=st.st_ino if st else 1)
    return dataclasses.replace(base, task=task, pid=pid, tgid=pid)


def test_exit_verdicts_follow_the_events(suid_dir: Path) -> None:
    """ExitPolicy alone, fed synthetic events about tasks gone before /proc could be
    read (pids above pid_max): a fork inherits, an exec is judged by its executable,
    an id change hides (real != effective) or makes unknown until the next exec;
    unknowns are counted."""
    policy = ExitPolicy(exe_dirs=[str(suid_dir)])
    me, pid = os.getpid(), 1 << 23  # never a pid: PID_MAX_LIMIT is 1 << 22
    verdicts = []
    for n, (ids, exe) in enumerate([
            (None, suid_dir / "plaintrue"),  # a learned plain executable: True
            (None, None),  # an executable never learned: unknown
            (None, suid_dir / "suidtrue"),  # a learned setuid one: hidden
            ((65534, 0), suid_dir / "plaintrue"),  # euid 0 as exec'd setuid: hidden
            # real = effective, then an exec: saved/fs ids = effective, the exe decides
            ((65534, 65534), suid_dir / "plaintrue"),
            ((65534, 65534), None)]):  # ... or not, when it is never learned
        child = pid + n
        policy.event(connector.Fork(child, child, me, 0, me))
        if ids is not None:
            policy.event(connector.IdChange(child, child, "uid", *ids))
        policy.event(connector.Exec(child, child))
        verdicts.append(policy.owner_sees(_exit_of(child, exe)))
    child = pid + 8  # real = effective after its exec: saved/fs ids unknown
    policy.event(connector.Fork(child, child, me, 0, me))
    policy.event(connector.Exec(child, child))
    policy.event(connector.IdChange(child, child, "gid", 65534, 65534))
    verdicts.append(policy.owner_sees(_exit_of(child, suid_dir / "plaintrue")))
    policy.event(connector.Fork(pid + 9, pid + 9, me, 0, me))
    verdicts.append(policy.owner_sees(_exit_of(pid + 9, None), complete=False))
    verdicts.append(policy.owner_sees(_exit_of(pid + 10, None)))  # never forked
    assert verdicts == [True, None, False, False, True, None, None, None, None]
    assert policy.counters["policy_unknown"] == 5 and policy.counters["policy_hidden"] == 2
    assert not {pid + n for n in range(11)} & set(policy.tasks)  # forgotten at exit


def test_the_connector_sends_only_the_kinds_asked_for() -> None:
    """taskstatsd subscribes to fork, exec and id events only (Linux 6.6+ filters):
    no exit events, which it does not need, reach its socket."""
    require_kernel()
    if not connector.filters_events(os.uname().release):
        pytest.skip("this kernel sends every kind of event (filters came in 6.6)")
    wanted = (connector.PROC_EVENT_FORK | connector.PROC_EVENT_EXEC
              | connector.PROC_EVENT_UID | connector.PROC_EVENT_GID)
    events = ConnectorSocket(4 << 20, events=wanted)
    try:
        events.sock.settimeout(5)
        first = subprocess.Popen(["true"])
        first.wait()
        last = subprocess.Popen(["true"])
        last.wait()
        seen: list[connector.Event] = []
        deadline = time.monotonic() + 10
        while not any(isinstance(e, connector.Exec) and e.pid == last.pid for e in seen):
            assert time.monotonic() < deadline, "the second task's exec never came"
            seen += connector.decode(events.view, events.recv())
    finally:
        events.close()
    # events broadcast between bind() and the subscription (while other listeners
    # exist) come unfiltered: look from the first task's fork on
    start = next(i for i, e in enumerate(seen) if isinstance(e, connector.Fork)
                 and e.pid == first.pid)
    assert {type(e) for e in seen[start:]} <= {connector.Fork, connector.Exec,
                                               connector.IdChange}




def test_exit_records_follow_the_proc_rule(fresh_daemon: RunningDaemon, suid_dir: Path,
                                           nobody_env: dict[str, str]) -> None:
    """nobody's listener gets the exits of its own plain short-lived programs (a first
    run of true; a copy of true in a directory learned from a live sibling), not
    that of a setuid-root program it ran; root's listener gets them all; the policy
    counts it.  The old daemon sent nobody every exit of its uid."""
    daemon = fresh_daemon
    before = _status(daemon)["counters"]
    with Client("daemon", socket_path=daemon.socket) as root, root.listen() as mine, \
            agent(daemon, nobody_env) as a:
        plain = {a.ask("run /bin/true")}
        hidden = {a.ask(f"run {suid_dir / 'suidtrue'}")}
        cat = a.ask(f"start {suid_dir / 'plaincat'}")  # its directory is learned alive
        assert a.ask(f"sync {suid_dir / 'tsmark'}") is not None
        plain |= {a.ask(f"run {suid_dir / 'plaintrue'}"), a.ask(f"stop {cat}")}
        _root_sees(mine, plain | hidden, set(), daemon)
        got = set(a.ask(f"sync {suid_dir / 'tsmark'}") or [])
    assert not hidden & got, (hidden, got)
    assert plain <= got, (plain, got)
    after = _status(daemon)["counters"]
    assert after["policy_hidden"] >= before["policy_hidden"] + len(hidden)


def test_exit_of_a_non_dumpable_task_is_hidden(fresh_daemon: RunningDaemon,
                                               nobody_env: dict[str, str]) -> None:
    """A task that called prctl(PR_SET_DUMPABLE, 0) (its /proc/PID/io is root's from
    then on) is seen by the periodic sample: its exit reaches root, not nobody."""
    daemon = fresh_daemon
    with Client("daemon", socket_path=daemon.socket) as root, root.listen() as mine, \
            agent(daemon, nobody_env) as a:
        nodump = a.ask("nodump")
        samples = _status(daemon)["counters"].get("policy_samples", 0)
        wait_until(lambda: _status(daemon)["counters"].get("policy_samples", 0)
                   >= samples + 2, "two dumpability samples (one began after the prctl)")
        assert a.ask(f"stop {nodump}") == nodump
        _root_sees(mine, {nodump}, set(), daemon)
        got = a.ask("sync /bin/true")
    assert got is not None and nodump not in got
    assert _status(daemon)["counters"]["policy_samples"] >= samples + 2


def test_history_keeps_to_the_owner(fresh_daemon: RunningDaemon, suid_dir: Path,
                                    nobody_env: dict[str, str]) -> None:
    """nobody's history holds its plain exits, not the setuid one it ran (root's
    does).  The old daemon filtered history by uid only."""
    daemon = fresh_daemon
    with agent(daemon, nobody_env) as host:
        suid = host.ask(f"run {suid_dir / 'suidtrue'}")
        true = host.ask("run /bin/true")
        assert host.ask(f"sync {suid_dir / 'tsmark'}") is not None
        mine = {r["pid"] for r in host.ask('history {"comm": "true"}')}
        theirs = {r["pid"] for r in host.ask('history {"comm": "suidtrue"}')}
        totals = host.ask('history {"comm": "suidtrue", "totals": true}')
    with Client("daemon", socket_path=daemon.socket) as root:
        # by pid: a whole answer is cut at history_max_rows on a busy machine
        every = {r["pid"] for p in (suid, true) for r in root.history(kind="exit", pid=p)}
    assert {suid, true} <= every
    assert true in mine
    assert suid not in theirs and totals[0]["exits"] == 0


def test_history_in_a_container_keeps_to_its_namespace(
        fresh_daemon: RunningDaemon, suid_dir: Path, nobody_env: dict[str, str]) -> None:
    """Finding 4: a nobody client in its own user+pid namespace gets only its
    namespace's rows, with its pids and uids.  The old daemon gave it every host row
    of its uid (here: a host task of nobody named tsmark)."""
    daemon = fresh_daemon
    with agent(daemon, nobody_env) as host:
        marker = host.ask(f"sync {suid_dir / 'tsmark'}")
        assert marker is not None
        assert host.ask('history {"comm": "tsmark"}'), "the host row is not there"
        with agent(daemon, nobody_env, contained=True) as box:
            cat = box.ask("start cat")
            assert box.ask("sync cat") is not None  # its fork was read while it lived
            assert box.ask(f"stop {cat}") == cat
            assert box.ask("sync cat") is not None
            rows = box.ask("history {}")
            own = box.ask(f'history {{"pid": {cat}}}')
            groups = box.ask('history {"group_by": "uid"}')
    assert rows, "the container saw none of its rows"
    assert {r["ac_comm"] for r in rows} == {"cat"}, rows
    assert cat in {r["pid"] for r in rows}
    assert [(r["pid"], r["ac_pid"], r["ac_ppid"]) for r in own] == [(cat, cat, 1)]
    assert {(r["ac_uid"], r["ac_gid"]) for r in rows} == {(0, 0)}
    assert [(g["ac_uid"], g["exits"]) for g in groups] == [(0, len(rows))]


def test_status_shows_others_health_not_host_details(fresh_daemon: RunningDaemon,
                                                     nobody_env: dict[str, str]) -> None:
    """nobody, and nobody in a container, get health and loss counters, never host
    paths, host pids or other clients' numbers (the old daemon sent everything)."""
    daemon = fresh_daemon
    with agent(daemon, nobody_env) as host, \
            agent(daemon, nobody_env, contained=True) as box:
        docs = [host.ask("status"), box.ask("status")]
    for doc in docs:
        assert set(doc["daemon"]) == {"version", "started_ns", "uptime_s"}, doc
        assert "lost_overrun" in doc["counters"] and "policy_unknown" in doc["counters"]
        assert not {"clients", "listeners", "metrics"} & set(doc)
        assert doc["client"]["uid"] == 65534 and not doc["client"]["admin"]
        assert doc["exit_policy"]["state"] == "on"
    assert docs[1]["client"]["namespaced"] and not docs[0]["client"]["namespaced"]
    cli = as_nobody(nobody_env, "-m", "pytaskstats", "--socket", daemon.socket, "status")
    assert cli.returncode == 0 and "exit records for non-admin listeners: own" in cli.stdout
    assert str(daemon.state_dir) not in cli.stdout, cli.stdout
    full = _status(daemon)
    assert full["daemon"]["pid"] == daemon.pid and full["daemon"]["socket"] == daemon.socket


# taskstatsd as usual, but the proc connector refuses it (as outside the initial
# network namespace, where it answers ECONNREFUSED)
NO_CONNECTOR = """
import sys
from pytaskstats.daemon import main
from pytaskstats.errors import Unsupported
def refused(*args, **kwargs):
    raise Unsupported("the proc connector refused us (Connection refused)")
main.ConnectorSocket = refused
sys.exit(main.main(sys.argv[1:]))
"""


@contextlib.contextmanager
def daemon_without_connector() -> Iterator[RunningDaemon]:
    """A real taskstatsd whose proc connector subscription fails."""
    require_kernel()
    d = RunningDaemon.__new__(RunningDaemon)
    d.base = Path(tempfile.mkdtemp(prefix="taskstatsd-", dir="/tmp"))
    d.base.chmod(0o755)
    d.socket, d.state_dir = str(d.base / "taskstatsd.sock"), d.base / "state"
    d.proc = subprocess.Popen(
        [sys.executable, "-c", NO_CONNECTOR, "--foreground", "--socket", d.socket,
         "--state-dir", str(d.state_dir), "--config", os.devnull], stderr=subprocess.PIPE)
    try:
        proc = d.proc
        wait_until(lambda: os.path.exists(d.socket) or proc.poll() is not None, "the socket")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield d
    finally:
        d.close()


def test_without_the_proc_connector_others_get_no_exits(nobody_env: dict[str, str]) -> None:
    """Fail closed: no events, no verdicts; status says why.  The old daemon sent
    nobody its exits regardless."""
    with daemon_without_connector() as daemon, \
            Client("daemon", socket_path=daemon.socket) as root, root.listen() as mine, \
            agent(daemon, nobody_env) as a:
        true = a.ask("run /bin/true")
        _root_sees(mine, {true}, set(), daemon)
        got = a.ask("drain")
        rows = a.ask("history {}")
        status = a.ask("status")
    assert true not in got, (true, got)
    assert rows == []
    policy = status["exit_policy"]
    assert policy["state"] == "off" and "proc connector" in policy["why"], policy
    assert policy["non_admin_exits"] == "none"
