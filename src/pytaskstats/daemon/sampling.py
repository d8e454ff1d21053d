"""taskstatsd's sampling of live processes: the scans, in slices of the loop.

Every ``interval_s`` :class:`Sampling` lists every thread (a walk of /proc/*/task)
and reads them with the kernel source's pipelined ``query_many``, SLICE_TASKS at a
time (listed as they are needed), for about SLICE_S per :meth:`Sampling.step`: the
daemon's loop drains the kernel's exits and serves clients between two slices, so
a scan of 10,000 threads never holds it.  The folds and the exactly-once rule are
:mod:`.sampler`'s; here each row gets its cgroup and the access policy's tags (the
/proc rule for a live process, as GET applies it; a tail row takes its exit's) and
goes to the journal writer.  A scan that took longer than its interval counts a
``sample_overruns``.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..backends import Answers
from ..errors import TaskstatsError
from ..procfs import cgroup_path
from ..records import ExitRecord
from .journal_rows import Tags
from .namespaces import NsTracker
from .policy import read_creds
from .sampler import ProcSample, Sampler, sample_values

__all__ = ["SLICE_S", "SLICE_TASKS", "Sampling"]

SLICE_TASKS = 256  # threads asked for per query_many
SLICE_S = 0.005  # a step reads slices for about this long, then the loop goes on
COUNTERS = ("samples_taken", "sample_rows", "sample_tails", "sample_overruns",
            "sample_errors")


class Sampling:
    """Scans every ``interval_s`` seconds (0: never) through ``kernel``; rows go to
    ``submit`` (lists of values in SAMPLE_COLUMNS order).  ``namespaces`` places a
    process's rows; ``cgroups``: record cgroup paths.  ``clock``: monotonic s;
    ``wall_ns``: CLOCK_REALTIME ns."""

    def __init__(self, kernel: Answers, interval_s: float,
                 submit: Callable[[Sequence[Sequence[Any]]], None], namespaces: NsTracker,
                 *, cgroups: bool = True, proc: str = "/proc",
                 clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.kernel, self.interval_s, self.submit = kernel, interval_s, submit
        self.namespaces, self.cgroups, self.proc = namespaces, cgroups, proc
        self.clock, self.wall_ns = clock, wall_ns
        self.sampler = Sampler()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._next = clock()  # the first scan (the baseline) at once
        self._started = 0.0
        self._pids: list[int] = []  # processes left to list in this scan
        self._entries: os._ScandirIterator[str] | None = None  # ... one's task dir
        self._tgid = 0  # ... whose
        self._todo: list[tuple[int, int]] = []  # (tgid, tid) listed, left to read
        self._tails: list[tuple[Any, ...]] = []

    @property
    def enabled(self) -> bool:
        """Whether samples are taken (``interval_s`` > 0)."""
        return self.interval_s > 0

    def due_in(self, now: float | None = None) -> float:
        """Seconds until :meth:`step` has work (0: now; inf: disabled)."""
        if not self.enabled:
            return math.inf
        if self._tails or self.sampler.scanning:
            return 0.0
        return max(0.0, self._next - (self.clock() if now is None else now))

    def step(self, budget_s: float = SLICE_S) -> None:
        """Send the tail rows taken; begin a scan when due; read slices of the scan
        for about ``budget_s``; finish it (its rows to the journal) when read."""
        self.send_tails()
        if not self.enabled:
            return
        now = self.clock()
        if not self.sampler.scanning:
            if now < self._next:
                return
            self._begin(now)
        deadline = now + budget_s
        while self._todo or self._pids or self._entries is not None:
            self._list()
            chunk, self._todo = self._todo[:SLICE_TASKS], self._todo[SLICE_TASKS:]
            self._read(chunk)
            if self.clock() >= deadline:
                return
        self._finish()

    def send_tails(self) -> None:
        """Send the tail rows taken to the journal (before the exits that made them
        are committed: a reader who sees an exit marked sampled sees its tail too)."""
        if self._tails:
            self.submit(self._tails)
            self._tails = []

    def exit(self, record: ExitRecord, time_ns: int, cgroup: str | None, tags: Tags) -> bool:
        """Take an exit received at ``time_ns`` with its ``cgroup`` and ``tags``: whether
        the samples cover its thread (its tail row is sent by :meth:`send_tails`)."""
        if not self.enabled:
            return False
        covered, tail = self.sampler.exit(record, time_ns)
        if tail is not None:
            ids = tags.ns_ids
            if ids is not None:  # the row is the process's: its tgids stand for pids
                parts = [*ids.split("/"), "", "", ""][:3]
                ids = f"{parts[1]}/{parts[1]}/{parts[2]}"
            self._tails.append(sample_values(tail, cgroup, (tags.owner_sees, tags.pidns, ids),
                                             tail.tgid))
            self.counters["sample_tails"] += 1
        return covered

    def running(self, tgid: int, btime: int | None) -> bool:
        """Whether process ``tgid`` (initial namespace) begun at ``btime`` was alive
        at the last scan."""
        return self.sampler.running(tgid, btime)

    def _begin(self, now: float) -> None:
        self._started = now
        self._next = now + self.interval_s
        self.sampler.begin(self.wall_ns())
        try:
            names = os.listdir(self.proc)
        except OSError:
            names = []
        self._pids = [int(name) for name in names if name.isdigit()]
        self._todo = []

    def _list(self) -> None:
        """List threads of the next processes until a slice's worth is known: the walk
        of /proc/*/task goes in slices too, even within a process of 10,000 threads
        (its directory is read SLICE_TASKS entries at a time)."""
        while len(self._todo) < SLICE_TASKS:
            if self._entries is None:
                if not self._pids:
                    return
                self._tgid = self._pids.pop()
                try:
                    self._entries = os.scandir(f"{self.proc}/{self._tgid}/task")
                except OSError:
                    continue  # it exited meanwhile
            want = SLICE_TASKS - len(self._todo)
            try:
                names = [e.name for e in itertools.islice(self._entries, want)]
            except OSError:
                names = []
            self._todo += [(self._tgid, int(n)) for n in names if n.isdigit()]
            if len(names) < want:
                self._entries.close()
                self._entries = None

    def _read(self, chunk: list[tuple[int, int]]) -> None:
        try:
            bulk = self.kernel.query_many("pid", [tid for _, tid in chunk])
        except TaskstatsError:
            self.counters["sample_errors"] += 1
            return
        for tgid, tid in chunk:
            stats = bulk.get(tid)
            if stats is not None:
                self.sampler.feed(tid, tgid, stats)

    def _finish(self) -> None:
        rows = self.sampler.finish()
        took = self.clock() - self._started
        self.counters["samples_taken"] += 1
        if took > self.interval_s:
            self.counters["sample_overruns"] += 1
            self._next = self.clock()
        if rows:
            self.submit([self._values(row) for row in rows])
            self.counters["sample_rows"] += len(rows)

    def _values(self, row: ProcSample) -> tuple[Any, ...]:
        """A scan row with its cgroup and the /proc rule's tags of its process."""
        creds = read_creds(row.tgid, self.proc)
        sees = None if creds is None else creds.owner_sees()
        pidns, ids = self.namespaces.process_columns(row.tgid)
        cgroup = cgroup_path(row.tgid, self.proc) if self.cgroups else None
        return sample_values(row, cgroup, (sees, pidns, ids), row.tgid)
