"""The metrics model: monotone per-cgroup and per-command-group totals.

Two inputs feed it: exit records (the per-task record of every exiting thread, so
nothing is counted twice with the thread group record) and periodic samples of the
running tasks.  Each task remembers what of it is already counted (``counted``,
keyed by tid and its start time); every observation adds only the increase, to the
cgroup and group the task is in at that moment.  Totals therefore never go down:
a live task that exits adds its last increments, a zombie sampled after its exit
adds nothing, a reused tid starts a new task, and a counter that shrinks is counted
in ``regressions`` instead of being exported.  A delay longer than its task has
lived (:mod:`pytaskstats.plausible`) is not added, and counted once per task and
kind in ``implausible``.

Values stay in kernel units here (ns, us, bytes, counts); the collector converts.
Everything is guarded by one lock: exits come from the listener thread, samples
from a sampler thread, snapshots from the HTTP server's thread.
"""

from __future__ import annotations

import operator
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..fields import BY_NAME, DELAY_KINDS
from ..plausible import implausible
from ..records import ExitRecord, TaskStats

__all__ = ["VALUE_FIELDS", "Aggregator", "Live", "Snapshot", "cap_depth", "parse_groups"]

# the per-task counters summed into every series, in this order (kernel field names)
VALUE_FIELDS: tuple[str, ...] = (
    *(f"{k}_delay_total" for k in DELAY_KINDS), *(f"{k}_count" for k in DELAY_KINDS),
    "ac_utime", "ac_stime", "read_bytes", "write_bytes")
NVALUES = len(VALUE_FIELDS)
TASK_EXITS, PROCESS_EXITS = NVALUES, NVALUES + 1  # extra slots of a cgroup's totals
MAX_FIELDS = tuple(f"{k}_delay_max" for k in DELAY_KINDS)
OTHER, UNKNOWN = "other", "unknown"
SAME_TASK_NS = 1_000_000_000  # start-time estimates of one task differ by less
CACHE_CAP = 1 << 16  # bound of each remembered set (tombstones, label caches)
_values = operator.itemgetter(*(BY_NAME[n].position for n in VALUE_FIELDS))
_maxima = operator.itemgetter(*(BY_NAME[n].position for n in MAX_FIELDS))
_ZERO = (0,) * NVALUES
_KIND_BIT = {kind: 1 << i for i, kind in enumerate(DELAY_KINDS)}
_KIND_INDEX = {kind: VALUE_FIELDS.index(f"{kind}_delay_total") for kind in DELAY_KINDS}


def cap_depth(path: str, depth: int) -> str:
    """A cgroup path cut to its first ``depth`` components ("/a/b/c/d", 2 -> "/a/b")."""
    parts = [p for p in path.split("/") if p][:depth]
    return "/" + "/".join(parts)


def parse_groups(specs: Iterable[str]) -> list[tuple[str, re.Pattern[str]]]:
    """``NAME=REGEX`` specs as (name, compiled regex) pairs, in order."""
    out = []
    for spec in specs:
        name, sep, pattern = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"command group {spec!r}: expected NAME=REGEX")
        try:
            out.append((name, re.compile(pattern)))
        except re.error as err:
            raise ValueError(f"command group {name!r}: bad regex {pattern!r}: {err}") from err
    return out


class Live(NamedTuple):
    """One running task as sampled: its record and its process's cgroup path."""

    tid: int
    tgid: int
    stats: TaskStats
    cgroup: str | None


@dataclass(slots=True)
class _Task:
    start_ns: int  # estimated start (clock - ac_etime): identifies the task with its tid
    seen_ns: int  # last observation
    cgroup: str
    counted: tuple[int, ...]  # values already added to the totals
    generation: int  # last sample that saw it
    flagged: int = 0  # bits of _KIND_BIT: kinds already counted implausible


@dataclass(slots=True)
class _Series:
    totals: list[int] = field(default_factory=lambda: [0] * (NVALUES + 2))
    maxima: tuple[int | None, ...] = (None,) * len(MAX_FIELDS)
    changed_ns: int = 0


class Snapshot(NamedTuple):
    """A consistent copy of the state, for one scrape."""

    cgroups: dict[str, tuple[tuple[int, ...], tuple[int | None, ...]]]  # totals, maxima
    groups: dict[str, tuple[int, ...]]
    live_tasks: int
    series_dropped: int
    regressions: int
    struct_version: int | None
    sample_errors: int
    sample_ok: bool
    sample_seconds: float
    implausible: dict[str, int]  # kind -> tasks whose delay of that kind was left out


