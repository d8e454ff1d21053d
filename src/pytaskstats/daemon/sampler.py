"""Interval samples of live processes (pure: records in, sample rows out).

Every interval taskstatsd reads every thread's taskstats (:mod:`.sampling` does the
scan) and feeds them here.  Per thread the :class:`Sampler` keeps the values it
last read (the :data:`~pytaskstats.extproto.SAMPLE_DELTAS`, cumulative since the
thread's birth); a scan's deltas are folded per process (tgid), and a process
whose deltas are all 0 gives no row.  A thread is known by its tid and begin time
(``ac_btime64``/``ac_btime``, seconds, read again at every query: the kernel
computes it from the elapsed time, so it may differ by one second), so a reused
tid is a new thread.

Exactly once: a thread first seen after the first scan counts everything since its
birth (it was born during the interval); the first scan only takes the baseline.
A thread's exit record carries its totals: when the thread was sampled, the exit
makes a final *tail* delta (exit totals minus the values last read), journaled
as a sample row at the exit's time, and the exit row is marked ``sampled``.  So
over any window, sum(sample deltas) + sum(exits not sampled) counts every thread's
CPU, delays and IO once.  A thread whose exit was taken is ignored if a scan still
reads it (a zombie not yet reaped).

Units: ``*_ns`` are CLOCK_REALTIME ns; values keep the kernel's units.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal, NamedTuple, overload

from ..extproto import SAMPLE_DELTAS
from ..records import ExitRecord, TaskStats

__all__ = ["ProcSample", "Sampler"]

BTIME_SLACK_S = 1  # a thread's begin time as read may differ by this much
FORGET_SCANS = 2  # a thread not read in this many scans (its exit was lost) is forgotten

_deltas = attrgetter(*SAMPLE_DELTAS)
Values = tuple[int | None, ...]


class ProcSample(NamedTuple):
    """One sample row before the daemon adds its cgroup and access tags: a process's
    deltas over ``interval_ns`` ending at ``time_ns`` (``tail``: a thread's last
    delta, from its exit record).  ``deltas`` in SAMPLE_DELTAS order (None:
    unmeasured); ``hiwater_rss`` a level (KB)."""

    time_ns: int
    interval_ns: int
    tgid: int
    comm: str | None
    uid: int | None
    gid: int | None
    btime: int | None
    threads: int
    tail: bool
    deltas: Values
    hiwater_rss: int | None


@dataclass(slots=True)
class _Thread:
    btime: int
    values: Values
    at_ns: int  # when these values were read (the scan's time)
    scan: int  # the scan that read them last


@dataclass(slots=True)
class _Proc:
    """A process's fold during one scan."""

    comm: str | None = None
    uid: int | None = None
    gid: int | None = None
    btime: int | None = None
    leader: bool = False
    threads: int = 0
    sums: list[int | None] = field(default_factory=lambda: [0] * len(SAMPLE_DELTAS))
    hiwater: int | None = None


def _btime(stats: TaskStats) -> int:
    return stats.ac_btime64 or stats.ac_btime or 0


@overload
def _minus(now: Values, before: Values, *, clamp: Literal[True]) -> Values: ...
@overload
def _minus(now: Values, before: Values) -> Values | None: ...
def _minus(now: Values, before: Values, *, clamp: bool = False) -> Values | None:
    """``now - before`` per field (None where either is unmeasured); when a counter
    went back: None (not the same thread), or with ``clamp`` 0 for that field."""
    out: list[int | None] = []
    for a, b in zip(now, before, strict=True):
        if a is None or b is None:
            out.append(None)
        elif a >= b:
            out.append(a - b)
        elif clamp:
            out.append(0)
        else:
            return None
    return tuple(out)


def _busy(deltas: Values | list[int | None]) -> bool:
    return any(d for d in deltas)


