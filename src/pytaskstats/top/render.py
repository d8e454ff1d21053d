"""Text and JSON of a frame's rows: pure, shared by the screen and batch mode.

Cells: percentages with one decimal, rates in compact units (K/M/G = 1024^n
bytes/s; k/M per second for context switches), "-" when there is no value yet
(the first refresh) and "n/a" for a delay that is not measured (delay accounting
off).  JSON rows carry kernel field names for totals (kernel units) and derived
names for rates and percentages.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..textfmt import delayacct_json, shown
from .model import COUNTED, METRICS, Frame, Row
from .systotals import system_totals, task_io
from .view import SORTS, ViewState

__all__ = ["WIDE_AT", "Info", "Replayed", "command_text", "frame_json", "header_lines",
           "last_column_at", "row_cells", "system_line", "table_header"]

PID_W, USER_W, PCT_W, RATE_W, THR_W = 7, 8, 5, 5, 4


class Replayed(NamedTuple):
    """The journal interval a replayed frame shows: CLOCK_REALTIME ns, and what the
    header should say about it ("" nothing: e.g. the end of the range, a cut)."""

    start_ns: int
    end_ns: int
    note: str = ""


class Info(NamedTuple):
    """What the header says about the source: the backend, and why exits are not
    tracked (None: they are) or what restricts the rows (None: nothing);
    ``replay``: the interval shown when replaying the journal (None: live)."""

    backend: str
    exits_note: str | None = None
    scope_note: str | None = None
    replay: Replayed | None = None


def pct(value: float | None) -> str:
    """A percentage cell: ``12.3``, ``1234`` (past 999.9), ``-``."""
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 999.95 else f"{value:.0f}"


def compact(value: float | None, base: int = 1024) -> str:
    """A rate in at most 4 characters: ``0``, ``512``, ``4.0K``, ``123M``."""
    if value is None:
        return "-"
    units = ("", "K", "M", "G", "T") if base == 1024 else ("", "k", "M", "G", "T")
    for unit in units:
        if value < 999.5 or unit == units[-1]:
            if unit == "" or value >= 9.95:
                return f"{value:.0f}{unit}"
            return f"{value:.1f}{unit}"
        value /= base
    raise AssertionError("unreachable")


def _metric_cell(index: int, value: float | None, delay_off: bool) -> str:
    metric = METRICS[index]
    if value is None and metric.delay and delay_off:
        return "n/a"
    if metric.name.endswith("_pct"):
        return pct(value)
    return compact(value, 1024 if "bytes" in metric.name else 1000)


def _widths() -> list[int]:
    return [PCT_W if m.name.endswith("_pct") else RATE_W for m in METRICS]


EXTRA_LABELS = ("RSS", "PEAK", "THR")  # the wide layout's memory and thread columns
EXTRA_W = (RATE_W, RATE_W, THR_W)
WIDE_AT = 100  # screen columns from which the wide layout is shown
PSI_NAMES = {"cpu": "cpu", "io": "io", "memory": "mem"}  # the header's short names


def table_header(state: ViewState, wide: bool = False) -> str:
    """The column header line (``wide``: with RSS, PEAK, THR); a ``*`` just before
    the sorted column's label (none when that column is not shown)."""
    first = {"thread": "TID", "cgroup": "PROCS"}.get(state.level, "PID")
    last = "CGROUP" if state.level == "cgroup" else "COMMAND"
    labels = [first, "S", "USER", *(m.label for m in METRICS),
              *(EXTRA_LABELS if wide else ()), last]
    line = _join(labels, wide)
    column = _sort_column(state.sort, wide, len(labels))
    if column is None:
        return line
    start = _label_start(line, labels, column)
    return line[:start - 1] + "*" + line[start:] if start > 0 else "*" + line


def _sort_column(sort: str, wide: bool, count: int) -> int | None:
    """The column of sort order ``sort``; None when it is not shown."""
    if sort == "command":
        return count - 1
    if sort == "rss":
        return 3 + len(METRICS) if wide else None
    return list(SORTS).index(sort) + (sort != "pid")  # pid, (S), user, the metrics