class Aggregator:
    """Per-cgroup (depth-capped, at most ``max_series`` + "other") and per-command-group
    totals from exits and live samples; see the module docstring.

    ``groups``: (name, regex on comm) pairs, first match wins, else "other".
    ``resolve``: tgid -> cgroup path, used for exits the caller gives no cgroup for
    (falls back to the parent's cgroup: a child starts in its parent's).
    ``clock``: monotonic nanoseconds, the clock of the kernel's task start times.
    A cgroup series with no task and no change for ``ttl_s`` is retired (0: never);
    a task missing from samples is forgotten after ``grace_s``.
    """

    def __init__(self, *, depth: int = 3, max_series: int = 500,
                 groups: Sequence[tuple[str, re.Pattern[str]]] = (),
                 resolve: Callable[[int], str | None] = lambda _: None,
                 clock: Callable[[], int] = time.monotonic_ns, ttl_s: float = 3600.0,
                 grace_s: float = 60.0) -> None:
        if depth < 1 or max_series < 1:
            raise ValueError("the cgroup depth and the series cap must be at least 1")
        self.depth, self.max_series, self.group_rules = depth, max_series, list(groups)
        self.resolve, self.clock = resolve, clock
        self.ttl_ns, self.grace_ns = int(ttl_s * 1e9), int(grace_s * 1e9)
        self.lock = threading.Lock()
        self.cgroups: dict[str, _Series] = {}
        self.groups: dict[str, list[int]] = {}
        self.tasks: dict[int, _Task] = {}
        self.tombstones: dict[int, tuple[int, int]] = {}  # exited tid -> (start, exit seen)
        self.exit_labels: dict[int, str] = {}  # tgid -> label, for exits of unsampled tasks
        self.comm_groups: dict[str | None, str] = {}
        self.path_labels: dict[str, str] = {}
        self.folded: set[str] = set()
        self.series_dropped = self.regressions = 0
        self.implausible = dict.fromkeys(DELAY_KINDS, 0)
        self.struct_version: int | None = None
        self.generation = self.live_tasks = self.sample_errors = 0
        self.sample_ok, self.sample_seconds = False, 0.0

    # ------------------------------------------------------------ inputs

    def on_exit(self, record: ExitRecord, cgroup: str | None = None) -> None:
        """Account one exit (its per-task record) in the cgroup the last sample saw it
        in (newer than any birth record), else ``cgroup`` (the process's, if the
        caller knows it), else its process's or parent's now."""
        now, stats = self.clock(), record.task
        start = now - (stats.ac_etime or 0) * 1000
        with self.lock:
            task = self.tasks.pop(record.pid, None)
            if task is not None and not _same(task.start_ns, task.seen_ns, start):
                task = None  # a reused tid: the old task's exit was lost
            if task is not None:
                label = task.cgroup
            elif cgroup is not None:
                label = self._label(cgroup)
            else:
                label = self._exit_label(record)
            series, _, kinds = self._add(label, stats, task.counted if task else _ZERO, now)
            self._flag(kinds, task.flagged if task else 0)
            ended = record.ended_process
            series.totals[TASK_EXITS] += 1
            series.totals[PROCESS_EXITS] += bool(ended)
            maxima = _maxima(stats)
            if kinds:
                maxima = tuple(None if k in kinds else m
                               for k, m in zip(DELAY_KINDS, maxima, strict=True))
            if maxima != series.maxima:
                series.maxima = tuple(map(_larger, series.maxima, maxima))
            self.tombstones[record.pid] = (task.start_ns if task else start, now)
            if len(self.tombstones) > CACHE_CAP:
                del self.tombstones[next(iter(self.tombstones))]
            if ended:
                self.exit_labels.pop(record.tgid or record.pid, None)
            self._version(stats)

    def on_sample(self, tasks: Iterable[Live], started_ns: int) -> None:
        """Account a sample of running tasks, listed from ``started_ns`` on."""
        now = self.clock()
        with self.lock:
            self.generation += 1
            present: set[int] = set()
            for live in tasks:
                present.add(live.tid)
                self._sampled(live, now)
            self.live_tasks = len(present)
            self._prune(present, started_ns, now)
            self.sample_ok = True
            self.sample_seconds = (now - started_ns) / 1e9

    def sample_failed(self) -> None:
        """Count a live sample that could not be taken."""
        with self.lock:
            self.sample_errors += 1
            self.sample_ok = False

    # ------------------------------------------------------------ output

    def snapshot(self) -> Snapshot:
        """A copy of everything a scrape exports (cheap: taken under the lock)."""
        with self.lock:
            return Snapshot(
                {k: (tuple(s.totals), s.maxima) for k, s in self.cgroups.items()},
                {k: tuple(v) for k, v in self.groups.items()}, self.live_tasks,
                self.series_dropped, self.regressions, self.struct_version,
                self.sample_errors, self.sample_ok, self.sample_seconds,
                dict(self.implausible))

    # ------------------------------------------------------------ internals

    def _sampled(self, live: Live, now: int) -> None:
        stats = live.stats
        start = now - (stats.ac_etime or 0) * 1000
        tomb = self.tombstones.get(live.tid)
        if tomb is not None and _same(tomb[0], tomb[1], start):
            return  # a zombie whose exit is already counted
        task = self.tasks.get(live.tid)
        if task is not None and not _same(task.start_ns, task.seen_ns, start):
            task = None  # a reused tid
        if live.cgroup is not None:
            label = self._label(live.cgroup)
        else:
            label = task.cgroup if task is not None else self._label(None)
        before = task.counted if task is not None else _ZERO
        _, counted, kinds = self._add(label, stats, before, now)
        flagged = self._flag(kinds, task.flagged if task is not None else 0)
        if task is None:
            self.tasks[live.tid] = _Task(start, now, label, counted, self.generation, flagged)
        else:
            task.seen_ns, task.cgroup, task.counted = now, label, counted
            task.generation, task.flagged = self.generation, flagged
        self._version(stats)

    def _add(self, label: str, stats: TaskStats, before: tuple[int, ...], now: int
             ) -> tuple[_Series, tuple[int, ...], tuple[str, ...]]:
        """Add the increase of ``stats`` over ``before`` to the series and the group;
        count shrinkage; leave implausible delays at ``before``.  Returns the series,
        the values now counted and the implausible kinds."""
        series = self._series(label)
        series.changed_ns = now
        values = _values(stats)
        if None in values:
            values = tuple(v or 0 for v in values)
        kinds = implausible(stats)
        if kinds:
            kept = list(values)
            for kind in kinds:
                kept[_KIND_INDEX[kind]] = before[_KIND_INDEX[kind]]
            values = tuple(kept)
        if values == before:
            return series, before, kinds
        deltas: Sequence[int] = values
        if before is not _ZERO:
            deltas = list(map(operator.sub, values, before))
            if min(deltas) < 0:
                self.regressions += 1
                deltas = [max(d, 0) for d in deltas]
                values = tuple(map(max, values, before))
        group = self.groups.setdefault(self._group(stats.ac_comm), [0] * NVALUES)
        series.totals[:NVALUES] = map(operator.add, series.totals, deltas)
        group[:] = map(operator.add, group, deltas)
        return series, values, kinds

    def _flag(self, kinds: tuple[str, ...], flagged: int) -> int:
        """Count ``kinds`` not yet in the task's ``flagged`` bits; the bits after."""
        for kind in kinds:
            if not flagged & _KIND_BIT[kind]:
                self.implausible[kind] += 1
                flagged |= _KIND_BIT[kind]
        return flagged

    def _series(self, label: str) -> _Series:
        series = self.cgroups.get(label)
        if series is None:
            if label != OTHER and len(self.cgroups) - (OTHER in self.cgroups) >= \
                    self.max_series:
                if label not in self.folded:
                    if len(self.folded) >= CACHE_CAP:
                        self.folded.clear()
                    self.folded.add(label)
                    self.series_dropped += 1
                label = OTHER
            series = self.cgroups.setdefault(label, _Series())
        return series

    def _label(self, path: str | None) -> str:
        if path is None:
            return UNKNOWN
        label = self.path_labels.get(path)
        if label is None:
            if len(self.path_labels) >= CACHE_CAP:
                self.path_labels.clear()
            label = self.path_labels[path] = cap_depth(path, self.depth)
        return label

    def _exit_label(self, record: ExitRecord) -> str:
        """The cgroup of an exiting task never sampled: its process's, else its
        parent's (where a child starts), else "unknown"."""
        tgid = record.tgid or record.pid
        label = self.exit_labels.get(tgid)
        if label is None:
            path = self.resolve(tgid)
            if path is None and record.task.ac_ppid:
                path = self.resolve(record.task.ac_ppid)
            label = self._label(path)
            if len(self.exit_labels) >= CACHE_CAP:
                self.exit_labels.clear()
            self.exit_labels[tgid] = label
        return label

    def _group(self, comm: str | None) -> str:
        group = self.comm_groups.get(comm)
        if group is None:
            group = next((name for name, rx in self.group_rules
                          if comm is not None and rx.search(comm)), OTHER)
            if len(self.comm_groups) >= 4096:
                self.comm_groups.clear()
            self.comm_groups[comm] = group
        return group

    def _version(self, stats: TaskStats) -> None:
        if self.struct_version is None or stats.version > self.struct_version:
            self.struct_version = stats.version

    def _prune(self, present: set[int], started_ns: int, now: int) -> None:
        """Forget what no later observation can need; retire idle series."""
        self.tombstones = {tid: t for tid, t in self.tombstones.items()
                           if t[1] >= started_ns or tid in present}
        self.tasks = {tid: t for tid, t in self.tasks.items()
                      if t.generation == self.generation or now - t.seen_ns < self.grace_ns}
        self.exit_labels.clear()
        if self.ttl_ns:
            used = {t.cgroup for t in self.tasks.values()}
            for label in [k for k, s in self.cgroups.items()
                          if k != OTHER and k not in used and now - s.changed_ns > self.ttl_ns]:
                del self.cgroups[label]


def _larger(a: int | None, b: int | None) -> int | None:
    return a if b is None or (a is not None and a > b) else b


def _same(start_ns: int, seen_ns: int, new_start_ns: int) -> bool:
    """Whether an observation whose start estimate is ``new_start_ns`` is the task
    known by (``start_ns``, last seen ``seen_ns``): a task that took the tid over
    started after the old one was last seen alive."""
    return new_start_ns <= max(seen_ns, start_ns + SAME_TASK_NS)
