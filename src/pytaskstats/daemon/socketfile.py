"""The client socket's file: bound only where no live daemon answers, removed only
if it is still ours.

Rules (a root daemon's socket path is a shared name):

- the socket's directory is created if missing, but not its parents, mode 0755
  (every local user connects); an existing one is used as it is only if it is a
  directory (not a symlink) of the daemon's user that no one else can write, and
  no other user can redirect the path to it (:mod:`.trustedpath`): otherwise
  another user could replace the socket with their own;
- the socket is made 0666 at bind() (under umask 0111), never chmod'ed by name,
  and checked with lstat to be ours;
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
from ..transport import DEFAULT_SOCKET
from .trustedpath import OTHERS_WRITE, check_chain

SOCKET_MODE = 0o666  # every local user may connect; the policy is per request
DIR_MODE = 0o755
BIND_UMASK = 0o111  # bind() makes the inode 0777 & ~umask: SOCKET_MODE
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
        check_chain(os.path.dirname(self.directory))
        self._made_dir = _make_dir(self.directory)
        try:
            with _dir_lock(self.directory):
                self.sock = _bind(path)
                self.identity = _ours(path, self.sock)
        except BaseException:
            self._remove_dir()
            raise
        self.sock.listen(backlog)
        self.sock.setblocking(False)

    def close(self) -> None:
        """Unlink the path if it still names our socket, then close it (idempotent)."""
        if self.sock.fileno() < 0:
            return
        with contextlib.suppress(OSError, TaskstatsError), _dir_lock(self.directory):
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
    fd = _open_dir(directory)
    try:
        os.fchmod(fd, DIR_MODE)  # the daemon's umask is 0077
    finally:
        os.close(fd)
    return True


def _open_dir(directory: str) -> int:
    """A descriptor of the socket's directory, refused unless it is a directory
    (not a symlink) owned by the daemon's user that no other user can write."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise TaskstatsError(f"socket directory {directory} is a symlink or not a "
                             "directory: not using it") from None
    st = os.fstat(fd)
    why = ""
    if st.st_uid != os.geteuid():
        why = f"is owned by uid {st.st_uid}, not by taskstatsd's uid {os.geteuid()}"
    elif st.st_mode & OTHERS_WRITE:
        why = f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    if why:
        os.close(fd)
        raise TaskstatsError(f"socket directory {directory} {why}: another user could "
                             "replace the socket; not using it: give a socket path whose "
                             "directory only taskstatsd's user can write, such as "
                             f"{DEFAULT_SOCKET} (taskstatsd creates that directory)")
    return fd


@contextlib.contextmanager
def _dir_lock(directory: str) -> Iterator[None]:
    """Hold an exclusive flock on ``directory`` (daemons bind one at a time),
    checked by :func:`_open_dir`."""
    fd = _open_dir(directory)
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
            _bind_0666(sock, path)
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise TaskstatsError(f"cannot bind {path}: {err.strerror}") from None
            _replace_stale(path)
            _bind_0666(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_0666(sock: socket.socket, path: str) -> None:
    """Bind ``sock`` at ``path`` with the inode made SOCKET_MODE by bind() itself
    (umask BIND_UMASK meanwhile; the daemon has no other thread yet)."""
    old = os.umask(BIND_UMASK)
    try:
        sock.bind(path)
    finally:
        os.umask(old)


def _ours(path: str, sock: socket.socket) -> tuple[int, int]:
    """The (st_dev, st_ino) of the socket just bound at ``path``, refused unless
    the path is still a socket of the daemon's user, mode SOCKET_MODE."""
    st = os.lstat(path)
    if (not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid()
            or stat.S_IMODE(st.st_mode) != SOCKET_MODE):
        sock.close()
        raise SocketInUse(f"{path} is not the socket taskstatsd just bound: not using it")
    return (st.st_dev, st.st_ino)


def _replace_stale(path: str) -> None:
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise SocketInUse(f"{path} exists and is not a socket: not replacing it")
    if answering(path):
        raise SocketInUse(f"a daemon already answers on {path}: stop it first, or give "
                          "this one another --socket")
    os.unlink(path)  # stale: left by a daemon that died
