"""taskstatsd's journal writer process: a :class:`~.journal.Store` fed by frames.

The daemon (:class:`~.journal_process.JournalProcess`) starts ``python -S`` running
:func:`main` with FD (its end of a socketpair) and the JSON settings.  One thread
reads exits, holds them in :class:`Pending` until :func:`~.journal.commit_due`
says, commits them, runs the store's checks, and pushes its :class:`JournalHealth`
when it changed (at most every HEALTH_EVERY_S) and before every reply.  It ignores
SIGINT and SIGTERM (a service stop signals the whole group).  It ends on ``stop``
(a clean stop), or when the daemon's end closes: the daemon died, so it commits
what it holds and records no stop, and the next start notes a "daemon_down" gap.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .journal import GROUP_COMMIT_ROWS, Store, commit_due
from .journal_frames import (
    CALL,
    EXIT,
    NOTE,
    REPLY,
    SAMPLES,
    Frame,
    JournalHealth,
    Unframer,
    decode_exit,
    encode_health,
    encode_json,
    json_of,
)
from .journal_rows import Item
from .journal_schema import is_full

__all__ = ["HEALTH_EVERY_S", "Pending", "main"]

_LOG = logging.getLogger(__name__)
RECV_BYTES = 1 << 20  # read up to this much at once
HEALTH_EVERY_S = 0.05  # a changed health is pushed at most this often (and at least)


class Pending:
    """Exits received and not yet committed: at most ``queue_size`` (the rest are
    refused, for the caller to count), due by :func:`commit_due` with ``batch_size``
    and ``max_delay_s`` (seconds of the caller's clock)."""

    def __init__(self, batch_size: int, max_delay_s: float, queue_size: int) -> None:
        self.batch_size, self.max_delay_s, self.queue_size = batch_size, max_delay_s, queue_size
        self.items: list[Item] = []
        self.oldest = 0.0  # when items became non-empty

    def __len__(self) -> int:
        return len(self.items)

    def add(self, items: Sequence[Item], now: float) -> int:
        """Hold what fits of ``items``; how many were refused (queue full)."""
        room = max(0, self.queue_size - len(self.items))
        if not self.items and items and room:
            self.oldest = now
        self.items += items[:room]
        return max(0, len(items) - room)

    def due(self, now: float) -> bool:
        """Whether the commit rule fires at ``now``."""
        return commit_due(len(self.items), self.oldest, now, self.batch_size, self.max_delay_s)

    def due_in(self, now: float) -> float:
        """Seconds until :meth:`due` (inf: nothing held)."""
        if not self.items:
            return float("inf")
        return 0.0 if self.due(now) else self.oldest + self.max_delay_s - now

    def take(self) -> list[Item]:
        """Everything held, in order (group commit: a writer behind catches up)."""
        items, self.items = self.items, []
        return items


class Unopened:
    """A journal that could not be created for lack of disk space: journaling is
    suspended from the start (every exit counted as ``dropped_disk_low``) and the
    journal is created at a check once there is room (:meth:`maintain` returns it);
    the counts and the "disk_low" gap then go into it."""

    suspended = True
    closed = False

    def __init__(self, open_store: Callable[[], Store], interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._open, self._interval, self._clock = open_store, interval_s, clock
        self._since_ns = time.time_ns()
        self._next = clock() + interval_s
        self._counts = {"journaled": 0, "dropped_disk_low": 0, "suspensions": 1}

    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    def insert(self, items: Sequence[Item], chunk: int = 0) -> int:
        self._counts["dropped_disk_low"] += len(items)
        return 0

    def note(self, counter: str, n: int) -> None:
        self._counts[counter] = self._counts.get(counter, 0) + n

    def due_in(self, now: float | None = None) -> float:
        return max(0.0, self._next - (self._clock() if now is None else now))

    def close(self, clean: bool = True) -> None:
        """Nothing to close."""

    def opened(self) -> Store | None:
        """At each check interval, try to create the journal: the Store, or None.
        Raises what is not a full disk."""
        if self.due_in() > 0:
            return None
        self._next = self._clock() + self._interval
        try:
            store = self._open()
        except Exception as err:
            if not is_full(err):
                raise
            return None
        for name, n in self._counts.items():
            if n and name.startswith(("lost_", "dropped_")):
                store.note(name, n)
        try:
            store.record_suspension(self._since_ns)
        except Exception as err:  # full again: the store suspends itself
            if not is_full(err):
                raise
            _LOG.warning("journal: cannot record the disk_low gap: %s", err)
        return store


class Writer:
    """The writer's loop over ``sock`` (see the module docstring)."""

    def __init__(self, sock: socket.socket, store: Store | Unopened, *, batch_size: int,
                 max_delay_s: float, queue_size: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sock, self.store, self.clock = sock, store, clock
        self.pending = Pending(batch_size, max_delay_s, queue_size)
        self.chunk = max(batch_size, GROUP_COMMIT_ROWS)
        self.received = 0
        self.sent: JournalHealth | None = None
        self.sent_at = -float("inf")

    def health(self) -> JournalHealth:
        """What the daemon is told."""
        return JournalHealth(self.store.counters(), self.store.suspended, len(self.pending),
                             self.received, isinstance(self.store, Store))

    def serve(self) -> int:
        """Read, commit and push health until told to stop (0) or the daemon is gone (0)."""
        self._reply(0)
        unframer = Unframer()
        while True:
            if select.select([self.sock], [], [], self._idle_for())[0]:
                chunk = self.sock.recv(RECV_BYTES)
                if not chunk:
                    self._commit()
                    self.store.close(clean=False)  # the daemon died: keep what we hold
                    return 0
                if self._handle(*unframer.feed(chunk)):
                    return 0
            self._work()

    def _idle_for(self) -> float:
        now = self.clock()
        wait = min(self.pending.due_in(now), self.store.due_in(now))
        if self.sent != self.health():
            wait = min(wait, self.sent_at + HEALTH_EVERY_S - now)
        return max(wait, 0.0)

    def _work(self) -> None:
        now = self.clock()
        if self.pending.due(now):
            self._commit()
        if isinstance(self.store, Unopened):
            self.store = self.store.opened() or self.store
        else:
            self.store.maintain(now)
        if now - self.sent_at >= HEALTH_EVERY_S:
            self._push()

    def _commit(self) -> None:
        if len(self.pending):
            self.store.insert(self.pending.take(), self.chunk)

    def _push(self) -> None:
        health = self.health()
        if health != self.sent:
            self.sock.sendall(encode_health(health))
            self.sent, self.sent_at = health, self.clock()

    def _handle(self, data: bytes, frames: list[Frame]) -> bool:
        """Take the exits and run the calls of ``frames``, in order; True on stop."""
        items: list[Item] = []
        for frame in frames:
            if frame[0] == EXIT:
                items.append(decode_exit(data, frame))
                continue
            self._take(items)
            items = []
            body = json_of(data, frame)
            if frame[0] == NOTE:
                self.store.note(body[0], body[1])
            elif frame[0] == SAMPLES:
                self._samples(body)
            elif frame[0] == CALL and self._call(*body):
                return True
        self._take(items)
        return False

    def _take(self, items: list[Item]) -> None:
        if items:
            self.received += len(items)
            refused = self.pending.add(items, self.clock())
            if refused:
                self.store.note("dropped_queue_full", refused)

    def _samples(self, values: list[list[Any]]) -> None:
        """Commit sample rows at once, after the exits received before them."""
        self._commit()
        if isinstance(self.store, Store):
            self.store.insert_samples(values)
        else:
            self.store.note("samples_dropped", len(values))

    def _call(self, ident: int, op: str) -> bool:
        """Answer a call: ``flush`` commits what is held and runs the checks if due;
        ``stop`` also closes the store.  True on stop."""
        self._commit()
        if op == "stop":
            self.store.close()
        elif isinstance(self.store, Store):
            self.store.maintain()
        self._reply(ident)
        return op == "stop"

    def _reply(self, ident: int) -> None:
        health = self.health()
        self.sock.sendall(encode_health(health) + encode_json(REPLY, {"id": ident}))
        self.sent, self.sent_at = health, self.clock()


def main(argv: Sequence[str] | None = None) -> int:
    """The writer process: FD (its end of the socketpair) and the JSON settings."""
    args = sys.argv[1:] if argv is None else argv
    os.umask(0o077)  # before the first open: what it creates is private to root
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(args[0]))
    settings: dict[str, Any] = json.loads(args[1])
    path = settings.pop("path")
    batching = {k: settings.pop(k) for k in ("batch_size", "max_delay_s", "queue_size")}

    def open_store() -> Store:
        return Store(path, **settings)

    store: Store | Unopened
    try:
        store = open_store()
    except Exception as err:  # told to the daemon, which raises JournalError
        if not is_full(err):
            sock.sendall(encode_json(REPLY, {"id": 0, "error": str(err)}))
            return 1
        _LOG.warning("journal %s cannot be created (disk full): suspended", path)
        store = Unopened(open_store, settings["check_interval_s"])
    return Writer(sock, store, **batching).serve()


if __name__ == "__main__":
    sys.exit(main())
