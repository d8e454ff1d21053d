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
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..plausible import limit_ns
from ..records import ExitRecord, TaskStats
from ..summary import MEMORY_KINDS

__all__ = ["COUNTED", "METRICS", "Frame", "Metric", "Model", "Row", "Sample"]

# the kernel counters (pid records, kernel names and units) that rows sum and rate
COUNTED: tuple[str, ...] = (
    "cpu_run_virtual_total", "cpu_delay_total", "blkio_delay_total",
    *(f"{k}_delay_total" for k in MEMORY_KINDS), "irq_delay_total",
    "read_bytes", "write_bytes", "nvcsw", "nivcsw")
_INDEX = {name: i for i, name in enumerate(COUNTED)}
Counters = tuple[int, ...]
_get_counted = operator.attrgetter(*COUNTED)
PCT_PER_NS = 1e-7  # ns of waiting per s of interval -> percent: 100 / 1e9


class Metric(NamedTuple):
    """A derived column: ``sum(deltas of fields) * scale / seconds``.

    ``delay``: a non-CPU delay, not measured (None) while delay accounting is off.
    """

    name: str  # JSON name
    label: str  # column header
    fields: tuple[str, ...]
    scale: float
    delay: bool


METRICS: tuple[Metric, ...] = (
    Metric("cpu_pct", "CPU%", ("cpu_run_virtual_total",), PCT_PER_NS, False),
    Metric("cpu_wait_pct", "CPUW%", ("cpu_delay_total",), PCT_PER_NS, False),
    Metric("io_wait_pct", "IOW%", ("blkio_delay_total",), PCT_PER_NS, True),
    Metric("mem_wait_pct", "MEMW%", tuple(f"{k}_delay_total" for k in MEMORY_KINDS),
           PCT_PER_NS, True),
    Metric("irq_pct", "IRQ%", ("irq_delay_total",), PCT_PER_NS, True),
    Metric("read_bytes_per_s", "RD/s", ("read_bytes",), 1.0, False),
    Metric("write_bytes_per_s", "WR/s", ("write_bytes",), 1.0, False),
    Metric("ctxsw_per_s", "CSW/s", ("nvcsw", "nivcsw"), 1.0, False),
)
_METRIC_INDEXES = tuple(tuple(_INDEX[f] for f in m.fields) for m in METRICS)


def counters(stats: TaskStats) -> Counters:
    """The COUNTED fields of a record, absent ones as 0 (see ``Frame.absent``)."""
    values: Counters = _get_counted(stats)
    return values if None not in values else tuple(v or 0 for v in values)


def _sub(a: Counters, b: Counters) -> Counters:
    delta = tuple(map(operator.sub, a, b))
    if min(delta) >= 0:
        return delta
    return tuple(d if d > 0 else 0 for d in delta)  # a total reset to 0 by overflow


def _sum(rows: Sequence[Counters]) -> Counters:
    return rows[0] if len(rows) == 1 else tuple(map(sum, zip(*rows, strict=True)))


_NS_FIELDS = tuple(i for i, name in enumerate(COUNTED) if name.endswith("_total"))
_get_ns = operator.itemgetter(*_NS_FIELDS)


def plausible(delta: Counters, span_ns: int) -> tuple[Counters, int]:
    """``delta`` of one task with every ns value longer than the task lived during
    ``span_ns`` (the rule of :mod:`pytaskstats.plausible`) set to 0, and how many were.

    One task cannot run or wait longer than the time elapsed.  The kernel does
    report more when delay accounting is switched off and on again during a wait:
    the wait is then charged from a stale start time (from boot if none).
    """
    limit = limit_ns(span_ns, exact=True)  # span_ns has the sampling tolerance
    if max(_get_ns(delta)) <= limit:
        return delta, 0
    bad = [i for i in _NS_FIELDS if delta[i] > limit]
    return tuple(0 if i in bad else v for i, v in enumerate(delta)), len(bad)


