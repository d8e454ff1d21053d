"""Shared fixtures: golden bytes, the real kernel (root), delay accounting on/off,
waiting on conditions, and locks that keep concurrent test runs (other checkouts on
the same machine) off each other's global switches."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import pytaskstats
from pytaskstats import Client, delayacct

from .daemon_util import RunningDaemon

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))  # expected.py: the fixtures' value rule
T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], what: str, timeout: float = 20.0,
               poll_max: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something true and return that; raise
    AssertionError naming ``what`` after ``timeout`` seconds.  Polls every 5 ms at
    first (or ``poll_max`` if less), backing off to ``poll_max`` (s), so a quick
    condition costs little."""
    deadline = time.monotonic() + timeout
    pause = min(0.005, poll_max)
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(pause)  # the poll interval of a deadline-bounded wait
        pause = min(pause * 2, poll_max)


def unique_command(tmp_path: Path, prefix: str, source: str = "/bin/true") -> Path:
    """A symlink to ``source`` in ``tmp_path`` under a name (its comm: exec takes the
    name it was called by) that no other task on the machine has: ``prefix`` + 6
    random hex digits, at most 15 characters (TASK_COMM_LEN - 1).  Tests count their
    own exits by that comm.  A link, not a copy: the executable stays one taskstatsd
    knows, so a marker reaped before it is read is still shown to its owner (a
    never-seen executable is admin-only: see daemon/policy.py)."""
    name = f"{prefix}{os.urandom(3).hex()}"
    assert len(name) <= 15, name
    exe = tmp_path / name
    exe.symlink_to(os.path.realpath(source))
    return exe


LOCK_DIR = Path("/run/lock") if os.access("/run/lock", os.W_OK) else Path("/tmp")


