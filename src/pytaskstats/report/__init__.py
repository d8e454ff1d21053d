"""Self-contained HTML reports of ``taskstats run --report`` and ``taskstats history
--report``.

Pure functions from data to one HTML document: CSS inline, charts drawn here as
inline SVG, no script, no network and no reference outside the file.  Input
values keep the kernel's field names and units; the page shows human units and
says what is not measured (delay accounting off) instead of showing zeros.
"""

from __future__ import annotations

import os
import tempfile

from .history import BUCKET_FIELDS, GROUP_FIELDS, HistoryReport, choose_bucket, render_history
from .run import Process, RunReport, build_run, render_run

__all__ = ["BUCKET_FIELDS", "GROUP_FIELDS", "HistoryReport", "Process", "RunReport",
           "build_run", "choose_bucket", "render_history", "render_run", "save"]


def save(path: str | os.PathLike[str], html: str) -> None:
    """Write ``html`` to ``path`` atomically (a temp file in the same directory, then
    rename), readable as a normal new file would be (umask applies)."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
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
