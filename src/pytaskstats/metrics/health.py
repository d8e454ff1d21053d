"""Loss and health counters for the metrics: from a Listener's events, or from taskstatsd."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, NamedTuple

from ..kernel import Listener
from ..records import Lost

if TYPE_CHECKING:
    from ..daemon.main import Daemon

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

    def health(self, listener: Listener | None) -> Health:
        """The counters, with the kernel's drop count of each of ``listener``'s sockets."""
        drops = dict(zip(listener.masks(), listener.drops(), strict=True)) if listener else {}
        with self.lock:
            overruns = dict.fromkeys(drops, 0) | self.overruns
            return Health(self.received, dict(self.lost), drops, overruns)


def daemon_health(daemon: Daemon, tracker: LossTracker) -> Health:
    """taskstatsd's own counters (this run's), journal counters and overrun episodes."""
    own = tracker.health(daemon.listener if isinstance(daemon.listener, Listener) else None)
    counters = dict(daemon.counters)
    journal = daemon.journal.counters()
    return own._replace(
        received=counters["received"],
        lost={r: counters.get(f"lost_{r}", 0) for r in LOSS_REASONS},
        journal_written=journal.get("journaled", 0),
        journal_dropped={k[len("dropped_"):]: v for k, v in journal.items()
                         if k.startswith("dropped_")},
        journal_suspended=daemon.journal.suspended,
        client_dropped=daemon.server.dropped_client_records)
