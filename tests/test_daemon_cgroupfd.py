"""Directory fds passed to taskstatsd are never trusted (pytaskstats/cgroupfd.py).

A client passes an fd "of a cgroup": the root daemon must not open a file the client
planted there (a symlink to /etc/shadow, a FIFO, /dev/zero), nor quote what it read.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytaskstats import Client
from pytaskstats.errors import NetlinkError
from pytaskstats.kernel import Connection

from .conftest import as_nobody, remove_cgroup, require_kernel
from .daemon_util import RunningDaemon
from .test_birthcgroups import cgroup2_root

pytestmark = pytest.mark.kernel

TRAPS = ("shadow", "fifo", "zero", "plain")

# As nobody: build each trap in a directory of its own, pass its fd with the
# TASKSTATSD CGROUP command and with CGROUPSTATS, print what came back.
ATTACK = """
import errno, json, os, sys, tempfile
from pytaskstats.kernel import Connection
from pytaskstats.errors import TaskstatsError
base = tempfile.mkdtemp(prefix="cgroupfd-trap-")
os.chmod(base, 0o755)
out = {}
for trap in sys.argv[2:]:
    d = os.path.join(base, trap)
    os.mkdir(d)
    target = os.path.join(d, "cgroup.threads")
    if trap == "shadow":
        os.symlink("/etc/shadow", target); os.symlink("/etc/shadow", os.path.join(d, "tasks"))
    elif trap == "fifo":
        os.mkfifo(target); os.mkfifo(os.path.join(d, "tasks"))
    elif trap == "zero":
        os.symlink("/dev/zero", target); os.symlink("/dev/zero", os.path.join(d, "tasks"))
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    answers = []
    with Connection(socket_path=sys.argv[1]) as conn:
        for call in (conn.cgroup2, conn.cgroup):
            try:
                answers.append(["ok", str(call(fd))])
            except TaskstatsError as err:
                answers.append([getattr(err, "errno", None), str(err)])
    os.close(fd)
    out[trap] = answers
print(base)
print(json.dumps(out))
"""


@pytest.fixture(scope="module", params=["kernel", "procfs"])
def daemon(request: pytest.FixtureRequest) -> Iterator[RunningDaemon]:
    """taskstatsd on each source: CGROUPSTATS goes to the kernel, or is counted from
    /proc (cgroup v1 directories only, like the kernel's)."""
    require_kernel()
    d = RunningDaemon(None, "--source", request.param)
    try:
        yield d
    finally:
        d.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_planted_files_are_never_opened(daemon: RunningDaemon,
                                        nobody_env: dict[str, str]) -> None:
    """Before the fix: /etc/shadow's first line in the error text, a daemon blocked
    on the FIFO for good, and /dev/zero read until memory ran out."""
    rss = _rss_kib(daemon.pid)
    done = as_nobody(nobody_env, "-c", ATTACK, daemon.socket, *TRAPS)
    assert done.returncode == 0, done.stderr
    base, doc = done.stdout.splitlines()
    answers = json.loads(doc)
    shadow = Path("/etc/shadow").read_text().splitlines()[0].split(":")[0] + ":"
    for trap in TRAPS:
        for code, text in answers[trap]:
            assert code == errno.EINVAL, (trap, text)
            assert shadow not in text and "Permission" not in text
    assert _rss_kib(daemon.pid) < rss + 50_000  # KiB: nothing read without end
    with Client("daemon", socket_path=daemon.socket, timeout=5) as c:
        assert c.pid(os.getpid()).ac_pid == os.getpid()  # still serving
    _kernel_agrees(Path(base))
    for trap in TRAPS:
        for name in ("cgroup.threads", "tasks"):
            (Path(base) / trap / name).unlink(missing_ok=True)
        (Path(base) / trap).rmdir()
    Path(base).rmdir()


def _kernel_agrees(base: Path) -> None:
    """The kernel's own CGROUPSTATS answers EINVAL for the same directories."""
    for trap in TRAPS:
        fd = os.open(base / trap, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with Connection() as conn, pytest.raises(NetlinkError) as err:
                conn.cgroup(fd)
            assert err.value.errno == errno.EINVAL
        finally:
            os.close(fd)


# As nobody: count the cgroup2 directory argv[2] through the TASKSTATSD CGROUP command
# with an fd of each way of opening it (or the error it got, by errno).
COUNT = """
import json, os, sys
from pytaskstats.kernel import Connection
from pytaskstats.errors import TaskstatsError
out = {}
for name, flags in (("O_PATH", os.O_PATH | os.O_DIRECTORY), ("O_RDONLY", os.O_RDONLY)):
    try:
        fd = os.open(sys.argv[2], flags)
    except OSError as err:
        out[name] = ["open", err.errno]
        continue
    with Connection(socket_path=sys.argv[1]) as conn:
        try:
            out[name] = ["ok", conn.cgroup2(fd).nr_sleeping]
        except TaskstatsError as err:
            out[name] = ["daemon", type(err).__name__, getattr(err, "errno", None)]
    os.close(fd)
print(json.dumps(out))
"""


@pytest.fixture
def private_cgroup() -> Iterator[Path]:
    """A cgroup2 directory of root's holding one sleeper of root's (the caller sets
    the modes); removed afterwards."""
    group = cgroup2_root() / f"pytaskstats-private-{os.getpid()}"
    group.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (group / "cgroup.procs").write_text(str(sleeper.pid))
        yield group
    finally:
        sleeper.kill()
        sleeper.wait()
        group.chmod(0o755)
        remove_cgroup(group)


def test_cgroup2_counts_need_what_open_would_need(daemon: RunningDaemon,
                                                  nobody_env: dict[str, str],
                                                  private_cgroup: Path) -> None:
    """Before the fix: nobody counted root's 0700 cgroup through an O_PATH fd (which
    needs no permission on the directory), and a thread list it may not read, because
    the root daemon opened cgroup.threads for it."""
    def count() -> dict[str, list[object]]:
        done = as_nobody(nobody_env, "-c", COUNT, daemon.socket, str(private_cgroup))
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    o_path = ["daemon", "NetlinkError", errno.EBADF]  # whatever the directory's mode
    assert count() == {"O_PATH": o_path, "O_RDONLY": ["ok", 1]}
    private_cgroup.chmod(0o700)
    assert count() == {"O_PATH": o_path, "O_RDONLY": ["open", errno.EACCES]}
    private_cgroup.chmod(0o755)
    (private_cgroup / "cgroup.threads").chmod(0o600)
    assert count() == {"O_PATH": o_path, "O_RDONLY": ["daemon", "AccessDenied", None]}
    fd = os.open(private_cgroup, os.O_RDONLY)  # root (an admin) still counts it
    try:
        with Connection(socket_path=daemon.socket) as conn:
            assert conn.cgroup2(fd).nr_sleeping == 1
    finally:
        os.close(fd)
