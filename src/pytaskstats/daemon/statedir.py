"""taskstatsd's state directory: private to the daemon's user, checked at start.

The journal holds every user's command names, uids, IO and timing, so the
directory is 0700 and its files 0600 (the daemon runs under umask 0077, so what
it creates gets these modes).  At start, an existing directory or file with a
wider mode (as older versions made them: 0755 and 0644) is narrowed, and said
so on stderr; one owned by another user, or a file that is a symlink or not a
regular file, is refused: taskstatsd does not adopt state it did not make.

The directory itself must not be a symlink, and no other user may be able to
redirect its path (:mod:`.trustedpath`: its parent and every ancestor are
root's or the daemon's, writable by no one else unless sticky).  It is opened
without following symlinks and checked and narrowed through that descriptor, and
so are its files: nothing is chmod'ed by name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Callable

from ..errors import TaskstatsError
from .trustedpath import check_chain

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077
# every file taskstatsd keeps in its state directory
FILES = ("taskstatsd.lock", "journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm",
         "journal.sqlite3-journal", "listener-drops.json", "listener-drops.json.tmp")


def _say(message: str) -> None:
    print(f"taskstatsd: {message}", file=sys.stderr)


class StateDir:
    """The state directory at ``path``, created (not its parents) or checked and
    narrowed.  :meth:`remove` undoes a creation when the start fails."""

    def __init__(self, path: str, say: Callable[[str], None] = _say) -> None:
        self.path = path
        check_chain(os.path.dirname(path))
        self.created = _make(path)
        fd = _open_dir(path)
        try:
            _check(path, os.fstat(fd), fd, DIR_MODE, say)
            for name in FILES:
                self._check_file(fd, name, say)
        finally:
            os.close(fd)

    def join(self, name: str) -> str:
        """The path of state file ``name``."""
        return os.path.join(self.path, name)

    def remove(self) -> None:
        """Remove the directory and its files if this start created it."""
        if not self.created:
            return
        for name in FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.join(name))
        with contextlib.suppress(OSError):
            os.rmdir(self.path)
        self.created = False

    def _check_file(self, dir_fd: int, name: str, say: Callable[[str], None]) -> None:
        """Check and narrow state file ``name`` (if present) relative to ``dir_fd``."""
        path = self.join(name)
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode):
            raise TaskstatsError(f"{path} is not a regular file: not using it")
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise TaskstatsError(f"{path} changed while checked: not using it")
            _check(path, opened, fd, FILE_MODE, say)
        finally:
            os.close(fd)


def _make(path: str) -> bool:
    """Create ``path`` mode 0700 unless it exists; True if we created it."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise TaskstatsError(f"state directory {path}: its parent does not exist") from None
    return True


def _open_dir(path: str) -> int:
    """A descriptor of directory ``path``, refused if it is a symlink."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        what = "a symlink" if os.path.islink(path) else "not a directory"
        raise TaskstatsError(f"state directory {path} is {what}: not using it") from None


def _check(path: str, st: os.stat_result, fd: int, mode: int,
           say: Callable[[str], None]) -> None:
    """Refuse ``path`` (open as ``fd``) if another user owns it; narrow its mode to
    ``mode`` through ``fd``."""
    if st.st_uid != os.geteuid():
        raise TaskstatsError(f"{path} is owned by uid {st.st_uid}, not by taskstatsd's uid "
                             f"{os.geteuid()}: not using it")
    have = stat.S_IMODE(st.st_mode)
    if have & ~mode:
        os.fchmod(fd, have & mode)
        say(f"{path}: mode {have:04o} -> {have & mode:04o} (the journal is private)")
