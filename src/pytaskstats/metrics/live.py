"""Live sampling: every running task's record, with its process's cgroup.

A sample lists ``/proc/*/task/*``, asks for all those tasks in one pipelined bulk
query and reads each process's cgroup once.  :class:`SamplerThread` repeats it on
a timer, off the thread that reads exits.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping

from .. import procfs
from ..errors import TaskstatsError
from ..procfs import cgroup_path
from ..records import TaskStats
from .aggregate import Aggregator, Live

Query = Callable[[list[int]], Mapping[int, TaskStats]]


def list_tasks(root: str = "/proc", uid: int | None = None) -> list[tuple[int, int]]:
    """(tid, tgid) of every thread, of processes owned by ``uid`` if given."""
    return [(tid, tgid) for tgid, tid in procfs.list_tasks(root, uid)]


class Sampler:
    """One live sample into ``aggregator``; failures are counted and said on stderr
    (once per distinct message), never raised."""

    def __init__(self, aggregator: Aggregator, query: Query, *, root: str = "/proc",
                 uid: int | None = None, resolve: Callable[[int], str | None] = cgroup_path,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.aggregator, self.query, self.root, self.uid = aggregator, query, root, uid
        self.resolve, self.clock = resolve, clock
        self.last_error = ""

    def sample(self) -> bool:
        """Take one sample; False if it failed."""
        started = self.clock()
        try:
            tasks = list_tasks(self.root, self.uid)
            records = self.query([tid for tid, _ in tasks])
        except (OSError, TaskstatsError) as err:
            self.failed(f"live sample failed: {err}")
            return False
        cgroups = {tgid: self.resolve(tgid) for tgid in {tg for tid, tg in tasks if tid in records}}
        self.aggregator.on_sample((Live(tid, tgid, records[tid], cgroups[tgid])
                                   for tid, tgid in tasks if tid in records), started)
        self.last_error = ""
        return True

    def failed(self, message: str) -> None:
        """Count a failed sample; say why unless it is the same reason as last time."""
        self.aggregator.sample_failed()
        if message != self.last_error:
            print(f"taskstats metrics: {message}", file=sys.stderr)
            self.last_error = message


class SamplerThread:
    """Runs ``sampler`` now and then every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, sampler: Sampler, interval: float) -> None:
        self.sampler, self.interval = sampler, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskstats-sampler",
                                        daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.sampler.sample()
            except Exception:  # a bug: keep the endpoint up, count it and show it
                self.sampler.failed(traceback.format_exc())
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
