"""A namespaced client's pids name tasks of its namespace only, even after the
kernel hands one of their host pids out again (pid_max is often 32768): taskstatsd
checks its pid map in /proc before it answers (daemon/namespaces.py).  Hostile
review: nobody in a PID namespace read a task of nobody's outside it, by asking
again for the pid of a child that had exited."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pytaskstats.daemon.namespaces import NsView
from pytaskstats.errors import NoSuchTask

from .conftest import NOBODY_PYTHON, wait_until
from .daemon_util import RunningDaemon

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
CONTAINER = ["unshare", "--pid", "--user", "--map-root-user", "--fork", "--mount-proc"]

# In the namespaces, as nobody: start a sleeper and ask for it (taskstatsd learns
# its host pid); on a line read, end it; on the next, ask for its pid again and
# print what came back: "none" or the record's comm and pid.
CLIENT = """
import subprocess, sys
from pytaskstats import Client
from pytaskstats.errors import NoSuchTask
with Client("daemon", socket_path=sys.argv[1]) as c:
    child = subprocess.Popen(["sleep", "60"])
    assert c.pid(child.pid).ac_comm == "sleep"
    print(child.pid, flush=True)
    sys.stdin.readline()
    child.kill(); child.wait()
    print("ended", flush=True)
    sys.stdin.readline()
    try:
        r = c.pid(child.pid)
        print(f"{r.ac_comm} {r.ac_pid}", flush=True)
    except NoSuchTask:
        print("none", flush=True)
    except Exception as err:
        print(type(err).__name__, err, flush=True)
"""


def _children(pid: int) -> list[int]:
    """The children of ``pid`` (its main thread's)."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _at_pid(host: int, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` (which execs, keeping its pid) as host pid ``host`` through
    ns_last_pid; other tasks of a shared machine may take the pid first: retried
    for 10 s."""
    deadline = time.monotonic() + 10
    while True:
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(host - 1))
        proc = subprocess.Popen(argv)
        if proc.pid == host:
            return proc
        proc.kill()
        proc.wait()
        if time.monotonic() > deadline:
            pytest.fail(f"host pid {host} could not be had again")


@pytest.mark.kernel
def test_a_reused_host_pid_is_not_the_namespaces_task(
        daemon: RunningDaemon, nobody_env: dict[str, str]) -> None:
    """Before the fix: the answer was the outsider's record ("sleep" with the ended
    child's pid in the namespace)."""
    client = subprocess.Popen([*NOBODY, *CONTAINER, NOBODY_PYTHON, "-c", CLIENT,
                               daemon.socket], env=nobody_env, cwd="/",
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    outsider = None
    try:
        assert client.stdin is not None and client.stdout is not None
        assert client.stdout.readline().strip().isdigit()  # the sleeper runs
        # setpriv execs unshare, whose one child is the client's python, whose one
        # child is the sleeper
        python = wait_until(lambda: _children(client.pid) or None, "the client")[0]
        host = _children(python)[0]
        client.stdin.write(b"\n")
        client.stdin.flush()
        assert client.stdout.readline() == b"ended\n"
        outsider = _at_pid(host, [*NOBODY, "sleep", "60"])  # nobody's, outside
        comm = Path(f"/proc/{host}/comm")
        wait_until(lambda: comm.read_text() == "sleep\n", "the outsider's exec")  # dumpable
        client.stdin.write(b"\n")
        client.stdin.flush()
        assert client.stdout.readline().decode().split() == ["none"]
    finally:
        if outsider is not None:
            outsider.kill()
            outsider.wait()
        client.kill()
        client.communicate()  # and close its pipes


def _view(proc: Path) -> NsView:
    """A client's view of a PID namespace one level down (not the host's) that
    learned earlier: its pid 2 was host pid 100."""
    view = NsView.__new__(NsView)
    view.proc, view.pidns, view.userns, view.level, view.chain = str(proc), 1, 1, 1, "x/y"
    view.uid_map = view.gid_map = [(0, 65534, 1)]
    view.to_host, view.to_ns = {2: 100}, {100: 2}
    view.unattributed, view._scanned = 0, 0.0
    return view


def test_a_host_pid_seen_outside_is_forgotten(tmp_path: Path) -> None:
    """Host pid 100 now names a task of the host's PID namespace (its ns/pid is ours,
    taskstatsd's): neither the client's pid 2 nor an exit of pid 100 is placed in the
    client's namespace any more (before: pid 2, from what was learned)."""
    (tmp_path / "100" / "task" / "100").mkdir(parents=True)
    (tmp_path / "100" / "ns").mkdir()
    (tmp_path / "100" / "ns" / "pid").symlink_to("/proc/self/ns/pid")
    assert _view(tmp_path).ns_pid(100) is None
    with pytest.raises(NoSuchTask):
        _view(tmp_path).host_pid(2)
    gone = _view(tmp_path / "none")  # a task gone (reaped): placed by what was learned
    assert gone.ns_pid(100) == 2
