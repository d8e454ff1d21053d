"""How taskstatsd starts: in the foreground or detached (a double fork that reports
the start's outcome to the waiting parent), its scheduling priority, file limit
and the lock that makes it one daemon per state directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import sys

from ..errors import TaskstatsError

__all__ = ["PIPE_BUF", "READY", "Startup", "lock_file", "raise_nofile", "set_nice"]

READY = b"ready\n"  # the daemon's word to the waiting parent
PIPE_BUF = 4096  # one write of at most this many bytes is atomic


def lock_file(path: str) -> int:
    """Hold an exclusive lock on ``path`` for the life of the process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TaskstatsError(f"another taskstatsd holds {path}: one daemon per state "
                             "directory") from None
    return fd


class Startup:
    """How the start ends: in the foreground, messages on stderr; in the background
    (``detach``), the first process forks the daemon and waits on a pipe for its
    word, so a failed start exits non-zero with the daemon's message."""

    def __init__(self, detach: bool) -> None:
        self.pipe: int | None = _daemonize() if detach else None

    def ready(self) -> None:
        """Serving: release the waiting parent and let go of the terminal."""
        if self.pipe is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.pipe, READY)
        os.close(self.pipe)
        self.pipe = None
        terminal, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 - for life
        terminal.close()

    def failed(self, message: str) -> int:
        """Report ``message``; the exit status (1)."""
        line = f"taskstatsd: {' '.join(message.split())}\n"
        if self.pipe is None:
            sys.stderr.write(line)
        else:
            with contextlib.suppress(OSError):
                os.write(self.pipe, line.encode(errors="replace")[:PIPE_BUF])
        return 1


def _daemonize() -> int:
    """Fork twice into a new session (before any thread or socket exists); the
    first process exits with the daemon's start status.  Returns, in the daemon,
    the pipe to tell it on."""
    r, w = os.pipe()
    if os.fork():
        os.close(w)
        os._exit(_wait_for_start(r))
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    terminal = os.dup(2)  # not inherited: the journal writer gets /dev/null, so
    null = os.open(os.devnull, os.O_RDWR)  # nothing holds the caller's stderr open
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    sys.stderr = open(terminal, "w", buffering=1)  # noqa: SIM115 - until ready
    return w


def _wait_for_start(r: int) -> int:
    """The first process: 0 if the daemon says it is ready, else print why; 1."""
    said = b""
    while chunk := os.read(r, PIPE_BUF):
        said += chunk
    if said == READY:
        return 0
    sys.stderr.write(said.decode(errors="replace") or "taskstatsd: the daemon died starting\n")
    sys.stderr.flush()
    return 1


def set_nice(nice: int) -> None:
    """Run at scheduling priority ``nice`` (the journal writer inherits it): during a
    fork storm the daemon competes with every new task for the CPU, and at 0 its
    clients' p99 grows tens of times (benchmarks/attack.py).  Without the right
    (CAP_SYS_NICE), or already there, it is left as it is, with a note."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) != nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as err:
        print(f"taskstatsd: cannot set nice {nice} ({err.strerror}); running at "
              f"{os.getpriority(os.PRIO_PROCESS, 0)}", file=sys.stderr)


def raise_nofile() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (systemd's default soft limit
    of 1024 is below what max_clients clients may hold: each a connection, a passed
    fd and a pidfd while it is accepted)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