def _add(a: Counters | None, b: Counters | None) -> Counters | None:
    if a is None:
        return b
    return a if b is None else tuple(map(operator.add, a, b))


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the view: a process, a thread or a cgroup.

    ``pid``: the tgid (process), tid (thread) or number of processes (cgroup).
    ``values``: one per METRICS entry over ``seconds`` (the interval; for an exited
    row, the interval it exited in), None when unknown or not measured.
    ``totals``: COUNTED sums in kernel units (a live process: its live threads plus
    the thread exits seen; an exited one: its final totals).  ``lifetime``: how
    long an exited task or process lived, in seconds.
    """

    pid: int
    tgid: int
    uid: int | None
    user: str
    command: str
    cgroup: str | None
    threads: int
    exited: bool
    seconds: float
    totals: Counters
    values: tuple[float | None, ...]
    lifetime: float | None = None

    def value(self, name: str) -> float | None:
        """The derived value ``name`` (a METRICS name)."""
        return self.values[METRIC_POSITION[name]]

    def total(self, name: str) -> int:
        """The total of kernel field ``name`` (a COUNTED name)."""
        return self.totals[_INDEX[name]]


METRIC_POSITION = {m.name: i for i, m in enumerate(METRICS)}


def derive(delta: Counters | None, seconds: float, measured: tuple[bool, ...]
           ) -> tuple[float | None, ...]:
    """METRICS values of ``delta`` over ``seconds``; None where not ``measured``."""
    if delta is None or seconds <= 0:
        return (None,) * len(METRICS)
    return tuple(
        sum(delta[i] for i in idx) * m.scale / seconds if ok else None
        for m, idx, ok in zip(METRICS, _METRIC_INDEXES, measured, strict=True))


def measured_metrics(delayacct: bool | None, absent: Iterable[str]) -> tuple[bool, ...]:
    """Which METRICS mean something: not a delay while delay accounting is off, and
    none of whose fields the records lack (older struct versions)."""
    gone = set(absent)
    return tuple(not (m.delay and delayacct is False) and not gone.intersection(m.fields)
                 for m in METRICS)


@dataclass(frozen=True, slots=True)
class Sample:
    """One refresh's input, gathered by the sampler.

    ``t_ns``: time.monotonic_ns() when the bulk query started; ``span_ns``: its
    duration.  ``tasks``: tid -> pid record; ``tgids``: tid -> tgid (from /proc);
    ``cgroups``: tgid -> cgroup path (of exited processes too, when learned at their
    birth); ``users``: uid -> name (for tasks and exits);
    ``exits``/``lost``: exit records drained (and records lost) since the last sample.
    """

    t_ns: int
    span_ns: int
    tasks: Mapping[int, TaskStats]
    tgids: Mapping[int, int] = field(default_factory=dict)
    cgroups: Mapping[int, str] = field(default_factory=dict)
    users: Mapping[int, str] = field(default_factory=dict)
    exits: Sequence[ExitRecord] = ()
    lost: int = 0
    delayacct: bool | None = None


class _Base(NamedTuple):
    """What a task looked like at a sample: the baseline of its next delta."""

    start_ns: int | None  # monotonic start estimate
    etime_us: int | None
    btime: int | None
    totals: Counters


class _Unit(NamedTuple):
    """A live thread of a frame, with its delta since the previous sample."""

    tid: int
    tgid: int
    uid: int | None
    comm: str
    btime: int | None
    totals: Counters
    delta: Counters | None


class _Exited(NamedTuple):
    row: Row
    btime: int | None  # start second of the exited task (process: of its leader)
    expires_ns: int


class _Dead(NamedTuple):
    """Exit records seen for a live process's threads, summed."""

    sums: Counters
    threads: int
    seen: int  # update number


class _Meta(NamedTuple):
    """A process as last sampled, to name it when its exit comes."""

    comm: str
    uid: int | None
    cgroup: str | None
    seen: int  # update number


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


def user_of(users: Mapping[int, str], uid: int | None) -> str:
    """The user name of ``uid`` from ``users``, else the number, else "?"."""
    if uid is None:
        return "?"
    return users.get(uid, str(uid))


@dataclass
class _Counts:
    """Totals since the model started."""

    exits: int = 0  # task exits seen
    process_exits: int = 0
    lost: int = 0
    discarded: int = 0  # impossible ns deltas dropped (see plausible())