def _label_start(line: str, labels: Sequence[str], column: int) -> int:
    pos = 0
    for index, label in enumerate(labels):
        pos = line.index(label, pos)
        if index == column:
            return pos
        pos += len(label)
    raise AssertionError("unreachable")


def _join(cells: Sequence[str], wide: bool = False) -> str:
    first, state, user, *rest, last = cells
    metrics, extras = rest[:len(METRICS)], rest[len(METRICS):]
    out = [f"{first:>{PID_W}}", f"{state:1}", f"{user:<{USER_W}}"]
    out += [f"{c:>{w}}" for c, w in zip(metrics, _widths(), strict=True)]
    if wide:
        out += [f"{c:>{w}}" for c, w in zip(extras, EXTRA_W, strict=True)]
    return " ".join([*out, last])


def last_column_at(wide: bool = False) -> int:
    """Where the last column (command, or cgroup path) starts in a line."""
    extras = len(EXTRA_LABELS) if wide else 0
    return len(_join([""] * (len(METRICS) + 4 + extras), wide))


def command_text(row: Row, full: bool = False) -> str:
    """The last cell uncut: the cgroup path, the comm or (``full``) the command line
    (the comm when it has none), indented by its ``depth`` in the tree view."""
    text = shown((row.cmdline or row.command) if full and row.cgroup != row.command
                 else row.command)  # any user names its processes: escape ESC and the like
    if row.depth:
        text = "  " * (row.depth - 1) + "`- " + text
    return text


def state_cell(row: Row) -> str:
    """The S column: X exited, else the task state from /proc ("" unknown)."""
    return "X" if row.exited else row.state or ""


def row_cells(row: Row, delay_off: bool, command_width: int | None = None, *,
              wide: bool = False, full: bool = False) -> str:
    """One row as a line; ``command_width`` cuts the last column (keeping the end of
    a cgroup path, the start of a command); ``wide``: with RSS, PEAK, THR;
    ``full``: the command line instead of the comm."""
    command = command_text(row, full)
    if command_width is not None and len(command) > command_width:
        keep = max(command_width - 2, 0)
        command = (".." + command[-keep:] if row.cgroup == row.command and keep
                   else command[:command_width])
    user = row.user if len(row.user) <= USER_W else row.user[:USER_W - 1] + "+"
    metrics = [_metric_cell(i, v, delay_off) for i, v in enumerate(row.values)]
    extras = [compact(row.rss), compact(row.peak_rss), str(row.threads)] if wide else []
    return _join([str(row.pid), state_cell(row), user, *metrics, *extras, command], wide)


def system_line(frame: Frame, live: bool = True) -> str:
    """The machine over the interval: CPU busy, disk bytes/s (total: the tasks'
    storage IO; actual: the block devices'), PSI some/full % ("-" before the
    first rates, "n/a" what this kernel lacks); not ``live`` (a replay): the
    total only."""
    read, write = task_io(frame.rows("process"))
    total = f"{compact(read)}/{compact(write)}"
    if not live:
        return f"disk R/W/s total {total}"
    if frame.system is None or frame.seconds <= 0:
        return f"CPU -  disk R/W/s total {total} actual -  PSI% -"
    totals = system_totals(*frame.system, frame.seconds)
    cpu = "n/a" if totals.cpu_pct is None else f"{totals.cpu_pct:.1f}%"
    actual = ("n/a" if totals.read_bps is None or totals.write_bps is None
              else f"{compact(totals.read_bps)}/{compact(totals.write_bps)}")
    psi = " ".join(f"{PSI_NAMES[name]} {some:.0f}/{'-' if full is None else f'{full:.0f}'}"
                   for name, (some, full) in totals.psi.items())
    return (f"CPU {cpu}  disk R/W/s total {total} actual {actual}  "
            f"PSI% {psi or 'n/a'}")


