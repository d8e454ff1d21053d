"""Self-contained HTML reports of ``taskstats run --report`` and ``taskstats history
--report``.

Pure functions from data to one HTML document: CSS inline, charts drawn here as
inline SVG, no script, no network and no reference outside the file.  Input
values keep the kernel's field names and units; the page shows human units and
says what is not measured (delay accounting off) instead of showing zeros.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile

from .history import BUCKET_FIELDS, GROUP_FIELDS, HistoryReport, choose_bucket, render_history
from .run import Process, RunReport, build_run, render_run

__all__ = ["BUCKET_FIELDS", "GROUP_FIELDS", "HistoryReport", "Process", "RunReport",
           "build_run", "choose_bucket", "render_history", "render_run", "resolve_output",
           "save"]


MAX_LINKS = 40  # symbolic links followed from a name, as the kernel's path walk allows


def resolve_output(name: str) -> str:
    """``name`` with the symbolic links at its end followed, each only when this user
    (its euid) or root owns it: a link another user planted in a directory they
    control must not send this user's write (root's, above all) to a file of their
    choosing.  The kernel's fs.protected_symlinks makes that rule in sticky
    world-writable directories only; a rename does not obey it.  OSError (EPERM, with
    what to do) for another user's link, ELOOP past :data:`MAX_LINKS` links."""
    euid = os.geteuid()
    for _ in range(MAX_LINKS):
        try:
            info = os.lstat(name)
        except OSError:  # absent, or not to be looked at: writing it says what is wrong
            return name
        if not stat.S_ISLNK(info.st_mode):
            return name
        if info.st_uid not in (euid, 0):
            raise OSError(errno.EPERM, f"a symbolic link of uid {info.st_uid}, "
                          "which is not followed (another user's link could point it at "
                          "any file): remove the link or write elsewhere")
        name = os.path.join(os.path.dirname(name), os.readlink(name))
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))


def save(path: str | os.PathLike[str], html: str) -> None:
    """Write ``html`` to ``path``: a regular file (or a new one) atomically (a temp file
    in its directory, then rename; through a symlink, its target), readable as a
    normal new file would be (umask applies); anything else that exists (``/dev/full``,
    a FIFO, ``/dev/stdout``) is written into, never replaced.  Symbolic links are
    followed only when this user or root owns them (:func:`resolve_output`).  OSError on
    failure."""
    target = resolve_output(os.fspath(path))
    try:
        regular = stat.S_ISREG(os.lstat(target).st_mode)
    except FileNotFoundError:
        regular = True
    if not regular:
        fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "w", encoding="utf-8") as out:
            out.write(html)
        return
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            umask = os.umask(0)
            os.umask(umask)
            # by the descriptor: the name may be another user's symlink by now
            os.fchmod(f.fileno(), 0o666 & ~umask)
            f.write(html)
        os.replace(tmp, target)  # a link swapped in meanwhile is replaced, not followed
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