class Frame:
    """One refresh: header facts and the rows of each view, each computed once.

    ``interval_ns`` is None for the first sample (no rates yet).  ``absent``: COUNTED
    fields the records lack (their metrics read None).  ``discarded``: impossible
    per-task deltas dropped in this refresh (see :func:`plausible`), ``discarded_total``
    since the model started.
    """

    def __init__(self, *, t_ns: int, interval_ns: int | None, delayacct: bool | None,
                 tasks: int, exits: int, lost: int, discarded: int, counts: _Counts,
                 absent: frozenset[str],
                 build_processes: Callable[[], tuple[Row, ...]],
                 build_threads: Callable[[], tuple[Row, ...]]) -> None:
        self.t_ns, self.interval_ns, self.delayacct = t_ns, interval_ns, delayacct
        self.tasks, self.exits, self.lost, self.discarded = tasks, exits, lost, discarded
        self.exits_total, self.process_exits_total = counts.exits, counts.process_exits
        self.lost_total, self.absent = counts.lost, absent
        self.discarded_total = counts.discarded
        self._build = {"process": build_processes, "thread": build_threads}
        self._rows: dict[str, tuple[Row, ...]] = {}

    @property
    def seconds(self) -> float:
        """The interval in seconds (0 for the first sample)."""
        return (self.interval_ns or 0) / 1e9

    @property
    def exits_per_s(self) -> float | None:
        """Task exits per second over the interval; None for the first sample."""
        return self.exits / self.seconds if self.interval_ns else None

    def rows(self, level: str) -> tuple[Row, ...]:
        """Rows per "process" or per "thread", live and exited (computed once)."""
        if level not in self._rows:
            self._rows[level] = self._build[level]()
        return self._rows[level]

    @property
    def processes(self) -> int:
        """Live processes."""
        return sum(not r.exited for r in self.rows("process"))


