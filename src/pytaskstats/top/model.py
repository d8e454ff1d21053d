"""The pure model of ``taskstats top``: samples in, rows out (no I/O, no clock).

A task is identified by its tid and its start on the monotonic clock (query time
minus ``ac_etime``): ``ac_btime`` cannot serve, since the kernel recomputes it per
query as whole wall seconds minus whole elapsed seconds, so it jitters by 1 s.
Per-task deltas are taken only against the previous sample of the *same* task, so
a reused tid never gives a negative or borrowed delta.  A task born within the
interval counts in full; one first seen later than that (missed) counts nothing.

Threads that exited since the previous sample are accounted from their exit
records (final value minus the last sample), so a process row keeps its exited
threads' last activity.  Exited processes (and threads) stay as rows for
``retain_s``, with their final totals and the rates of the interval they exited
in (so they rank among live rows by what they did, not by a lifetime average).

This module keeps the state between samples (:class:`Model`: baselines, exited
rows, exited threads' sums) and the identity rules above; the counters and metrics
are :mod:`.counters`, the values in and out :mod:`.frame`, the rows :mod:`.rows`.
"""

from __future__ import annotations

from typing import NamedTuple

from ..records import ExitRecord, TaskStats
from ..sysstat import SystemSample
from .counters import (
    COUNTED,
    METRICS,
    Counters,
    Metric,
    absent_fields,
    add,
    counters,
    derive,
    measured_metrics,
    plausible,
    sub,
)
from .frame import Counts, Frame, Row, Sample
from .rows import Dead, Meta, Unit, exited_process, exited_thread, process_rows, thread_rows

__all__ = ["COUNTED", "METRICS", "Frame", "Metric", "Model", "Row", "Sample"]


class _Base(NamedTuple):
    """What a task looked like at a sample: the baseline of its next delta."""

    start_ns: int | None  # monotonic start estimate
    etime_us: int | None
    btime: int | None
    totals: Counters


class _Exited(NamedTuple):
    row: Row
    btime: int | None  # start second of the exited task (process: of its leader)
    expires_ns: int


class _Step(NamedTuple):
    """One update's sample and what every accounting step derives from it."""

    sample: Sample
    interval: int | None  # ns since the previous sample; None for the first
    tol: int  # ns: the spread of the two samples' queries, plus 1 ms
    seconds: float  # the interval (0 for the first sample)
    measured: tuple[bool, ...]  # see counters.measured_metrics


def _base(stats: TaskStats, t_ns: int) -> _Base:
    etime = stats.ac_etime
    start = None if etime is None else t_ns - etime * 1000
    return _Base(start, etime, _btime(stats), counters(stats))


def _same(a: _Base, b: _Base, tol_ns: int) -> bool:
    """Whether two samples are of the same task (start within the queries' spread)."""
    if a.start_ns is not None and b.start_ns is not None:
        return abs(a.start_ns - b.start_ns) <= tol_ns
    return _btime_close(a.btime, b.btime)


def _btime_close(a: int | None, b: int | None) -> bool:
    return a is None or b is None or abs(a - b) <= 1


def _born_within(etime_us: int | None, interval_ns: int | None, tol_ns: int) -> bool:
    return (etime_us is not None and interval_ns is not None
            and etime_us * 1000 <= interval_ns + tol_ns)


def _btime(stats: TaskStats) -> int | None:
    return stats.ac_btime64 or stats.ac_btime


def _leader_btime(task: TaskStats) -> int | None:
    """The process's start second, from its last thread's exit record."""
    btime = _btime(task)
    if btime is None or task.ac_tgetime is None or task.ac_etime is None:
        return btime
    return btime - round((task.ac_tgetime - task.ac_etime) / 1e6)


def _tgid(tid: int, stats: TaskStats, sample: Sample) -> int:
    return sample.tgids.get(tid) or stats.ac_tgid or tid