class Sampler:
    """Per-thread state and per-process folds of the scans (see the module docstring).

    One scan: :meth:`begin`, :meth:`feed` each thread read, :meth:`finish` (its
    rows).  :meth:`exit` takes a thread's exit record at any time, also mid-scan.
    """

    def __init__(self) -> None:
        self.threads: dict[int, _Thread] = {}
        self.gone: dict[int, tuple[int, int]] = {}  # tid -> (btime, scan) of taken exits
        self.scans = 0  # scans begun
        self.last_ns: int | None = None  # the time of the last finished scan
        self._now_ns = 0
        self._procs: dict[int, _Proc] = {}
        self._live: set[tuple[int, int]] = set()  # (tgid, btime) read by the last scan

    @property
    def scanning(self) -> bool:
        """Whether a scan has begun and not finished."""
        return self.scans > 0 and self._now_ns != 0

    def begin(self, now_ns: int) -> None:
        """Start a scan at ``now_ns`` (the end of the interval it samples)."""
        self.scans += 1
        self._now_ns = now_ns
        self._procs = {}

    def feed(self, tid: int, tgid: int, stats: TaskStats) -> None:
        """Take thread ``tid`` of process ``tgid`` as the scan read it."""
        btime = _btime(stats)
        gone = self.gone.get(tid)
        if gone is not None and abs(gone[0] - btime) <= BTIME_SLACK_S:
            return  # its exit was taken: a zombie's values are in it
        values: Values = _deltas(stats)
        before = self.threads.get(tid)
        delta: Values | None = None
        if before is not None and abs(before.btime - btime) <= BTIME_SLACK_S:
            delta = _minus(values, before.values)
            btime = before.btime
        if delta is None and self.last_ns is not None:
            delta = values  # born during the interval: everything since its birth
        self.threads[tid] = _Thread(btime, values, self._now_ns, self.scans)
        proc = self._procs.get(tgid)
        if proc is None:
            proc = self._procs[tgid] = _Proc()
        if proc.comm is None or tid == tgid:
            proc.comm, proc.uid, proc.gid = stats.ac_comm, stats.ac_uid, stats.ac_gid
            proc.btime, proc.leader = btime, tid == tgid
        proc.threads += 1
        if stats.hiwater_rss is not None:
            proc.hiwater = max(proc.hiwater or 0, stats.hiwater_rss)
        if delta is not None:
            sums = proc.sums
            for i, d in enumerate(delta):
                s = sums[i]
                sums[i] = None if d is None or s is None else s + d

    def finish(self) -> list[ProcSample]:
        """End the scan: the rows of the processes that did anything since the last
        scan (none after the first, which takes the baseline)."""
        now, interval = self._now_ns, self._now_ns - (self.last_ns or self._now_ns)
        baseline = self.last_ns is None
        rows = [] if baseline else [
            ProcSample(now, interval, tgid, p.comm, p.uid, p.gid, p.btime, p.threads, False,
                       tuple(p.sums), p.hiwater)
            for tgid, p in self._procs.items() if _busy(p.sums)]
        self.last_ns, self._now_ns = now, 0
        self._live = {(tgid, p.btime or 0) for tgid, p in self._procs.items()}
        self._procs = {}
        oldest = self.scans - FORGET_SCANS
        self.threads = {t: s for t, s in self.threads.items() if s.scan > oldest}
        self.gone = {t: g for t, g in self.gone.items() if g[1] > oldest}
        return rows

    def exit(self, record: ExitRecord, time_ns: int) -> tuple[bool, ProcSample | None]:
        """Take thread ``record.pid``'s exit received at ``time_ns``: whether its
        totals are covered by the samples (it was sampled), and its tail row (None
        when it did nothing since it was last read, or was never read).  A scan
        that reads the thread again (a zombie) ignores it from now on.  The kernel
        takes the exit record before the task's last context switches, so a read
        between the two may show more of them (cpu_count, nvcsw, run delay): the
        tail is 0 there, not negative."""
        task = record.task
        btime = _btime(task)
        before = self.threads.get(record.pid)
        if before is None or abs(before.btime - btime) > BTIME_SLACK_S:
            self.gone[record.pid] = (btime, self.scans)
            return False, None
        del self.threads[record.pid]
        self.gone[record.pid] = (before.btime, self.scans)
        delta = _minus(_deltas(task), before.values, clamp=True)
        if not _busy(delta):
            return True, None
        tgid = record.tgid if record.tgid is not None else (task.ac_tgid or record.pid)
        return True, ProcSample(time_ns, max(time_ns - before.at_ns, 0), tgid, task.ac_comm,
                                task.ac_uid, task.ac_gid, before.btime, 1, True, delta,
                                task.hiwater_rss)

    def running(self, tgid: int, btime: int | None) -> bool:
        """Whether process ``tgid`` begun at ``btime`` was alive at the last scan."""
        if btime is None:
            return False
        return any((tgid, btime + d) in self._live
                   for d in range(-BTIME_SLACK_S, BTIME_SLACK_S + 1))

    def live(self) -> Iterator[tuple[int, int]]:
        """(tgid, btime) of the processes the last scan read."""
        return iter(self._live)


def sample_values(sample: ProcSample, cgroup: str | None, tags: tuple[Any, Any, Any],
                  pid: int) -> tuple[Any, ...]:
    """A row's values in ``journal_schema.SAMPLE_COLUMNS`` order: ``pid`` the tgid in
    the initial namespace, ``tags`` (owner_sees, pidns, ns_ids)."""
    sees, pidns, ids = tags
    return (sample.time_ns, sample.interval_ns, pid, sample.tgid, sample.comm, sample.uid,
            sample.gid, cgroup, sample.btime, sample.threads, int(sample.tail),
            None if sees is None else int(sees), pidns, ids, *sample.deltas,
            sample.hiwater_rss)