class Model:
    """Turns successive samples into frames; keeps baselines and exited rows.

    ``retain_s``: how long exited processes and threads stay as rows.
    """

    def __init__(self, retain_s: float = 10.0) -> None:
        self.retain_ns = int(retain_s * 1e9)
        self._prev: dict[int, _Base] = {}
        self._gone: dict[int, tuple[_Base, int]] = {}  # tid -> (last sample, update no.)
        self._dead: dict[int, _Dead] = {}  # tgid -> its exited threads
        self._meta: dict[int, _Meta] = {}  # tgid -> its last sampled identity
        self._exited: dict[str, dict[int, _Exited]] = {"process": {}, "thread": {}}
        self._t_ns: int | None = None
        self._span_ns = 0
        self._n = 0
        self._discarded = 0  # in the current update
        self.counts = _Counts()

    def update(self, sample: Sample) -> Frame:
        """Account ``sample`` (and its exits) against the previous one."""
        self._n += 1
        self._discarded = 0
        interval = None if self._t_ns is None else sample.t_ns - self._t_ns
        tol = sample.span_ns + self._span_ns + 1_000_000
        absent = _absent(sample)
        measured = measured_metrics(sample.delayacct, absent)
        seconds = (interval or 0) / 1e9
        units, current = self._units(sample, interval, tol)
        extra = self._exits(sample, interval, tol, measured)
        self._prune(sample)
        self._prev, self._t_ns, self._span_ns = current, sample.t_ns, sample.span_ns
        self.counts.lost += sample.lost
        self.counts.discarded += self._discarded
        exited = {level: tuple(e.row for e in rows.values())
                  for level, rows in self._exited.items()}
        hidden = {level: {k: e.btime for k, e in rows.items()}
                  for level, rows in self._exited.items()}
        dead = {tgid: d.sums for tgid, d in self._dead.items()}
        return Frame(
            t_ns=sample.t_ns, interval_ns=interval, delayacct=sample.delayacct,
            tasks=len(units), exits=len(sample.exits), lost=sample.lost,
            discarded=self._discarded, counts=self.counts, absent=absent,
            build_processes=lambda: process_rows(
                units, sample, extra=extra, dead=dead, seconds=seconds, measured=measured,
                hidden=hidden["process"]) + exited["process"],
            build_threads=lambda: thread_rows(
                units, sample, seconds, measured, hidden["thread"]) + exited["thread"])

    def _units(self, sample: Sample, interval: int | None, tol: int
               ) -> tuple[list[_Unit], dict[int, _Base]]:
        units, current, prev = [], {}, self._prev
        for tid, stats in sample.tasks.items():
            base = _base(stats, sample.t_ns)
            current[tid] = base
            old = prev.get(tid)
            if old is not None and _same(old, base, tol):
                delta: Counters | None = self._plausible(_sub(base.totals, old.totals),
                                                         (interval or 0) + tol)
            elif _born_within(base.etime_us, interval, tol):
                delta = self._plausible(base.totals, (base.etime_us or 0) * 1000 + tol)
            else:
                delta = None
            tgid = sample.tgids.get(tid) or stats.ac_tgid or tid
            units.append(_Unit(tid, tgid, stats.ac_uid, stats.ac_comm or "?", base.btime,
                                base.totals, delta))
        for tid, old in prev.items():
            new = current.get(tid)
            if new is None or not _same(old, new, tol):
                self._gone[tid] = (old, self._n)
        return units, current

    def _exits(self, sample: Sample, interval: int | None, tol: int,
               measured: tuple[bool, ...]) -> dict[int, Counters]:
        """Account exit records: exited rows, and the deltas they add per tgid."""
        extra: dict[int, Counters] = {}
        seconds = (interval or 0) / 1e9
        ended: list[tuple[ExitRecord, int, _Dead]] = []
        for rec in sample.exits:
            task = rec.task
            tgid = rec.tgid or task.ac_tgid or rec.pid
            totals = counters(task)
            delta = self._exit_delta(rec.pid, task, totals, interval, tol)
            if delta is not None:
                extra[tgid] = _add(extra.get(tgid), delta) or delta
            old = self._dead.get(tgid)
            self._dead[tgid] = _Dead(totals, 1, self._n) if old is None else _Dead(
                _add(old.sums, totals) or totals, old.threads + 1, self._n)
            self.counts.exits += 1
            row = _exited_thread(rec, tgid, sample, seconds, derive(delta, seconds, measured))
            self._retain("thread", rec.pid, row, _btime(task), sample.t_ns)
            if rec.ended_process or (rec.ended_process is None and tgid == rec.pid):
                ended.append((rec, tgid, self._dead.pop(tgid)))  # a tgid may end twice
        for rec, tgid, dead in ended:  # after all exits: extra has every last thread
            self.counts.process_exits += 1
            values = derive(extra.get(tgid), seconds, measured)
            row = _exited_process(rec, tgid, dead=dead, meta=self._meta.get(tgid),
                                  sample=sample, seconds=seconds, values=values)
            self._retain("process", tgid, row, _leader_btime(rec.task), sample.t_ns)
        return extra

    def _exit_delta(self, tid: int, task: TaskStats, totals: Counters,
                    interval: int | None, tol: int) -> Counters | None:
        """Final values minus the task's last sample (vanished since, or a zombie
        still listed); all of them for a task born within the interval."""
        etime = task.ac_etime or 0
        gone = self._gone.get(tid)
        for base in (gone[0] if gone else None, self._prev.get(tid)):
            if (base is not None and _btime_close(base.btime, _btime(task))
                    and etime >= (base.etime_us or 0)):
                self._gone.pop(tid, None)
                span = (etime - (base.etime_us or 0)) * 1000 + tol
                return self._plausible(_sub(totals, base.totals), span)
        if _born_within(task.ac_etime, interval, tol):
            return self._plausible(totals, etime * 1000 + tol)
        return None

    def _plausible(self, delta: Counters, span_ns: int) -> Counters:
        checked, bad = plausible(delta, span_ns)
        self._discarded += bad
        return checked

    def _retain(self, level: str, key: int, row: Row, btime: int | None, t_ns: int) -> None:
        self._exited[level][key] = _Exited(row, btime, t_ns + self.retain_ns)

    def _prune(self, sample: Sample) -> None:
        """Forget what has aged out: exited rows, unmatched baselines, stale sums."""
        for rows in self._exited.values():
            for key in [k for k, e in rows.items() if e.expires_ns <= sample.t_ns]:
                del rows[key]
        keep = self._n - 2  # an exit may come one drain after its task vanished
        self._gone = {t: g for t, g in self._gone.items() if g[1] >= keep}
        self._dead = {t: d for t, d in self._dead.items() if d.seen >= keep}
        self._meta = {t: m for t, m in self._meta.items() if m.seen >= keep}
        for tid, stats in sample.tasks.items():
            tgid = sample.tgids.get(tid) or stats.ac_tgid or tid
            if tid == tgid:
                self._meta[tgid] = _Meta(stats.ac_comm or "?", stats.ac_uid,
                                         sample.cgroups.get(tgid), self._n)
                if tgid in self._dead:
                    self._dead[tgid] = self._dead[tgid]._replace(seen=self._n)


