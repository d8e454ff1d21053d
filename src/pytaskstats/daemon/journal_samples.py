"""Reading the journal's samples beside its exits (SQL text and row shaping of both).

A sample row is a process's deltas over an interval (daemon/sampler.py).  Sums
over samples and exits count every task once: the samples' deltas plus the exits
whose thread was never sampled (an exit row marked ``sampled`` has its totals in
the samples already: its own sums are left out, its count stays).  The
plausibility rule for a sample: its threads together waited at most ``threads``
intervals (:func:`~pytaskstats.plausible.sql_plausible_sample`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..extproto import AGGREGATES, SAMPLE_DELTAS
from ..fields import DELAY_KINDS, FIELDS
from ..plausible import sql_plausible_sample

__all__ = [
    "AT_WINDOW_NS",
    "KINDS",
    "SAMPLE_SORTS",
    "at_window",
    "check_kind",
    "count_implausible",
    "exit_dict",
    "merge_groups",
    "merge_rows",
    "ns_pid",
    "sample_aggregate",
    "sample_dict",
    "sample_implausible",
    "sort_rows",
    "uncovered",
]

KINDS = ("exit", "sample")
AT_WINDOW_NS = 60_000_000_000  # at_ns without samples: this long around it
# the columns a sample row is read with (the dict renames ac_comm to comm)
SAMPLE_SELECT = ("time_ns", "interval_ns", "pid", "tgid", "ac_comm", "ac_uid", "cgroup",
                 "btime", "threads", *SAMPLE_DELTAS, "hiwater_rss")
SAMPLE_SORTS = tuple(c for c in SAMPLE_SELECT if c != "pid")
_DELTAS = frozenset(SAMPLE_DELTAS)
_TOTAL_KIND = {f"{k}_delay_total": k for k in DELAY_KINDS}
_MAX, _MIN = "MAX(", "MIN("
Running = Callable[[int, int | None], bool]
_U64 = 1 << 64
_U64_NAMES = frozenset(f.name for f in FIELDS if f.ctype == "u64")


def ns_pid(ns_ids: str | None, level: int, part: int) -> int | None:
    """From an ``ns_ids`` value, the pid (``part`` 0), tgid (1) or ppid (2) at PID
    namespace ``level`` (1 for the first below the initial); None where unknown."""
    if not ns_ids or level < 1:
        return None
    parts = ns_ids.split("/")
    pids = parts[part].split() if part < len(parts) else []
    return int(pids[level - 1]) if level <= len(pids) else None


def translated(row: dict[str, Any], level: int) -> dict[str, Any]:
    """An exit row with its pids at namespace ``level`` (invisible ones 0, as the
    kernel answers)."""
    ids = row.pop("ns_ids")
    pid, tgid, ppid = (ns_pid(ids, level, part) for part in range(3))
    row.update(pid=pid, tgid=tgid)
    for key, value in (("ac_pid", pid), ("ac_tgid", tgid), ("ac_ppid", ppid)):
        if row.get(key) is not None:
            row[key] = value or 0
    return row


def exit_dict(row: sqlite3.Row) -> dict[str, Any]:
    """An exit row as history answers it (u64 fields back from two's complement)."""
    out = {"kind": "exit", **dict(row)}
    out["sampled"] = bool(out.get("sampled"))
    if out["ended_process"] is not None:
        out["ended_process"] = bool(out["ended_process"])
    for name in _U64_NAMES:
        value = out[name]
        if value is not None and value < 0:
            out[name] = value + _U64
    return out


def check_kind(kind: str | None, *, scan: bool = False) -> tuple[str, ...]:
    """The tables' kinds a query reads: both for None; "scan" (with ``scan``: the
    sample rows of scans, not those an exit completed) reads the samples."""
    if kind is None:
        return KINDS
    if scan and kind == "scan":
        return ("sample",)
    if kind not in KINDS:
        raise ValueError(f"kind must be 'exit' or 'sample'{', or scan' if scan else ''}, "
                         f"not {kind!r}")
    return (kind,)


def uncovered(aggregate: str) -> str:
    """An exit aggregate leaving out the rows whose totals are sampled (SUMs only:
    a peak or a minimum counts nothing twice)."""
    if not aggregate.startswith("SUM("):
        return aggregate
    return f"SUM(CASE WHEN sampled IS NULL THEN {aggregate[4:-1]} END)"


def sample_aggregate(name: str) -> str:
    """The aggregate of field ``name`` over sample rows (NULL where samples lack it)."""
    if name == "hiwater_rss":
        return "MAX(hiwater_rss)"
    if name not in _DELTAS or not AGGREGATES[name].startswith("SUM("):
        return "NULL"
    kind = _TOTAL_KIND.get(name)
    if kind is None:
        return f"SUM({name})"
    return f"SUM(CASE WHEN {sql_plausible_sample(kind)} THEN {name} END)"


def sample_implausible(fields: Iterable[str]) -> str:
    """The select item counting sample rows with an implausible delay in ``fields``."""
    return count_implausible(fields, _TOTAL_KIND, sql_plausible_sample)


def count_implausible(fields: Iterable[str], kind_of: dict[str, str],
                      plausible: Callable[[str], str]) -> str:
    """The select item counting rows with an implausible delay among ``fields``
    (``kind_of``: field -> delay kind; ``plausible``: kind -> the SQL test)."""
    kinds = dict.fromkeys(kind_of[f] for f in fields if f in kind_of)
    if not kinds:
        return "0 AS implausible"
    return ("COALESCE(SUM(NOT (" + " AND ".join(plausible(k) for k in kinds)
            + ")), 0) AS implausible")


def sample_dict(row: sqlite3.Row, level: int, running: Running | None) -> dict[str, Any]:
    """A sample row as history answers it (extproto.SAMPLE_KEYS): tgid at namespace
    ``level`` (0: initial), ``running`` asked of the daemon's last scan."""
    out = dict(row)
    tgid = out.pop("pid")  # the initial namespace's, which the scans know
    ids = out.pop("ns_ids", None)
    if level:
        out["tgid"] = ns_pid(ids, level, 1) or 0
    alive = running is not None and running(tgid, out["btime"])
    head = {"kind": "sample", "time_ns": out.pop("time_ns"),
            "interval_ns": out.pop("interval_ns"), "tgid": out.pop("tgid"),
            "comm": out.pop("ac_comm"), "ac_uid": out.pop("ac_uid"),
            "cgroup": out.pop("cgroup"), "btime": out.pop("btime"),
            "threads": out.pop("threads"), "running": alive}
    return {**head, **out}


def at_window(select: Callable[[str, list[Any]], list[Any]], at_ns: int
              ) -> tuple[int, int | None]:
    """(since_ns, until_ns) of the sample interval holding ``at_ns``: (end - interval,
    end], the end being the first scan at or after it; after the last scan, from it
    on (None: open); when no scan's interval holds it (before the journal's first
    interval, or in a gap while nothing sampled), AT_WINDOW_NS around it, as
    without scans: never another time's interval.  ``select`` runs SQL."""
    rows = select("SELECT time_ns, MAX(interval_ns) FROM samples WHERE tail = 0 AND "
                  "time_ns = (SELECT MIN(time_ns) FROM samples WHERE time_ns >= ? AND "
                  "tail = 0)", [at_ns])
    if rows and rows[0][0] is not None:
        end, interval = rows[0]
        if interval > 0 and at_ns > end - interval:
            return end - interval + 1, end + 1
    else:
        rows = select("SELECT MAX(time_ns) FROM samples WHERE time_ns < ? AND tail = 0",
                      [at_ns])
        if rows and rows[0][0] is not None:
            return rows[0][0] + 1, None
    return at_ns - AT_WINDOW_NS // 2, at_ns + AT_WINDOW_NS // 2


def _key(row: dict[str, Any], name: str) -> Any:
    if row.get("kind") == "sample" and name == "ac_comm":
        name = "comm"
    return row.get(name)


def sort_rows(rows: Iterable[dict[str, Any]], sort: str, limit: int | None
              ) -> list[dict[str, Any]]:
    """``rows`` by the value of ``sort`` ("-" first: descending; rows without it last),
    at most ``limit``."""
    name = sort.removeprefix("-")
    rows = list(rows)
    known = sorted((r for r in rows if _key(r, name) is not None),
                   key=lambda r: _key(r, name), reverse=sort.startswith("-"))
    out = known + [r for r in rows if _key(r, name) is None]
    return out if limit is None else out[:limit]


def merge_rows(exits: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]],
               sort: str | None, limit: int | None) -> list[dict[str, Any]]:
    """Exit and sample rows in one order: by ``sort`` ("-" descending; rows without
    that field last), else by time; at most ``limit``."""
    return sort_rows([*exits, *samples], sort or "time_ns", limit)


def _combine(name: str, a: Any, b: Any) -> Any:
    if a is None or b is None:
        return b if a is None else a
    aggregate = AGGREGATES.get(name, "SUM(")
    if aggregate.startswith(_MAX):
        return max(a, b)
    if aggregate.startswith(_MIN):
        return min(a, b)
    return a + b


def merge_groups(parts: Iterable[dict[str, Any]], keys: Sequence[str]
                 ) -> list[dict[str, Any]]:
    """Group rows of exits and of samples with the same ``keys`` values combined
    (sums added, peaks and minima kept; ``exits`` and ``samples`` counted), in the
    order first seen."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for part in parts:
        row = {"exits": 0, "samples": 0, **part}
        key = tuple(row.get(k) for k in keys)
        have = out.get(key)
        if have is None:
            out[key] = row
            continue
        for name, value in row.items():
            if name not in keys:
                have[name] = _combine(name, have.get(name), value)
    return list(out.values())