@contextlib.contextmanager
def machine_lock(name: str, shared: bool = False) -> Iterator[None]:
    """Hold the machine-wide test lock ``name`` (flock on a fixed file in LOCK_DIR):
    exclusive for a test that changes a global (a sysctl), shared for one that only
    relies on it staying put.  Other test runs on this machine (other clones) wait."""
    fd = os.open(LOCK_DIR / f"pytaskstats-tests-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


STORM_LOCK = "exit-storm"
"""The machine lock of host-wide exit storms: a test that floods the machine with
exits (tens of thousands a second) holds it exclusively; a test that needs every
exit on the machine delivered to a listener of its own (no overrun) holds it shared.
Two test runs on one machine then never overlap a storm with a lossless check."""


@pytest.fixture
def no_exit_storm() -> Iterator[None]:
    """Hold the storm lock shared (see STORM_LOCK) for the test."""
    with machine_lock(STORM_LOCK, shared=True):
        yield


WAITS_FOR_EXITS = pytest.mark.usefixtures("no_exit_storm")
"""The mark of a module whose tests wait for exits of their own through a taskstatsd:
no other suite's exit storm meanwhile, as a daemon drops exits (fail-closed) when its
proc connector overruns."""


def fixture_bytes(name: str) -> bytes:
    """A golden datagram from tests/fixtures (see its README)."""
    return (FIXTURES / name).read_bytes()


def _kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for the kernel's TASKSTATS queries"
    if not Path("/proc/sys/kernel/task_delayacct").exists():
        return "this kernel has no delay accounting sysctl"
    return None


def require_kernel() -> None:
    """Skip (with the reason) where the real kernel cannot be used; fail in CI."""
    reason = _kernel_unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the kernel tests, but: {reason}")
    pytest.skip(reason)


@pytest.fixture
def client() -> Iterator[Client]:
    """A kernel Client (root)."""
    require_kernel()
    with Client(backend="kernel") as c:
        yield c


@pytest.fixture
def delayacct_on() -> Iterator[None]:
    """Switch delay accounting on for the test and restore the previous state, even
    on failure, holding the machine-wide ``delayacct`` lock exclusively throughout."""
    require_kernel()
    with machine_lock("delayacct"):
        before = delayacct.status()
        try:
            delayacct.set_enabled(True)
            yield
        finally:
            delayacct.set_enabled(bool(before))


@pytest.fixture
def delayacct_steady() -> Iterator[None]:
    """Keep kernel.task_delayacct as it is for the test (the ``delayacct`` lock,
    shared): for tests whose expectations follow its state.  Not with delayacct_on."""
    with machine_lock("delayacct", shared=True):
        yield


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``kernel`` check for the kernel before any fixture runs (a marker
    added after collection would not reach the fixtures)."""
    if item.get_closest_marker("kernel"):
        require_kernel()


@pytest.fixture
def fresh_daemon() -> Iterator[RunningDaemon]:
    """A taskstatsd of the test's own (the kernel's; not the module's shared one)."""
    require_kernel()
    d = RunningDaemon(None)
    try:
        yield d
    finally:
        d.close()


@pytest.fixture(scope="session")
def nobody_env() -> Iterator[dict[str, str]]:
    """Environment for running pytaskstats as nobody: a world-readable copy of the
    package on PYTHONPATH (the checkout may sit under a private home), in a directory
    of its own (pytest prunes old basetemp directories of concurrent sessions)."""
    base = Path(tempfile.mkdtemp(prefix="pytaskstats-nobody-", dir="/tmp"))
    base.chmod(0o755)
    shutil.copytree(Path(pytaskstats.__file__).parent, base / "pytaskstats",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in base.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        yield {**os.environ, "PYTHONPATH": str(base)}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _world_python() -> str:
    """An interpreter other users (and user namespaces) can run: the system's when it
    is this version, since ours may sit under a private home (as in CI here)."""
    system = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system:
        version = subprocess.run([system, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, check=False).stdout.strip()
        if version == str(sys.version_info[:2]):
            return system
    return sys.executable


NOBODY_PYTHON = _world_python()


def as_nobody(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python3 ARGS`` as uid/gid 65534 with no groups."""
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           NOBODY_PYTHON, *args], capture_output=True, text=True,
                          timeout=60, check=False, env=env, cwd="/")


# A child that does known work, then stops itself so its counters hold still.
WORKER = textwrap.dedent("""
    import os, signal, sys, threading
    path, nthreads = sys.argv[1], int(sys.argv[2])
    with open(path, "wb") as f:
        f.write(b"x" * (256 * 1024)); f.flush(); os.fsync(f.fileno())
    with open(path, "rb") as f:
        f.read()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    import mmap; buf = mmap.mmap(-1, 1 << 18); os.readv(fd, [buf])
    ev = threading.Event()
    def spin():
        sum(range(300_000))
        ev.wait()
    threads = [threading.Thread(target=spin) for _ in range(nthreads)]
    for t in threads: t.start()
    sum(range(2_000_000))
    os.kill(os.getpid(), signal.SIGSTOP)
    ev.set()
""")


def task_states(pid: int) -> list[str]:
    """The state letter of each thread of ``pid``."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
        out.append(stat[stat.rindex(b")") + 2:][:1].decode())
    return out


def wait_for_state(pid: int, state: str) -> None:
    """Wait until every thread of ``pid`` is in ``state`` (e.g. "T")."""
    wait_until(lambda: set(task_states(pid)) == {state},
               f"every thread of task {pid} to reach state {state}")


@pytest.fixture
def worker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    """A stopped worker process (all threads stopped); thread count = the param."""
    threads = getattr(request, "param", 0)
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "f"), str(threads)])
    try:
        wait_for_state(proc.pid, "T")
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def remove_cgroup(path: Path) -> None:
    """rmdir a test cgroup, retrying while the kernel still holds exited tasks."""
    def removed() -> bool:
        try:
            path.rmdir()
        except OSError:  # busy until the kernel has released the exited tasks
            return False
        return True
    with contextlib.suppress(AssertionError):
        wait_until(removed, f"cgroup {path} to be removable", timeout=5)
        return
    path.rmdir()  # raise its error


@contextlib.contextmanager
def known_tasks_in(groups: list[Path]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """New cgroups holding 6 tasks in known states: 3 asleep on a pipe read (S), 1
    stopped (T), and 2 in nanosleep (S, but TASK_FREEZABLE: the kernel's v1 count
    puts them in no state).  Removed afterwards."""
    for group in groups:
        group.mkdir()
    r, w = os.pipe()
    procs = [subprocess.Popen(["cat"], stdin=r, stdout=subprocess.DEVNULL) for _ in range(4)]
    procs += [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    try:
        for p in procs:
            for group in groups:
                (group / "cgroup.procs").write_text(str(p.pid))
        os.kill(procs[0].pid, signal.SIGSTOP)
        wait_for_state(procs[0].pid, "T")
        for p in procs[1:]:
            wait_for_state(p.pid, "S")
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        os.close(r)
        os.close(w)
        for group in groups:
            remove_cgroup(group)


@pytest.fixture(scope="module")
def daemon() -> Iterator[RunningDaemon]:
    """One taskstatsd (default settings) for a test module; modules that need other
    settings or one per test define their own."""
    require_kernel()
    d = RunningDaemon()
    try:
        yield d
    finally:
        d.close()