def _absent(sample: Sample) -> frozenset[str]:
    for stats in sample.tasks.values():
        return frozenset(n for n, v in zip(COUNTED, _get_counted(stats), strict=True)
                         if v is None)
    return frozenset()


def _exited_thread(rec: ExitRecord, tgid: int, sample: Sample, seconds: float,
                   values: tuple[float | None, ...]) -> Row:
    task = rec.task
    return Row(pid=rec.pid, tgid=tgid, uid=task.ac_uid,
               user=user_of(sample.users, task.ac_uid), command=task.ac_comm or "?",
               cgroup=sample.cgroups.get(tgid), threads=1, exited=True,
               seconds=seconds, totals=counters(task), values=values,
               lifetime=None if task.ac_etime is None else task.ac_etime / 1e6)


def _leader_btime(task: TaskStats) -> int | None:
    """The process's start second, from its last thread's exit record."""
    btime = _btime(task)
    if btime is None or task.ac_tgetime is None or task.ac_etime is None:
        return btime
    return btime - round((task.ac_tgetime - task.ac_etime) / 1e6)


def _exited_process(rec: ExitRecord, tgid: int, *, dead: _Dead, meta: _Meta | None,
                    sample: Sample, seconds: float, values: tuple[float | None, ...]
                    ) -> Row:
    """Final totals: the group record's fields where it carries them (all threads
    ever), else the sums of the thread exits seen."""
    task, group = rec.task, rec.group
    totals = dead.sums
    if group is not None:
        carried = _get_counted(group)
        totals = tuple(d if g is None else g for d, g in zip(totals, carried, strict=True))
    lifetime = task.ac_tgetime or task.ac_etime
    comm, uid, cgroup = (meta.comm, meta.uid, meta.cgroup) if meta else (
        task.ac_comm or "?", task.ac_uid, sample.cgroups.get(tgid))
    return Row(pid=tgid, tgid=tgid, uid=uid, user=user_of(sample.users, uid), command=comm,
               cgroup=cgroup, threads=dead.threads, exited=True, seconds=seconds,
               totals=totals, values=values,
               lifetime=None if lifetime is None else lifetime / 1e6)


def _hidden(key: int, btime: int | None, hidden: Mapping[int, int | None]) -> bool:
    """A live row that is the zombie of an exited one (same id, start within 2 s)."""
    if key not in hidden:
        return False
    other = hidden[key]
    return other is None or btime is None or abs(other - btime) <= 2


def thread_rows(units: Sequence[_Unit], sample: Sample, seconds: float,
                measured: tuple[bool, ...], hidden: Mapping[int, int | None]
                ) -> tuple[Row, ...]:
    """One row per live thread."""
    return tuple(
        Row(pid=u.tid, tgid=u.tgid, uid=u.uid, user=user_of(sample.users, u.uid),
            command=u.comm, cgroup=sample.cgroups.get(u.tgid), threads=1, exited=False,
            seconds=seconds, totals=u.totals, values=derive(u.delta, seconds, measured))
        for u in units if not _hidden(u.tid, u.btime, hidden))


def process_rows(units: Sequence[_Unit], sample: Sample, *, extra: Mapping[int, Counters],
                 dead: Mapping[int, Counters], seconds: float, measured: tuple[bool, ...],
                 hidden: Mapping[int, int | None]) -> tuple[Row, ...]:
    """One row per live process: its threads' deltas plus its exited threads' last
    deltas; totals over live threads plus the thread exits seen."""
    groups: dict[int, list[_Unit]] = {}
    for u in units:
        groups.setdefault(u.tgid, []).append(u)
    out = []
    for tgid, members in groups.items():
        leader = next((u for u in members if u.tid == tgid), members[0])
        if _hidden(tgid, leader.btime, hidden):
            continue
        deltas = [u.delta for u in members if u.delta is not None]
        totals = [u.totals for u in members]
        if tgid in extra:
            deltas.append(extra[tgid])
        if tgid in dead:
            totals.append(dead[tgid])
        out.append(Row(pid=tgid, tgid=tgid, uid=leader.uid,
                       user=user_of(sample.users, leader.uid), command=leader.comm,
                       cgroup=sample.cgroups.get(tgid), threads=len(members), exited=False,
                       seconds=seconds, totals=_sum(totals),
                       values=derive(_sum(deltas) if deltas else None, seconds, measured)))
    return tuple(out)
