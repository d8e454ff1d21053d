"""``taskstats top --replay``: the journal of taskstatsd, interval by interval.

taskstatsd journals, for each sample it takes of the live processes, one row per
process that did anything in the interval (its deltas, kind "sample"; rows of one
sample share ``time_ns``, the interval's end) and one row per task exit (kind
"exit").  :class:`Journal` finds and loads those intervals through a
:data:`ReplaySource` (the seam: :func:`daemon_source` asks taskstatsd, tests give
rows of their own); every request is bounded (a probe asks for one row, an
interval for at most ``max_rows`` of each kind, and says when it was cut).
:class:`Replay` is the cursor the screen and batch mode move (first, next,
previous, jump), turning each interval into the live view's
:class:`~.frame.Frame` with :func:`.replayframe.frame_of`.

Times are CLOCK_REALTIME ns since the epoch.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from ..client import Client
from .frame import Frame
from .render import Info, Replayed
from .replayframe import frame_of

__all__ = ["MAX_ROWS", "Interval", "Journal", "Page", "Query", "Replay", "ReplaySource",
           "UserNames", "daemon_source"]

MAX_ROWS = 10_000  # rows of each kind fetched per interval (taskstatsd's default cap)
Kind = Literal["sample", "exit", "scan"]
Row = Mapping[str, Any]


class Query(NamedTuple):
    """One bounded request: rows of ``kind`` with ``since_ns`` <= time_ns <
    ``until_ns``, at most ``limit``, oldest first (``newest_first``: newest first)."""

    kind: Kind
    since_ns: int
    until_ns: int
    limit: int
    newest_first: bool = False


class Page(NamedTuple):
    """A source's answer: the rows and its note ("" or why it was cut)."""

    rows: Sequence[Row]
    note: str = ""


ReplaySource = Callable[[Query], Page]  # the seam between the replay and the journal


def daemon_source(client: Client) -> ReplaySource:
    """The source asking taskstatsd (``client`` of the daemon backend):
    ``history(kind=..., since_ns=..., until_ns=..., limit=...)``, newest first by
    ``sort="-time_ns"``."""
    def fetch(query: Query) -> Page:
        params: dict[str, Any] = {"kind": query.kind, "since_ns": query.since_ns,
                                  "until_ns": query.until_ns, "limit": query.limit}
        if query.newest_first:
            params["sort"] = "-time_ns"
        rows = client.history(**params)
        return Page(rows, rows.note)
    return fetch


class Interval(NamedTuple):
    """One replayed interval: (``start_ns``, ``end_ns``], its sample rows, the exit
    rows of [start_ns, end_ns), and what was cut ("" nothing)."""

    start_ns: int
    end_ns: int
    samples: tuple[Row, ...]
    exits: tuple[Row, ...]
    note: str = ""


