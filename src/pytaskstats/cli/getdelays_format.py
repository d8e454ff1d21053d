"""getdelays' output, as pure functions from records to text (byte-compatible).

Each format mirrors a printf of tools/accounting/getdelays.c: ``%-10s`` labels,
``%15s`` headers, ``%15llu`` counts and totals (ns), ``%15.3fms`` averages (a
17-character cell under a 15-character header: the original's column drift),
``%13.6fms`` max/min (v16+) and a ``%23s`` local-time timestamp under a ``%25s``
header (v17+).  Averages are computed as the C tool does: total (as a double)
/ 1e6 / (count or 1).  A row is printed only when the record has its fields, so
fields absent from a struct version never show up as zeros.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from ..fields import DELAY_KINDS, Timespec
from ..records import CgroupStats, ExitRecord, TaskStats

LABELS = {"cpu": "CPU", "blkio": "IO", "swapin": "SWAP", "freepages": "RECLAIM",
          "thrashing": "THRASHING", "compact": "COMPACT", "wpcopy": "WPCOPY", "irq": "IRQ"}
TGID_IO_NOTE = ("TGID records carry no comm or I/O accounting: use -i with -p PID "
                "(one task) or with exit records")


class Sections(NamedTuple):
    """Which sections to print per record: -d delays, -i I/O, -q context switches."""

    delays: bool = False
    io: bool = False
    ctxsw: bool = False


def format_timestamp(ts: Timespec | None) -> str:
    """A v17 ``*_delay_max_ts`` as local ``%Y-%m-%dT%H:%M:%S``; "N/A" if unset."""
    if ts is None or (ts.tv_sec == 0 and ts.tv_nsec == 0):
        return "N/A"
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts.tv_sec))
    except (OverflowError, OSError, ValueError):
        return "N/A"


def _ms(ns: int) -> float:
    """Nanoseconds as milliseconds, the C way (converted to double first)."""
    return float(ns) / 1e6


def _row_fields(kind: str, version: int) -> tuple[list[str], list[str]]:
    """Field names and column headers of one delay row."""
    names = [f"{kind}_count", f"{kind}_delay_total"]
    heads = ["count", "delay total", "delay average"]
    if kind == "cpu":
        names[1:1] = ["cpu_run_real_total", "cpu_run_virtual_total"]
        heads[1:1] = ["real total", "virtual total"]
    if version >= 16:
        names += [f"{kind}_delay_max", f"{kind}_delay_min"]
        heads += ["delay max", "delay min"]
    return names, heads


def delay_row(t: TaskStats, kind: str) -> str | None:
    """Header and data line of one delay kind; None if the record lacks its fields."""
    names, heads = _row_fields(kind, t.version)
    values = [getattr(t, name) for name in names]
    if any(v is None for v in values):
        return None
    ints = values[:-2] if t.version >= 16 else values
    head = f"{LABELS.get(kind, kind.upper()):<10}" + "".join(f"{h:>15}" for h in heads)
    data = " " * 10 + "".join(f"{n:15d}" for n in ints)
    data += f"{_ms(ints[-1]) / float(ints[0] or 1):15.3f}ms"
    if t.version >= 16:
        data += f"{_ms(values[-2]):13.6f}ms{_ms(values[-1]):13.6f}ms"
    if t.version >= 17:
        head += f"{'delay max timestamp':>25}"
        data += f"{format_timestamp(getattr(t, f'{kind}_delay_max_ts')):>23}"
    return f"{head}\n{data}\n"


def delay_table(t: TaskStats) -> str:
    """The -d tables: CPU, IO, SWAP, RECLAIM, THRASHING, COMPACT, WPCOPY, IRQ."""
    rows = (delay_row(t, kind) for kind in DELAY_KINDS)
    return "\n\n" + "".join(row for row in rows if row is not None)


def io_line(t: TaskStats) -> str:
    """The -i line (bytes, rounded down to KiB by the kernel), or why there is none."""
    if t.scope == "tgid":
        return TGID_IO_NOTE + "\n"
    read, write, cancelled = t.read_bytes, t.write_bytes, t.cancelled_write_bytes
    if read is None or write is None or cancelled is None:
        return f"{t.ac_comm}: no I/O accounting in struct version {t.version}\n"
    return f"{t.ac_comm}: read={read}, write={write}, cancelled_write={cancelled}\n"


def ctxsw_block(t: TaskStats) -> str:
    """The -q block: cumulative voluntary and involuntary context switches."""
    nv, niv = ("n/a" if v is None else str(v) for v in (t.nvcsw, t.nivcsw))
    return f"\n\nTask   {'voluntary':>15}{'nonvoluntary':>15}\n       {nv:>15}{niv:>15}\n"


def cgroup_line(c: CgroupStats) -> str:
    """The -C line (task counts; "blocked" is nr_io_wait)."""
    return (f"sleeping {c.nr_sleeping}, blocked {c.nr_io_wait}, running {c.nr_running}, "
            f"stopped {c.nr_stopped}, uninterruptible {c.nr_uninterruptible}\n")


def format_stats(t: TaskStats, ident: int, sections: Sections) -> str:
    """Everything printed for one record: the PID/TGID line and -d, -i, -q sections."""
    parts = []
    if sections.delays:
        parts += [f"{'TGID' if t.scope == 'tgid' else 'PID'}\t{ident}\n", delay_table(t)]
    if sections.io:
        parts.append(io_line(t))
    if sections.ctxsw:
        parts.append(ctxsw_block(t))
    return "".join(parts)


def exit_records(record: ExitRecord) -> list[tuple[TaskStats, int]]:
    """An exit message's (record, id) pairs: the task's, then the thread group's if sent."""
    pairs = [(record.task, record.pid)]
    if record.group is not None:
        pairs.append((record.group, record.tgid or 0))
    return pairs


def format_exit(record: ExitRecord, sections: Sections) -> str:
    """Everything printed for an exit message (both records of a dual-record one)."""
    return "".join(format_stats(t, ident, sections) for t, ident in exit_records(record))


def message_size(records: Sequence[TaskStats]) -> int:
    """Bytes of the netlink message that carried ``records`` (for -v; no pad attributes)."""
    return 20 + sum(16 + (r.payload_len + 3) // 4 * 4 for r in records)
