"""taskstatsd's answers to HISTORY: journal rows within bounds of rows, time and
each non-admin uid's share of the loop.

Units: budgets and shares are seconds of the monotonic clock; journal times are
CLOCK_REALTIME ns.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from .. import extproto
from ..errors import NetlinkError
from . import schema
from .config import Config
from .journal_process import JournalProcess
from .journal_queries import Budget, QueryTooLong, Scope
from .journal_samples import Running

__all__ = ["HISTORY_KEYS", "HISTORY_SHARE", "History", "Shares"]

DRAIN_EVERY_S = 0.002  # the kernel's sockets are drained this often during a query
HISTORY_SHARE = 0.25  # of the loop's time one non-admin uid's history queries may take
HISTORY_KEYS = ("since_ns", "until_ns", "comm", "uid", "pid", "tgid", "cgroup", "group_by",
                "sort", "limit", "bucket_s", "fields", "plausible", "kind", "at_ns")


class History:
    """The HISTORY answers of a daemon: its ``journal``, its settings ``cfg``, its
    ``counters`` (history_timeouts and history_refused are counted there),
    ``drain`` (empties the kernel's sockets for a while), ``running`` (False
    once the daemon is stopping) and ``alive`` (whether a process, by tgid and begin
    time, was alive at the last sample: a sample row's ``running``)."""

    def __init__(self, journal: JournalProcess, cfg: Config, counters: dict[str, int],
                 drain: Callable[[], None], running: Callable[[], bool], *,
                 alive: Running | None = None) -> None:
        self.journal, self.cfg, self.counters = journal, cfg, counters
        self.drain, self.running, self.alive = drain, running, alive
        self.shares = Shares(HISTORY_SHARE, cfg.history_max_ms / 1000)

    def __call__(self, params: dict[str, Any], scope: Scope | None = None
                 ) -> tuple[list[dict[str, Any]], str]:
        """Journal rows for `taskstats history` (parameters checked by
        :func:`.schema.check`: SchemaError); with any of bucket_s, fields or
        plausible: sums per time bucket and/or group (JournalQueries.aggregate).  ``scope``:
        only what a restricted client may read (see :mod:`.policy`).

        Bounded before it runs: at most ``history_max_rows`` rows, whatever ``limit``
        says (the note returned with them says when more were cut; "" otherwise),
        and at most ``history_max_ms`` (``history_admin_max_ms`` for root and admins)
        of wall time reading the rows, the kernel's exits drained every DRAIN_EVERY_S
        meanwhile (their time counts);
        past it, or once the daemon is stopping, NetlinkError ETIME.  A non-admin
        uid's queries get at most HISTORY_SHARE of the time (:class:`Shares`): past
        it, NetlinkError EAGAIN until its share has refilled."""
        params = schema.check(extproto.CMD_HISTORY, params)
        if "at_ns" in params and {"since_ns", "until_ns"} & params.keys():
            raise schema.SchemaError("at_ns: does not combine with since_ns, until_ns")
        query: dict[str, Any] = {k: v for k, v in params.items() if k in HISTORY_KEYS}
        query["scope"] = scope
        cap = self.cfg.history_max_rows
        uid = None if scope is None else scope.uid
        budget_s = self.cfg.history_admin_max_ms / 1000
        if uid is not None and (budget_s := self.shares.take(uid)) <= 0:
            self.counters["history_refused"] += 1
            why = (f"history queries of uid {uid} used their share of taskstatsd: try "
                   f"again in {self.shares.wait_ms(uid):.0f} ms")
            raise NetlinkError(why, errno=errno.EAGAIN, ext_message=why)
        self.journal.flush()
        started = time.monotonic()
        try:
            with self.journal.queries.bounded(Budget(cap, self._clock(started + budget_s))):
                rows = self._rows(params, query, cap)
        except QueryTooLong:
            self.counters["history_timeouts"] += 1
            summed = params.get("totals") or {"group_by", "bucket_s", "fields"} & params.keys()
            narrow = ("--since / --until or a filter (--comm, --uid, --pid, --cgroup): "
                      "sums read every row of the range, whatever --limit"
                      if summed else "--since / --limit")
            why = (f"query took too long: narrow it with {narrow}"
                   if self.running() else "taskstatsd is stopping")
            raise NetlinkError(why, errno=errno.ETIME, ext_message=why) from None
        finally:
            if uid is not None:
                self.shares.spend(uid, time.monotonic() - started)
        if len(rows) <= cap:
            return rows, ""
        return rows[:cap], (f"answer cut at {cap} rows (history_max_rows): narrow it "
                            "with --since / --limit")

    def _rows(self, params: dict[str, Any], query: dict[str, Any],
                      cap: int) -> list[dict[str, Any]]:
        """The rows of a checked history request (``query``), at most ``cap + 1``."""
        if {"bucket_s", "fields", "plausible"} & set(query):
            query.pop("plausible", None)  # not a switch: every sum applies the rule
            return self.journal.queries.aggregate(**query)
        if params.get("totals"):
            query.pop("group_by", None)
            query.pop("sort", None)
            query.pop("limit", None)
            return [self.journal.queries.totals(**query)]
        query["limit"] = min(query.get("limit", cap + 1), cap + 1)
        return self.journal.queries.query(**query, running=self.alive)

    def _clock(self, deadline: float) -> Callable[[], bool]:
        """The Budget.tick of one history query: True once ``deadline`` (monotonic s)
        passed or the daemon is stopping; drains the kernel's sockets every
        DRAIN_EVERY_S meanwhile, as between clients' turns."""
        drained = time.monotonic()

        def tick() -> bool:
            nonlocal drained
            now = time.monotonic()
            if now - drained >= DRAIN_EVERY_S:
                self.drain()
                drained = time.monotonic()
            return not self.running() or now >= deadline

        return tick


class Shares:
    """Per uid, the query time (s) it may still spend: a bucket of at most ``cap``
    refilled at ``rate`` s per s, so that one uid's queries, however many its
    connections, take at most ``rate`` of the loop over time.  Holds only uids
    whose bucket is not full.  ``clock``: monotonic seconds."""

    def __init__(self, rate: float, cap: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.cap, self.clock = rate, cap, clock
        self.spent: dict[int, tuple[float, float]] = {}  # uid -> (credit s, at monotonic)

    def take(self, uid: int) -> float:
        """The time ``uid``'s next query may run (0: none left now); forgets the uids
        whose buckets are full again."""
        now = self.clock()
        self.spent = {u: (c, at) for u, (c, at) in self.spent.items()
                      if c + (now - at) * self.rate < self.cap}
        return self._credit(uid, now)

    def spend(self, uid: int, seconds: float) -> None:
        """Count ``seconds`` of query time against ``uid``."""
        now = self.clock()
        self.spent[uid] = (self._credit(uid, now) - seconds, now)

    def wait_ms(self, uid: int) -> float:
        """How long until ``uid`` may query again, in ms."""
        return max(0.0, -self._credit(uid, self.clock())) / self.rate * 1000 + 1

    def _credit(self, uid: int, now: float) -> float:
        if uid not in self.spent:
            return self.cap
        credit, at = self.spent[uid]
        return min(self.cap, credit + (now - at) * self.rate)
