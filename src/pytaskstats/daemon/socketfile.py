"""The client socket's file: bound only where no live daemon answers, removed only
if it is still ours.

Rules (a root daemon's socket path is a shared name):

- the socket's directory is created if missing, but not its parents, mode 0755
  (every local user connects); an existing directory is left as it is;
- an existing path is replaced only when it is a socket nobody answers on (a
  stale one); a live daemon's socket, or any other kind of file, is refused;
- at exit the path is unlinked only if it still names the inode we bound.

Probing, replacing and binding happen under an flock on the directory, so two
daemons starting at once cannot both take a stale path, and one stopping cannot
remove the socket another just bound.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
from collections.abc import Iterator

from ..errors import TaskstatsError

SOCKET_MODE = 0o666  # every local user may connect; the policy is per request
DIR_MODE = 0o755
SUN_PATH_MAX = 107  # bytes of sun_path, without its NUL


class SocketInUse(TaskstatsError):
    """A live daemon answers on the path, or the path is not a socket of ours."""


def check_path(path: str) -> None:
    """Raise TaskstatsError for a path no socket can be bound at (checked before
    anything touches the disk): relative, too long, or no parent directory."""
    if not os.path.isabs(path):
        raise TaskstatsError(f"socket {path!r}: want an absolute path")
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise TaskstatsError(f"socket {path!r}: longer than {SUN_PATH_MAX} bytes")
    directory = os.path.dirname(path)
    parent = os.path.dirname(directory)
    if not os.path.isdir(directory) and not os.path.isdir(parent):
        raise TaskstatsError(f"socket {path!r}: {parent} does not exist (taskstatsd "
                             f"creates only the socket's own directory)")
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise TaskstatsError(f"socket {path!r}: {directory} is not a directory")


def answering(path: str) -> bool:
    """Whether a socket at ``path`` is live: only a refused connection (nobody
    listens) or a vanished path make it stale; a busy backlog counts as live."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True  # EAGAIN (backlog full), EPROTOTYPE (another kind of socket)...
    finally:
        probe.close()
    return True


class BoundSocket:
    """The listening socket at ``path``; see the module docstring."""

    def __init__(self, path: str, backlog: int = 128) -> None:
        check_path(path)
        self.path = path
        self.directory = os.path.dirname(path)
        self._made_dir = _make_dir(self.directory)
        try:
            with _dir_lock(self.directory):
                self.sock = _bind(path)
                st = os.lstat(path)
                self.identity = (st.st_dev, st.st_ino)
        except BaseException:
            self._remove_dir()
            raise
        os.chmod(path, SOCKET_MODE)
        self.sock.listen(backlog)
        self.sock.setblocking(False)

    def close(self) -> None:
        """Unlink the path if it still names our socket, then close it (idempotent)."""
        if self.sock.fileno() < 0:
            return
        with contextlib.suppress(OSError), _dir_lock(self.directory):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self.identity:
                os.unlink(self.path)
        self.sock.close()
        self._remove_dir()

    def _remove_dir(self) -> None:
        """Remove the directory we made, if nothing else lives in it now."""
        if self._made_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)
            self._made_dir = False


def _make_dir(directory: str) -> bool:
    """Create ``directory`` (not its parents) mode 0755; True if we created it."""
    try:
        os.mkdir(directory, DIR_MODE)
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise TaskstatsError(f"{os.path.dirname(directory)} does not exist (taskstatsd "
                             "creates only the socket's own directory)") from None
    os.chmod(directory, DIR_MODE)  # the daemon's umask is 0077
    return True


@contextlib.contextmanager
def _dir_lock(directory: str) -> Iterator[None]:
    """Hold an exclusive flock on ``directory`` (daemons bind one at a time)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _bind(path: str) -> socket.socket:
    """A socket bound at ``path``, replacing a stale socket there (under the lock)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.bind(path)
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise TaskstatsError(f"cannot bind {path}: {err.strerror}") from None
            _replace_stale(path)
            sock.bind(path)
    except BaseException:
        sock.close()
        raise
    return sock


def _replace_stale(path: str) -> None:
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise SocketInUse(f"{path} exists and is not a socket: not replacing it")
    if answering(path):
        raise SocketInUse(f"a daemon already answers on {path}")
    os.unlink(path)  # stale: left by a daemon that died