class Model:
    """Turns successive samples into frames; keeps baselines and exited rows.

    ``retain_s``: how long exited processes and threads stay as rows.
    """

    def __init__(self, retain_s: float = 10.0) -> None:
        self.retain_ns = int(retain_s * 1e9)
        self._prev: dict[int, _Base] = {}
        self._gone: dict[int, tuple[_Base, int]] = {}  # tid -> (last sample, update no.)
        self._dead: dict[int, Dead] = {}  # tgid -> its exited threads
        self._meta: dict[int, Meta] = {}  # tgid -> its last sampled identity
        self._exited: dict[str, dict[int, _Exited]] = {"process": {}, "thread": {}}
        self._t_ns: int | None = None
        self._system: SystemSample | None = None
        self._span_ns = 0
        self._n = 0
        self._discarded = 0  # in the current update
        self.counts = Counts()

    def update(self, sample: Sample) -> Frame:
        """Account ``sample`` (and its exits) against the previous one."""
        self._n += 1
        self._discarded = 0
        interval = None if self._t_ns is None else sample.t_ns - self._t_ns
        absent = absent_fields(sample.tasks.values())
        step = _Step(sample, interval, sample.span_ns + self._span_ns + 1_000_000,
                     (interval or 0) / 1e9, measured_metrics(sample.delayacct, absent))
        units, current = self._units(step)
        extra = self._exits(step)
        self._prune(sample)
        self._prev, self._t_ns, self._span_ns = current, sample.t_ns, sample.span_ns
        self.counts.lost += sample.lost
        self.counts.discarded += self._discarded
        system = (None if self._system is None or sample.system is None
                  else (self._system, sample.system))
        self._system = sample.system
        return self._frame(step, units, extra, absent, system)

    def _frame(self, step: _Step, units: list[Unit], extra: dict[int, Counters],
               absent: frozenset[str], system: tuple[SystemSample, SystemSample] | None
               ) -> Frame:
        """The frame of this update; its rows are built when first asked for, from
        a snapshot of the exited rows and sums as they are now."""
        sample, seconds, measured = step.sample, step.seconds, step.measured
        exited = {level: tuple(e.row for e in rows.values())
                  for level, rows in self._exited.items()}
        hidden = {level: {k: e.btime for k, e in rows.items()}
                  for level, rows in self._exited.items()}
        dead = {tgid: d.sums for tgid, d in self._dead.items()}
        return Frame(
            t_ns=sample.t_ns, interval_ns=step.interval, delayacct=sample.delayacct,
            tasks=len(units), exits=len(sample.exits), lost=sample.lost,
            discarded=self._discarded, counts=self.counts, absent=absent, system=system,
            build_processes=lambda: process_rows(
                units, sample, extra=extra, dead=dead, seconds=seconds, measured=measured,
                exited=hidden["process"]) + exited["process"],
            build_threads=lambda: thread_rows(
                units, sample, seconds, measured, hidden["thread"]) + exited["thread"])

    def _units(self, step: _Step) -> tuple[list[Unit], dict[int, _Base]]:
        """The live threads with their deltas, and their baselines for the next
        update; tids whose task is gone are remembered in ``_gone``."""
        sample, interval, tol = step.sample, step.interval, step.tol
        units, current, prev = [], {}, self._prev
        for tid, stats in sample.tasks.items():
            base = _base(stats, sample.t_ns)
            current[tid] = base
            old = prev.get(tid)
            if old is not None and _same(old, base, tol):
                span = ((interval or 0) + tol) * sample.folds.get(tid, 1)
                delta: Counters | None = self._plausible(sub(base.totals, old.totals), span)
            elif _born_within(base.etime_us, interval, tol):
                delta = self._plausible(base.totals, (base.etime_us or 0) * 1000 + tol)
            else:
                delta = None
            units.append(Unit(tid, _tgid(tid, stats, sample), stats.ac_uid,
                              stats.ac_comm or "?", base.btime, base.totals, delta,
                              stats.hiwater_rss or None))
        for tid, old in prev.items():
            new = current.get(tid)
            if new is None or not _same(old, new, tol):
                self._gone[tid] = (old, self._n)
        return units, current

    def _exits(self, step: _Step) -> dict[int, Counters]:
        """Account exit records: exited rows, and the deltas they add per tgid."""
        extra: dict[int, Counters] = {}
        ended: list[tuple[ExitRecord, int, Dead]] = []
        for rec in step.sample.exits:
            tgid = rec.tgid or rec.task.ac_tgid or rec.pid
            delta = self._thread_exit(rec, tgid, step)
            if delta is not None:
                extra[tgid] = add(extra.get(tgid), delta) or delta
            if rec.ended_process or (rec.ended_process is None and tgid == rec.pid):
                ended.append((rec, tgid, self._dead.pop(tgid)))  # a tgid may end twice
        for rec, tgid, dead in ended:  # after all exits: extra has every last thread
            self._process_exit(rec, tgid, dead, step, extra.get(tgid))
        return extra

    def _thread_exit(self, rec: ExitRecord, tgid: int, step: _Step) -> Counters | None:
        """Account one exit record: its thread's row, its process's exited threads;
        the thread's delta over the interval (None when unknown)."""
        task = rec.task
        totals = counters(task)
        delta = self._exit_delta(rec.pid, task, totals, step)
        old = self._dead.get(tgid)
        self._dead[tgid] = Dead(totals, 1, self._n) if old is None else Dead(
            add(old.sums, totals) or totals, old.threads + 1, self._n)
        self.counts.exits += 1
        row = exited_thread(rec, tgid, step.sample, step.seconds,
                            derive(delta, step.seconds, step.measured))
        self._retain("thread", rec.pid, row, _btime(task), step.sample.t_ns)
        return delta

    def _process_exit(self, rec: ExitRecord, tgid: int, dead: Dead, step: _Step,
                      delta: Counters | None) -> None:
        """Keep the row of a process that ended, rated by its threads' last ``delta``."""
        self.counts.process_exits += 1
        values = derive(delta, step.seconds, step.measured)
        row = exited_process(rec, tgid, dead=dead, meta=self._meta.get(tgid),
                             sample=step.sample, seconds=step.seconds, values=values)
        self._retain("process", tgid, row, _leader_btime(rec.task), step.sample.t_ns)

    def _exit_delta(self, tid: int, task: TaskStats, totals: Counters,
                    step: _Step) -> Counters | None:
        """Final values minus the task's last sample (vanished since, or a zombie
        still listed); all of them for a task born within the interval."""
        etime = task.ac_etime or 0
        gone = self._gone.get(tid)
        for base in (gone[0] if gone else None, self._prev.get(tid)):
            if (base is not None and _btime_close(base.btime, _btime(task))
                    and etime >= (base.etime_us or 0)):
                self._gone.pop(tid, None)
                span = (etime - (base.etime_us or 0)) * 1000 + step.tol
                return self._plausible(sub(totals, base.totals), span)
        if _born_within(task.ac_etime, step.interval, step.tol):
            return self._plausible(totals, etime * 1000 + step.tol)
        return None

    def _plausible(self, delta: Counters, span_ns: int) -> Counters:
        checked, bad = plausible(delta, span_ns)
        self._discarded += bad
        return checked

    def _retain(self, level: str, key: int, row: Row, btime: int | None, t_ns: int) -> None:
        self._exited[level][key] = _Exited(row, btime, t_ns + self.retain_ns)

    def _prune(self, sample: Sample) -> None:
        """Forget what has aged out: exited rows, unmatched baselines, stale sums;
        remember each live process's identity (``_meta``)."""
        for rows in self._exited.values():
            for key in [k for k, e in rows.items() if e.expires_ns <= sample.t_ns]:
                del rows[key]
        keep = self._n - 2  # an exit may come one drain after its task vanished
        self._gone = {t: g for t, g in self._gone.items() if g[1] >= keep}
        self._dead = {t: d for t, d in self._dead.items() if d.seen >= keep}
        self._meta = {t: m for t, m in self._meta.items() if m.seen >= keep}
        for tid, stats in sample.tasks.items():
            tgid = _tgid(tid, stats, sample)
            if tid == tgid:
                self._meta[tgid] = Meta(stats.ac_comm or "?", stats.ac_uid,
                                        sample.cgroups.get(tgid), self._n)
                if tgid in self._dead:
                    self._dead[tgid] = self._dead[tgid]._replace(seen=self._n)
