"""Self-contained HTML reports of ``taskstats run --report`` and ``taskstats history
--report``.

Pure functions from data to one HTML document: CSS inline, charts drawn here as
inline SVG, no script, no network and no reference outside the file.  Input
values keep the kernel's field names and units; the page shows human units and
says what is not measured (delay accounting off) instead of showing zeros.
"""

from __future__ import annotations

import os
import stat
import tempfile

from .history import BUCKET_FIELDS, GROUP_FIELDS, HistoryReport, choose_bucket, render_history
from .run import Process, RunReport, build_run, render_run

__all__ = ["BUCKET_FIELDS", "GROUP_FIELDS", "HistoryReport", "Process", "RunReport",
           "build_run", "choose_bucket", "render_history", "render_run", "save"]


def save(path: str | os.PathLike[str], html: str) -> None:
    """Write ``html`` to ``path``: a regular file (or a new one) atomically (a temp file
    in its directory, then rename; through a symlink, its target), readable as a
    normal new file would be (umask applies); anything else that exists (``/dev/full``,
    a FIFO, ``/dev/stdout``) is written into, never replaced.  OSError on failure."""
    name = os.fspath(path)
    try:
        regular = stat.S_ISREG(os.stat(name).st_mode)
    except FileNotFoundError:
        regular = True
    if not regular:
        with open(name, "w", encoding="utf-8") as out:
            out.write(html)
        return
    target = os.path.realpath(name)
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
