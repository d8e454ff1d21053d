"""A replayed interval as the live view's :class:`~.frame.Frame` (pure, no I/O).

The journal's rows are turned into the two samples the live model would have
taken at the interval's ends, and a fresh :class:`~.model.Model` accounts them,
so sorting, filtering, grouping and rendering are the live view's own:

- each sample row becomes one record per process (tid = tgid) that stands for
  ``threads`` threads (``Sample.folds``): zeros at the start, the row's deltas at
  the end, so the frame's deltas are the row's.  CPU time is the row's
  ``ac_utime + ac_stime`` (us) as ns: the journal keeps no ``cpu_run_virtual_total``;
- each exit row becomes an :class:`~pytaskstats.records.ExitRecord` at the end;
  the model rates it as it rates a live exit: in full when the task was born in
  the interval, else by its final totals minus what it had at the start, known
  when its process has a sample row in the interval (its leader then starts at
  its final totals minus that row's deltas); else it has no rates ("-").

A replayed process row's totals are its deltas over the interval (the journal
keeps no lifetime totals of live processes); an exited row's, its final totals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..fields import FIELDS
from ..records import ExitRecord, TaskStats
from .counters import COUNTED, Counters, counters
from .frame import Frame, Sample
from .model import Model

__all__ = ["exit_record", "frame_of", "sample_counters"]

Row = Mapping[str, Any]
_FIELD_NAMES = frozenset(f.name for f in FIELDS)
_CPU = "cpu_run_virtual_total"


def sample_counters(row: Row) -> dict[str, int | None]:
    """The COUNTED fields of a sample row (its deltas; None where it has none)."""
    out: dict[str, int | None] = {n: row.get(n) for n in COUNTED if n != _CPU}
    utime, stime = row.get("ac_utime"), row.get("ac_stime")
    out[_CPU] = None if utime is None or stime is None else (utime + stime) * 1000
    return out


def exit_record(row: Row) -> ExitRecord:
    """An exit row of the journal (kernel field names) as the record it came from."""
    fields = {k: v for k, v in row.items() if k in _FIELD_NAMES}
    task = TaskStats(**fields, source="daemon")
    pid = int(row.get("pid") or task.ac_pid or 0)
    return ExitRecord(task=task, pid=pid, tgid=row.get("tgid") or task.ac_tgid,
                      cpu=row.get("cpu"))


def _record(row: Row, tgid: int, values: Mapping[str, Any]) -> TaskStats:
    btime = row.get("btime")
    return TaskStats(ac_pid=tgid, ac_tgid=tgid, ac_uid=row.get("ac_uid"),
                     ac_comm=row.get("comm"), ac_btime=btime, ac_btime64=btime,
                     hiwater_rss=row.get("hiwater_rss"), source="daemon", **values)


def _minus(totals: Counters, delta: Mapping[str, int | None]) -> dict[str, int | None]:
    """``totals`` (COUNTED order) less the row's ``delta``, not below 0."""
    return {n: max(t - (delta[n] or 0), 0) for n, t in zip(COUNTED, totals, strict=True)}


def _leaders(exits: Sequence[ExitRecord]) -> dict[int, ExitRecord]:
    """tgid -> the exit that ended the process with its leader (pid == tgid)."""
    return {rec.pid: rec for rec in exits
            if rec.pid == (rec.tgid or rec.pid) and rec.ended_process is not False}


def frame_of(samples: Iterable[Row], exit_rows: Iterable[Row], start_ns: int, end_ns: int,
             names: Callable[[Iterable[int | None]], dict[int, str]]) -> Frame:
    """The frame of the interval (``start_ns``, ``end_ns``] from its sample rows and
    its exit rows; ``names`` gives uid -> user name."""
    exit_rows = list(exit_rows)
    exits = [exit_record(r) for r in exit_rows]
    leaders = _leaders(exits)
    begin: dict[int, TaskStats] = {}
    end: dict[int, TaskStats] = {}
    cgroups: dict[int, str] = {}
    folds: dict[int, int] = {}
    for row in samples:
        tgid = int(row["tgid"])
        delta = sample_counters(row)
        folds[tgid] = max(int(row.get("threads") or 1), 1)
        if row.get("cgroup") is not None:
            cgroups[tgid] = row["cgroup"]
        if tgid in leaders:  # gone by the end: its exit is rated against this start
            begin[tgid] = _record(row, tgid, _minus(counters(leaders[tgid].task), delta))
        else:
            begin[tgid] = _record(row, tgid, dict.fromkeys(delta, 0))
            end[tgid] = _record(row, tgid, delta)
    for row, rec in zip(exit_rows, exits, strict=True):
        if row.get("cgroup") is not None:
            cgroups.setdefault(rec.tgid or rec.pid, row["cgroup"])
    users = names([*(t.ac_uid for t in begin.values()), *(e.task.ac_uid for e in exits)])
    model = Model(retain_s=1.0)  # exited rows stay for this interval only
    # a row's deltas span its thread's two reads, which sliced scans under load can set
    # further apart than the scans' ends (the interval), and CPU comes in whole ticks:
    # the plausibility rule (against waits of hours charged from a stale start) gets an
    # interval and a second of tolerance
    common: dict[str, Any] = {"span_ns": (end_ns - start_ns) // 2 + 500_000_000,
                              "cgroups": cgroups, "users": users, "delayacct": None,
                              "folds": folds}
    model.update(Sample(t_ns=start_ns, tasks=begin, tgids={t: t for t in begin}, **common))
    return model.update(Sample(t_ns=end_ns, tasks=end, tgids={t: t for t in end},
                               exits=exits, **common))
