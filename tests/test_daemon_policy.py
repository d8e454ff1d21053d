"""taskstatsd's identity rule against the real kernel: admin rights come from the
socket (SO_PEERCRED, SO_PEERGROUPS at connect), never from /proc of the peer's pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import as_nobody, require_kernel
from .daemon_util import RunningDaemon

pytestmark = pytest.mark.kernel
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
import os, subprocess, sys
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
    while open(f"/proc/{p.pid}/status").read().split("Uid:")[1].split()[1] != "0":
        pass                                     # exec'd the setuid binary
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
