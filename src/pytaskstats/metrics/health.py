"""Loss and health counters for the metrics: from a Listener's events, or from what
taskstatsd tells (:class:`DaemonCounters`, a snapshot it builds; nothing here reads
the daemon)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

from ..backends import YieldsExits
from ..records import Lost

LOSS_REASONS = ("overrun", "truncated", "malformed")  # Lost.reason values


class Health(NamedTuple):
    """Counters of what was received and lost; None: not applicable here (no journal)."""

    received: int
    lost: dict[str, int]  # reason -> exit records
    kernel_drops: dict[str, int]  # listener cpulist -> messages the kernel dropped
    overruns: dict[str, int]  # listener cpulist -> ENOBUFS episodes
    journal_written: int | None = None
    journal_dropped: dict[str, int] | None = None
    journal_suspended: bool | None = None
    client_dropped: int | None = None
    samples: tuple[int, int, int] | None = None  # scans, rows written, overruns


class LossTracker:
    """Counts exits received and the :class:`Lost` events of a listener."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.lost = dict.fromkeys(LOSS_REASONS, 0)
        self.overruns: dict[str, int] = {}

    def on_exit(self) -> None:
        """One exit record received."""
        with self.lock:
            self.received += 1

    def on_lost(self, lost: Lost) -> None:
        """Records lost; an overrun is also one episode on its listener."""
        with self.lock:
            self.lost[lost.reason] = self.lost.get(lost.reason, 0) + lost.records
            if lost.reason == "overrun":
                self.overruns[lost.cpus] = self.overruns.get(lost.cpus, 0) + 1

    def health(self, listener: YieldsExits | None) -> Health:
        """The counters, with the kernel's drop count of each of ``listener``'s sockets."""
        drops = dict(zip(listener.masks(), listener.drops(), strict=True)) if listener else {}
        with self.lock:
            overruns = dict.fromkeys(drops, 0) | self.overruns
            return Health(self.received, dict(self.lost), drops, overruns)


class DaemonCounters(NamedTuple):
    """taskstatsd's health as one value (this run's counters; the journal's as its
    writer last told them): exits received and lost before the journal (reason ->
    records), committed, dropped by the journal (reason -> records), whether
    journaling is suspended, records dropped for slow clients, and the samples of
    live processes: scans taken, rows committed, scans longer than their interval."""

    received: int
    lost: dict[str, int]
    journal_written: int
    journal_dropped: dict[str, int]
    journal_suspended: bool
    client_dropped: int
    samples: tuple[int, int, int] = (0, 0, 0)


class MetricsSettings(NamedTuple):
    """taskstatsd's metrics configuration: where to serve (``listen``), the live
    sampling interval (s), the cgroup depth, the series bound and the command
    groups (``name=regex`` items, comma-separated)."""

    listen: str
    interval_s: float
    cgroup_depth: int
    max_series: int
    groups: str


def daemon_health(tracker: LossTracker, listener: YieldsExits | None,
                  counters: Callable[[], DaemonCounters]) -> Health:
    """The health served: the kernel's drop counts and overrun episodes of
    ``listener`` (None: not a kernel listener), the rest from ``counters()``."""
    own = tracker.health(listener)
    told = counters()
    return own._replace(received=told.received,
                        lost={r: told.lost.get(r, 0) for r in LOSS_REASONS},
                        journal_written=told.journal_written,
                        journal_dropped=dict(told.journal_dropped),
                        journal_suspended=told.journal_suspended,
                        client_dropped=told.client_dropped, samples=told.samples)
