"""What /proc says about a process beyond taskstats, for ``taskstats top``: its
state, parent, nice value, start, resident memory and command line.

:func:`parse_statm` and :func:`command_line` are pure (bytes in); the readers take
the /proc root as an argument and return None for a task that is gone or hidden.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .procfs_parse import ProcfsFormatError, parse_stat, read_file

__all__ = ["PAGE_SIZE", "ProcInfo", "command_line", "parse_statm", "read_cmdline", "read_proc_info",
           "read_start", "read_state"]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ProcInfo(NamedTuple):
    """A process (or thread) as /proc shows it now.

    ``state``: the one-letter state of stat (R S D Z T t I X...); ``start``: starttime
    in clock ticks after boot (with the pid, the task's identity); ``rss``: resident
    bytes (statm), None without an mm (kernel threads, zombies); ``cmdline``: the
    arguments joined by spaces, None when empty (kernel threads, zombies) or not read.
    """

    comm: str
    state: str
    ppid: int
    nice: int
    start: int
    rss: int | None
    cmdline: str | None = None


def parse_statm(data: bytes, path: str) -> int | None:
    """Resident bytes from a statm line (its second field, pages); None when it is
    all zeros (no mm)."""
    fields = data.split()
    try:
        pages = int(fields[1])
    except (ValueError, IndexError) as err:
        raise ProcfsFormatError(f"malformed statm line ({err}): {data[:100]!r}",
                                path=path) from err
    return pages * PAGE_SIZE if any(f != b"0" for f in fields) else None


def command_line(data: bytes) -> str | None:
    """A cmdline file's arguments joined by spaces (NULs inside are separators, and
    control characters show as spaces: one screen line); None when empty."""
    text = data.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text) or None


def read_proc_info(tgid: int, proc: str = "/proc", *, cmdline: bool = True
                   ) -> ProcInfo | None:
    """The process ``tgid`` now (``cmdline``: also read its command line); None when
    it is gone or unreadable."""
    base = f"{proc}/{tgid}"
    try:
        stat = parse_stat(read_file(f"{base}/stat"), f"{base}/stat")
        rss = parse_statm(read_file(f"{base}/statm"), f"{base}/statm")
        args = command_line(read_file(f"{base}/cmdline")) if cmdline else None
    except (OSError, ProcfsFormatError):
        return None
    return ProcInfo(stat.comm, stat.state, stat.ppid, stat.nice, stat.start, rss, args)


def read_cmdline(tgid: int, proc: str = "/proc") -> str | None:
    """The command line of ``tgid`` (see :func:`command_line`); None when it is gone."""
    try:
        return command_line(read_file(f"{proc}/{tgid}/cmdline"))
    except OSError:
        return None


def read_state(tgid: int, tid: int, proc: str = "/proc") -> str | None:
    """The state letter of thread ``tid`` of ``tgid``; None when it is gone."""
    path = f"{proc}/{tgid}/task/{tid}/stat"
    try:
        return parse_stat(read_file(path), path).state
    except (OSError, ProcfsFormatError):
        return None


def read_start(pid: int, proc: str = "/proc") -> int | None:
    """The start (ticks after boot) of task ``pid``; None when it is gone."""
    path = f"{proc}/{pid}/stat"
    try:
        return parse_stat(read_file(path), path).start
    except (OSError, ProcfsFormatError):
        return None
