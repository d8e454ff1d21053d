"""The journal names a PID namespace uniquely (daemon/namespaces.py ns_chain): the
kernel hands a dead namespace's inode number out again, and a new namespace given it
must not read the old one's history; a namespace's name stays the same for its life,
across taskstatsd restarts.  Against the real kernel, as root and as nobody in new
user and PID namespaces."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from pytaskstats.daemon import namespaces
from pytaskstats.daemon.namespaces import boot_id, ns_chain, start_ticks

from .conftest import WAITS_FOR_EXITS, require_kernel, wait_until
from .daemon_util import RunningDaemon
from .test_daemon_policy import Agent, agent

pytestmark = [pytest.mark.kernel, WAITS_FOR_EXITS]
TRIES = 40  # new namespaces made while waiting for one to get a dead one's inode
REUSE_WAIT_S = 20.0  # how long namespaces are made, TRIES at least, before giving up


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@contextlib.contextmanager
def _nested(depth: int) -> Iterator[int]:
    """A sleeping task ``depth`` PID namespaces below ours; yields its host pid."""
    argv = ["sleep", "60"]
    for _ in range(depth):
        argv = ["unshare", "--pid", "--fork", *argv]
    proc = subprocess.Popen(argv)
    try:
        def innermost() -> int | None:
            pid = proc.pid
            for _ in range(depth):
                kids = _children(pid)
                if not kids:
                    return None
                pid = kids[0]
            with open(f"/proc/{pid}/comm") as f:
                return pid if f.read().strip() == "sleep" else None

        yield wait_until(innermost, f"a task {depth} PID namespaces down")
    finally:
        with contextlib.suppress(OSError, IndexError):  # the init of level 1: all go
            os.kill(_children(proc.pid)[0], signal.SIGKILL)
        proc.kill()
        proc.wait()


def _ino(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/pid").st_ino


@pytest.fixture
def fallback() -> Iterator[None]:
    """ns_chain as on a kernel without NS_GET_ID (before Linux 6.18)."""
    saved = set(namespaces._MISSING)
    namespaces._MISSING.add("ns_id")
    namespaces._CHAINS.clear()
    try:
        yield
    finally:
        namespaces._MISSING.clear()
        namespaces._MISSING.update(saved)
        namespaces._CHAINS.clear()


def test_a_chain_is_the_boot_then_one_name_per_level() -> None:
    """"" for our namespace; else the boot id, then a name per level, outermost
    first: a nested namespace's chain extends its parent's."""
    require_kernel()
    assert ns_chain("/proc/self/ns/pid") == ""
    with _nested(2) as pid:
        chain = ns_chain(f"/proc/{pid}/ns/pid")
        outer = ns_chain(f"/proc/{_parent(pid)}/ns/pid")
        assert ns_chain(f"/proc/{pid}/ns/pid") == chain  # cached, the same
    parts = chain.split("/")
    assert parts[0] == boot_id() and len(parts) == 3 and all(parts), chain
    assert chain.startswith(outer + "/") and len(outer.split("/")) == 2


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def test_without_ns_get_id_a_level_is_inode_init_pid_and_start(
        fallback: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before Linux 6.18: a level is named by its inode, its init's host pid and the
    init's start time in ticks; the init found in /proc before Linux 6.11, then
    remembered (no /proc listing while it is still there)."""
    require_kernel()
    with _nested(1) as pid:
        chain = ns_chain(f"/proc/{pid}/ns/pid")
        want = f"{boot_id()}/{_ino(pid)}.{pid}.{start_ticks(pid)}"
        namespaces._MISSING.add("pid_from_pidns")
        namespaces._CHAINS.clear()
        found = ns_chain(f"/proc/{pid}/ns/pid")
        namespaces._CHAINS.clear()
        monkeypatch.setattr(namespaces, "_listdir", _no_listing)
        again = ns_chain(f"/proc/{pid}/ns/pid")
    assert chain == want and found == want and again == want


def _no_listing(path: str) -> Iterator[str]:
    raise AssertionError(f"{path} listed")
    yield path  # a generator, as namespaces._listdir


@pytest.mark.parametrize("kernel_id", [True, False], ids=["ns_get_id", "inode_init"])
def test_a_reused_inode_gets_another_name(kernel_id: bool) -> None:
    """A new namespace given a dead one's inode is named differently (the old
    daemon named both by the inode).  Namespaces are made one after another until
    the kernel hands an inode out again."""
    require_kernel()
    with contextlib.ExitStack() as stack:
        if not kernel_id:
            namespaces._MISSING.add("ns_id")
            stack.callback(namespaces._MISSING.discard, "ns_id")
        stack.callback(namespaces._CHAINS.clear)
        dead: dict[int, str] = {}
        deadline = time.monotonic() + REUSE_WAIT_S
        while len(dead) < TRIES or time.monotonic() < deadline:
            with _nested(1) as pid:
                ino, chain = _ino(pid), ns_chain(f"/proc/{pid}/ns/pid")
            if ino in dead:
                assert chain != dead[ino]
                return
            dead[ino] = chain
            time.sleep(0.01)  # pacing: a dead namespace's inode is freed after an RCU grace period
    pytest.skip(f"no inode handed out twice in {len(dead)} new namespaces over {REUSE_WAIT_S} s")


# ---------------------------------------------------------------- through taskstatsd

def _host_pid(box: Agent) -> int:
    """The host pid of a contained agent (the child unshare forked)."""
    return _children(box.proc.pid)[0]


def _own_rows(box: Agent) -> list[int]:
    """Run a short-lived cat in the container (placed by the daemon while alive) and
    return its pid there once the container's history shows it."""
    cat = box.ask("start cat")
    assert box.ask("sync cat") is not None  # its fork was read while it lived
    assert box.ask(f"stop {cat}") == cat
    assert box.ask("sync cat") is not None
    return [cat]


def test_a_new_namespace_with_a_dead_ones_inode_sees_none_of_its_history(
        fresh_daemon: RunningDaemon, nobody_env: dict[str, str]) -> None:
    """Finding: nobody's containers are made one after another until one gets the
    PID namespace inode of a dead one (the kernel hands it out again): that one sees
    none of the dead one's history.  Each before sees its own rows while it lives,
    the first also after taskstatsd restarts.  The old daemon named namespaces by
    their inode, so the new container read the dead one's history."""
    daemon = fresh_daemon
    dead: dict[int, list[int]] = {}
    for _ in range(TRIES):
        with agent(daemon, nobody_env, contained=True) as box:
            ino = _ino(_host_pid(box))
            if ino in dead:
                assert box.ask("history {}") == [], f"rows of the dead {dead[ino]}"
                assert box.ask('history {"totals": true}')[0]["exits"] == 0
                return
            cats = _own_rows(box)
            assert set(cats) <= {r["pid"] for r in box.ask("history {}")}
            if not dead:
                daemon.stop()
                daemon.start()
                assert box.ask("reconnect")
                seen = {r["pid"] for r in box.ask("history {}")}
                assert set(cats) <= seen, f"after a restart: {seen}"
            dead[ino] = cats
    pytest.skip(f"no PID namespace inode handed out twice in {TRIES} containers")


