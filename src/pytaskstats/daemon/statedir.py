"""taskstatsd's state directory: private to the daemon's user, checked at start.

The journal holds every user's command names, uids, IO and timing, so the
directory is 0700 and its files 0600 (the daemon runs under umask 0077, so what
it creates gets these modes).  At start, an existing directory or file with a
wider mode (as older versions made them: 0755 and 0644) is narrowed, and said
so on stderr; one owned by another user, or a file that is a symlink or not a
regular file, is refused: taskstatsd does not adopt state it did not make.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable

from ..errors import TaskstatsError

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
        self.created = _make(path)
        _check(path, os.stat(path), DIR_MODE, say)
        for name in FILES:
            self._check_file(os.path.join(path, name), say)

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

    @staticmethod
    def _check_file(path: str, say: Callable[[str], None]) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode):
            raise TaskstatsError(f"{path} is not a regular file: not using it")
        _check(path, st, FILE_MODE, say)


def _make(path: str) -> bool:
    """Create ``path`` mode 0700 unless it exists; True if we created it."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise TaskstatsError(f"state directory {path}: its parent does not exist") from None
    return True


def _check(path: str, st: os.stat_result, mode: int, say: Callable[[str], None]) -> None:
    """Refuse ``path`` if another user owns it; narrow its mode to ``mode``."""
    if st.st_uid != os.geteuid():
        raise TaskstatsError(f"{path} is owned by uid {st.st_uid}, not by taskstatsd's uid "
                             f"{os.geteuid()}: not using it")
    have = stat.S_IMODE(st.st_mode)
    if have & ~mode:
        os.chmod(path, have & mode)
        say(f"{path}: mode {have:04o} -> {have & mode:04o} (the journal is private)")
