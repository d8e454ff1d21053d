"""A real taskstatsd for tests: started in a world-reachable temp dir, stoppable,
killable and restartable on the same state."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

HANDOVER = """
import os, sys
fds, names, argv = [int(f) for f in sys.argv[1].split(",")], sys.argv[2], sys.argv[3:]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)),
                  LISTEN_FDNAMES=names)
os.execv(argv[0], argv)
"""


class RunningDaemon:
    """taskstatsd as a subprocess; ``socket`` is its client socket path."""

    prefix: tuple[str, ...] = ()  # a command it runs under (see __init__)

    def __init__(self, state_dir: Path | None = None, *extra: str,
                 prefix: Sequence[str] = ()) -> None:
        """``extra``: more taskstatsd arguments; ``prefix``: a command it runs under
        (e.g. ``prlimit --nofile=64:64 --``, which execs it: the pid is the daemon's)."""
        self.base = Path(tempfile.mkdtemp(prefix="taskstatsd-", dir="/tmp"))
        self.base.chmod(0o755)
        self.socket = str(self.base / "run" / "taskstatsd.sock")
        self.state_dir = state_dir or self.base / "state"
        self.extra = extra
        self.prefix = tuple(prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, env: dict[str, str] | None = None,
              stored: Sequence[tuple[str, int]] = ()) -> None:
        """Start (or restart) and wait until the socket answers.  ``stored`` fds are
        handed over the way systemd returns its fd store (from fd 3, $LISTEN_*)."""
        argv = [*self.prefix, sys.executable, "-m", "pytaskstats.daemon", "--foreground",
                "--socket", self.socket, "--state-dir", str(self.state_dir), "--config",
                os.devnull, *self.extra]
        if stored:  # what systemd does between fork and exec
            argv = [sys.executable, "-c", HANDOVER, ",".join(str(fd) for _, fd in stored),
                    ":".join(name for name, _ in stored), *argv]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, env=env,
                                     pass_fds=[fd for _, fd in stored])
        deadline = time.monotonic() + 20
        while not _answers(self.socket):  # a stale file of a killed daemon does not
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.stderr else b""
                raise RuntimeError(f"taskstatsd did not start: {err.decode()}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        """The daemon's pid."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop it with ``sig``; return its exit status."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        if self.proc.stderr:
            self.proc.stderr.close()
        if sig == signal.SIGKILL and os.path.exists(self.socket):
            os.unlink(self.socket)  # a killed daemon leaves it behind
        return code

    def close(self) -> None:
        """Stop if running and remove the temp dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _answers(path: str) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


# python3 -c HOLD SOCKET N: holds N connections to taskstatsd, prints N, waits for a line
HOLD = textwrap.dedent("""
    import socket, sys
    socks = []
    for _ in range(int(sys.argv[2])):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(sys.argv[1])
        socks.append(s)
    print(len(socks), flush=True)
    sys.stdin.readline()
""")
