"""The values the top model takes and gives: a :class:`Sample` in (one refresh's
records, gathered by the sampler), a :class:`Frame` out (header facts and the
:class:`Row` lists of each view, each list computed once on first use, so batch
mode, --json and the curses screen all read the same rows).

Pure values: nothing here samples, renders or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..procinfo import ProcInfo
from ..records import ExitRecord, TaskStats
from ..sysstat import SystemSample
from .counters import INDEX, METRIC_POSITION, Counters


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the view: a process, a thread or a cgroup.

    ``pid``: the tgid (process), tid (thread) or number of processes (cgroup).
    ``values``: one per METRICS entry over ``seconds`` (the interval; for an exited
    row, the interval it exited in), None when unknown or not measured.
    ``totals``: COUNTED sums in kernel units (a live process: its live threads plus
    the thread exits seen; an exited one: its final totals).  ``lifetime``: how
    long an exited task or process lived, in seconds.

    From /proc for live rows (None for exited and replayed ones): ``state`` the
    one-letter task state, ``ppid``, ``nice``, ``start`` (ticks after boot: the
    pid's identity for actions), ``rss`` resident bytes, ``cmdline``.
    ``peak_rss``: bytes, taskstats' hiwater_rss.  ``depth``: the tree view's level.
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
    state: str | None = None
    ppid: int | None = None
    nice: int | None = None
    start: int | None = None
    rss: int | None = None
    peak_rss: int | None = None
    cmdline: str | None = None
    depth: int = 0

    def value(self, name: str) -> float | None:
        """The derived value ``name`` (a METRICS name)."""
        return self.values[METRIC_POSITION[name]]

    def total(self, name: str) -> int:
        """The total of kernel field ``name`` (a COUNTED name)."""
        return self.totals[INDEX[name]]


@dataclass(frozen=True, slots=True)
class Sample:
    """One refresh's input, gathered by the sampler.

    ``t_ns``: time.monotonic_ns() when the bulk query started; ``span_ns``: its
    duration.  ``tasks``: tid -> pid record; ``tgids``: tid -> tgid (from /proc);
    ``cgroups``: tgid -> cgroup path (of exited processes too, when learned at their
    birth); ``users``: uid -> name (for tasks and exits);
    ``exits``/``lost``: exit records drained (and records lost) since the last sample.
    ``folds``: tid -> how many threads its record sums (replayed per-process
    records of the journal; 1 when absent): a delta may be that many intervals long.
    ``procs``: tgid -> what /proc says of the process now; ``states``: tid -> the
    thread's state (when the sampler reads them); ``system``: the machine's counters.
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
    folds: Mapping[int, int] = field(default_factory=dict)
    procs: Mapping[int, ProcInfo] = field(default_factory=dict)
    states: Mapping[int, str] = field(default_factory=dict)
    system: SystemSample | None = None


@dataclass
class Counts:
    """Totals since the model started."""

    exits: int = 0  # task exits seen
    process_exits: int = 0
    lost: int = 0
    discarded: int = 0  # impossible ns deltas dropped (see counters.plausible())


class Frame:
    """One refresh: header facts and the rows of each view, each computed once.

    ``interval_ns`` is None for the first sample (no rates yet).  ``absent``: COUNTED
    fields the records lack (their metrics read None).  ``discarded``: impossible
    per-task deltas dropped in this refresh (see :func:`.counters.plausible`),
    ``discarded_total`` since the model started.  ``system``: the machine's
    counters at this refresh and the previous one (None when not sampled).
    """

    def __init__(self, *, t_ns: int, interval_ns: int | None, delayacct: bool | None,
                 tasks: int, exits: int, lost: int, discarded: int, counts: Counts,
                 absent: frozenset[str],
                 system: tuple[SystemSample, SystemSample] | None = None,
                 build_processes: Callable[[], tuple[Row, ...]],
                 build_threads: Callable[[], tuple[Row, ...]]) -> None:
        self.t_ns, self.interval_ns, self.delayacct = t_ns, interval_ns, delayacct
        self.tasks, self.exits, self.lost, self.discarded = tasks, exits, lost, discarded
        self.exits_total, self.process_exits_total = counts.exits, counts.process_exits
        self.lost_total, self.absent = counts.lost, absent
        self.discarded_total = counts.discarded
        self.system = system
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