def header_lines(frame: Frame, info: Info, state: ViewState, now: float | None = None
                 ) -> list[str]:
    """The five header lines: source and pace, system totals, delay accounting,
    exits, view (when replaying: the interval, its totals, what the replay says, its
    exits, view)."""
    if info.replay is not None:
        return replay_lines(frame, info, info.replay, state)
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    rate = frame.exits_per_s
    first = (f"taskstats top {clock}  every {state.interval:g}s  {info.backend}  "
             f"{frame.tasks} tasks {frame.processes} procs  "
             f"exits/s {'-' if rate is None else f'{rate:.1f}'}")
    return [first, system_line(frame), delay_line(frame.delayacct), exits_line(frame, info),
            view_line(state, info)]


REPLAY_KEYS_LINE = "REPLAY of taskstatsd's journal: t next interval  T previous  j jump"


def replay_lines(frame: Frame, info: Info, replay: Replayed, state: ViewState) -> list[str]:
    """The header of a replayed interval (of taskstatsd's journal, whatever
    ``info.backend``): its local time range and length, the replay's note (or its
    keys), the exits in it, the view."""
    start, end = replay.start_ns / 1e9, replay.end_ns / 1e9
    day = time.strftime("%Y-%m-%d", time.localtime(start))
    span = (f"{day} {time.strftime('%H:%M:%S', time.localtime(start))}-"
            f"{time.strftime('%H:%M:%S', time.localtime(end))}")
    if time.strftime("%Y-%m-%d", time.localtime(end)) != day:
        span = f"{span} (+1 day)"
    rate = frame.exits_per_s
    first = (f"taskstats top REPLAY {span} {frame.seconds:g}s  {frame.processes} procs  "
             f"exits/s {'-' if rate is None else f'{rate:.1f}'}")
    exits = (f"exits in this interval: {frame.process_exits_total} processes, "
             f"{frame.exits_total} tasks")
    totals = system_line(frame, live=False) + "  (CPU, actual disk, PSI: not journaled)"
    return [first, totals, replay.note or REPLAY_KEYS_LINE, exits, view_line(state, info)]


def delay_line(state: bool | None) -> str:
    """Delay accounting: its state, and how to switch it on when it is off."""
    if state is None:
        return "delay accounting: not in this kernel (IOW% MEMW% IRQ% read 0)"
    if state:
        return "delay accounting on (tasks started before it show no IO/mem/IRQ waits)"
    return "delay accounting OFF: IO/mem/IRQ waits n/a; D (root) or taskstats delayacct on"


def exits_line(frame: Frame, info: Info) -> str:
    """Exits since start and losses, or why they are not tracked."""
    if info.exits_note is not None:
        return f"exits: {info.exits_note}"
    left = (f"  implausible delays left out {frame.discarded_total}"
            if frame.discarded_total else "")
    return (f"exits since start: {frame.process_exits_total} processes, "
            f"{frame.exits_total} tasks  lost {frame.lost_total}{left}")


def view_line(state: ViewState, info: Info) -> str:
    """Sort, level, filters, pause (and any restriction of the rows)."""
    parts = [f"sort {state.describe_sort()}", f"per {state.level}",
             f"filter {state.filters.describe()}"]
    if state.active_only:
        parts.append("active only")
    if state.tree and state.level == "process":
        parts.append("tree")
    if info.scope_note:
        parts.append(info.scope_note)
    if state.paused:
        parts.append("PAUSED")
    return "  ".join(parts)


def text_block(frame: Frame, rows: Sequence[Row], info: Info, state: ViewState) -> str:
    """A batch refresh: header lines, column header, every row (the wide layout,
    commands uncut)."""
    off = frame.delayacct is False
    lines = [*header_lines(frame, info, state), table_header(state, wide=True)]
    lines += [row_cells(r, off, wide=True, full=state.full_command) for r in rows]
    return "\n".join(lines) + "\n"