class Journal:
    """The sample times of ``source`` within [``since_ns``, ``until_ns``) and the
    rows of each interval; ``max_rows``: of each kind per interval."""

    def __init__(self, source: ReplaySource, since_ns: int, until_ns: int,
                 max_rows: int = MAX_ROWS) -> None:
        self.source, self.since_ns, self.until_ns = source, since_ns, until_ns
        self.max_rows = max_rows

    def _probe(self, since_ns: int, until_ns: int, newest: bool) -> int | None:
        """The time of the oldest (``newest``: newest) sample in the range, if any."""
        lo, hi = max(since_ns, self.since_ns), min(until_ns, self.until_ns)
        if lo >= hi:
            return None
        rows = self.source(Query("scan", lo, hi, 1, newest)).rows  # not exits' tails
        return int(rows[0]["time_ns"]) if rows else None

    def first(self) -> int | None:
        """The end of the first interval in range."""
        return self._probe(self.since_ns, self.until_ns, False)

    def last(self) -> int | None:
        """The end of the last interval in range."""
        return self._probe(self.since_ns, self.until_ns, True)

    def after(self, end_ns: int) -> int | None:
        """The end of the interval after the one ending at ``end_ns``."""
        return self._probe(end_ns + 1, self.until_ns, False)

    def before(self, end_ns: int) -> int | None:
        """The end of the interval before the one ending at ``end_ns``."""
        return self._probe(self.since_ns, end_ns, True)

    def around(self, t_ns: int) -> int | None:
        """The end of the interval holding ``t_ns`` (the first sample at or after
        it; the last one before it past the journal's end)."""
        end = self._probe(t_ns, self.until_ns, False)
        return self.before(t_ns) if end is None else end

    def _rows(self, kind: Kind, since_ns: int, until_ns: int) -> tuple[tuple[Row, ...], str]:
        """At most ``max_rows`` rows of the range, and "" or what was cut (asking for
        one more tells a full range from a cut one)."""
        page = self.source(Query(kind, since_ns, until_ns, self.max_rows + 1))
        rows = tuple(page.rows[:self.max_rows])
        cut = page.note != "" or len(page.rows) > self.max_rows
        return rows, f"{kind}s past {len(rows)} rows" if cut else ""

    def load(self, end_ns: int) -> Interval:
        """The rows of the interval ending at ``end_ns`` (at most ``max_rows`` each)."""
        samples, cut_samples = self._rows("sample", end_ns, end_ns + 1)
        length = max((int(r.get("interval_ns") or 0) for r in samples), default=0)
        start = end_ns - length
        exits, cut_exits = self._rows("exit", start, end_ns) if length else ((), "")
        cut = [c for c in (cut_samples, cut_exits) if c]
        note = f"interval cut (history_max_rows): {', '.join(cut)} not shown" if cut else ""
        return Interval(start, end_ns, samples, exits, note)


class UserNames:
    """uid -> user name from the password database, remembered (the number when
    it has no name)."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}

    def __call__(self, uids: Iterable[int | None]) -> dict[int, str]:
        """The names of ``uids`` (None left out)."""
        out = {}
        for uid in set(uids):
            if uid is None:
                continue
            if uid not in self._names:
                try:
                    self._names[uid] = pwd.getpwuid(uid).pw_name
                except (KeyError, OverflowError):
                    self._names[uid] = str(uid)
            out[uid] = self._names[uid]
        return out


class Replay:
    """The replayed interval on display and the moves to others.

    Every move returns "" when it moved, else what to tell the user (at an end of
    the range; nothing there), leaving the display as it was.
    """

    def __init__(self, journal: Journal, backend: str = "daemon",
                 names: Callable[[Iterable[int | None]], dict[int, str]] | None = None
                 ) -> None:
        self.journal, self.backend = journal, backend
        self.names = names or UserNames()
        self.interval: Interval | None = None
        self.frame: Frame | None = None

    def start(self, at_ns: int | None = None) -> bool:
        """Show the first interval in range (or the one holding ``at_ns``); False
        when the range holds no sample."""
        end = self.journal.first() if at_ns is None else self.journal.around(at_ns)
        if end is None:
            return False
        self._show(end)
        return True

    def step(self, direction: int) -> str:
        """The next (``direction`` > 0) or previous interval."""
        if self.interval is None:
            return "nothing replayed"
        if direction > 0:
            end = self.journal.after(self.interval.end_ns)
            if end is None:
                return "end of the replayed range: no later interval journaled"
        else:
            end = self.journal.before(self.interval.end_ns)
            if end is None:
                return "start of the replayed range: no earlier interval journaled"
        self._show(end)
        return ""

    def jump(self, t_ns: int) -> str:
        """The interval holding ``t_ns``, within the range."""
        if not self.journal.since_ns <= t_ns < self.journal.until_ns:
            return "that time is outside the replayed range (--since/--until)"
        end = self.journal.around(t_ns)
        if end is None:
            return "no interval journaled in the replayed range"
        self._show(end)
        return ""

    def _show(self, end_ns: int) -> None:
        self.interval = self.journal.load(end_ns)
        self.frame = frame_of(self.interval.samples, self.interval.exits,
                              self.interval.start_ns, self.interval.end_ns, self.names)

    def info(self) -> Info:
        """The header facts of the interval on display."""
        it = self.interval
        replayed = Replayed(0, 0) if it is None else Replayed(it.start_ns, it.end_ns, it.note)
        return Info(self.backend, replay=replayed)