def row_json(row: Row, level: str, delay_off: bool) -> dict[str, Any]:
    """A row: identity, derived values by METRICS name, totals by kernel name (a
    delay that is not measured is null)."""
    if level == "cgroup":
        out: dict[str, Any] = {"cgroup": row.cgroup, "processes": row.pid}
    else:
        out = {"ac_pid": row.pid if level == "thread" else None, "ac_tgid": row.tgid,
               "ac_uid": row.uid, "user": row.user, "ac_comm": row.command,
               "cgroup": row.cgroup, "exited": row.exited, "state": row.state,
               "ppid": row.ppid, "nice": row.nice, "rss_bytes": row.rss,
               "peak_rss_bytes": row.peak_rss, "cmdline": row.cmdline}
    out.update(threads=row.threads, seconds=round(row.seconds, 6),
               lifetime_s=None if row.lifetime is None else round(row.lifetime, 6))
    out.update((m.name, None if v is None else round(v, 3))
               for m, v in zip(METRICS, row.values, strict=True))
    delays = {f for m in METRICS if m.delay for f in m.fields}
    out.update((name, None if delay_off and name in delays else total)
               for name, total in zip(COUNTED, row.totals, strict=True))
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def system_json(frame: Frame) -> dict[str, Any]:
    """The header's system totals (None: not known: first refresh, replay, or not
    in this kernel); disk rates in bytes/s, PSI in % of the interval."""
    read, write = task_io(frame.rows("process"))
    out: dict[str, Any] = {"cpu_busy_pct": None,
                           "disk_total": {"read_bytes_per_s": _round(read),
                                          "write_bytes_per_s": _round(write)},
                           "disk_actual": None, "psi": None}
    if frame.system is None or frame.seconds <= 0:
        return out
    totals = system_totals(*frame.system, frame.seconds)
    out["cpu_busy_pct"] = _round(totals.cpu_pct)
    if totals.read_bps is not None and totals.write_bps is not None:
        out["disk_actual"] = {"read_bytes_per_s": _round(totals.read_bps),
                              "write_bytes_per_s": _round(totals.write_bps)}
    out["psi"] = {name: {"some_pct": _round(some), "full_pct": _round(full)}
                  for name, (some, full) in totals.psi.items()} or None
    return out


def frame_json(frame: Frame, rows: Sequence[Row], info: Info, state: ViewState,
               now: float | None = None) -> dict[str, Any]:
    """A refresh as one JSON object (``time``: wall clock, for logs only; when
    replaying, the interval's end, and ``replay`` its bounds in ns and note)."""
    off = frame.delayacct is False
    replay = info.replay
    if now is None:
        now = time.time() if replay is None else replay.end_ns / 1e9
    out: dict[str, Any] = {
        "time": round(now, 3),
        "interval_s": None if frame.interval_ns is None else round(frame.seconds, 6),
        "backend": info.backend, "delayacct": delayacct_json(frame.delayacct),
        "tasks": frame.tasks, "processes": frame.processes,
        "exits": {"tracked": info.exits_note is None, "note": info.exits_note,
                  "tasks": frame.exits,
                  "per_s": None if frame.exits_per_s is None else round(frame.exits_per_s, 3),
                  "tasks_since_start": frame.exits_total,
                  "processes_since_start": frame.process_exits_total,
                  "lost": frame.lost, "lost_since_start": frame.lost_total},
        "discarded_deltas": frame.discarded, "discarded_since_start": frame.discarded_total,
        "level": state.level, "sort": state.sort, "reverse": state.reverse,
        "filters": {"user": state.filters.user, "command": state.filters.command,
                    "cgroup": state.filters.cgroup},
        "system": system_json(frame),
        "rows": [row_json(r, state.level, off) for r in rows],
    }
    if replay is not None:
        out["replay"] = {"start_ns": replay.start_ns, "end_ns": replay.end_ns,
                         "note": replay.note or None}
    return out
