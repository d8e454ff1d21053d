"""The exit journal's store: every exit record in SQLite, with loss accounting.

:class:`Store` is synchronous and single-threaded: :meth:`Store.insert` commits a
batch before it returns, :meth:`Store.maintain` runs the periodic checks when due,
:meth:`Store.close` records the stop.  Nothing here waits or starts a thread; the
clocks and statvfs are injected.  taskstatsd runs a Store in its writer process
(:mod:`.journal_writer`, hosted by :mod:`.journal_process`), which decides when to
commit (:func:`commit_due`).

Every record handed over is journaled or counted as dropped, and losses before the
journal are noted, so ``inserted + noted losses == queries.accounted()``.  The
disk-low rule is BSD acct(2)'s hysteresis; a restart and a suspension leave a row
in ``gaps``; retention by age and size counts ``retired`` rows (retention is not
loss).  Units: ``time_ns``, gap bounds and the heartbeat are CLOCK_REALTIME ns (the
``wall_ns`` clock); the check interval is seconds of ``clock`` (monotonic).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .journal_queries import BUSY_TIMEOUT_MS, Budget, JournalQueries, fetch
from .journal_rows import Item, Row, fit, rows
from .journal_schema import (
    ADD_GAP,
    CHECKPOINT_BUSY_MS,
    DELETE_OLDER,
    DELETE_OLDER_SAMPLES,
    DELETE_OLDEST,
    DELETE_OLDEST_SAMPLES,
    INSERT_SAMPLE_SQL,
    PUT_COUNTER,
    PUT_META,
    JournalError,
    check_reason,
    check_settings,
    connect,
    is_sqlite_full,
)

__all__ = ["GROUP_COMMIT_ROWS", "Store", "commit_due"]

_LOG = logging.getLogger(__name__)

GROUP_COMMIT_ROWS = 10_000  # most rows per transaction when catching up
RETIRE_CHUNK = 1000  # rows deleted per retention transaction
RETIRE_CHUNKS_PER_PASS = 100  # retention work per check, so ingest is never starved
COUNTERS = ("journaled", "dropped_queue_full", "dropped_disk_low", "dropped_write_error",
            "suspensions", "retired", "samples_journaled", "samples_dropped",
            "samples_retired")

Body = Callable[[sqlite3.Connection], dict[str, int]]


class FsStats(Protocol):
    """What the store reads of statvfs(2)."""

    @property
    def f_bavail(self) -> int: ...
    @property
    def f_blocks(self) -> int: ...


def commit_due(pending: int, oldest: float, now: float, batch_size: int,
               max_delay_s: float) -> bool:
    """The commit rule: ``batch_size`` records pending, or the oldest ``max_delay_s`` old.

    ``oldest`` and ``now`` are readings of the same clock (seconds).
    """
    return pending >= batch_size or (pending > 0 and now - oldest >= max_delay_s)


class Store:
    """The exit journal at ``path`` (a file, or ":memory:" for tests).

    Every ``check_interval_s`` (at :meth:`maintain`): disk check (suspend below
    ``low_free_pct`` % free, resume at ``resume_free_pct`` %), heartbeat, retention
    (rows older than ``retention_s`` seconds; oldest rows while the pages in use
    exceed ``max_bytes``) and a WAL checkpoint.  ``synchronous`` (a config string,
    checked): with "NORMAL" a power loss may roll back the last commits (a crash of
    the daemon loses none); "FULL" syncs the WAL at every commit.  Raises
    JournalError for a file it cannot use, sqlite3.Error (disk full) when it cannot
    be created.  :attr:`queries` reads it on its own connection.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL",
                 retention_s: float | None = None, max_bytes: int | None = None,
                 low_free_pct: float = 2.0, resume_free_pct: float = 4.0,
                 check_interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns,
                 statvfs: Callable[[str], FsStats] = os.statvfs) -> None:
        check_settings(synchronous=synchronous, retention_s=retention_s, max_bytes=max_bytes,
                       low_free_pct=low_free_pct, resume_free_pct=resume_free_pct,
                       check_interval_s=check_interval_s)
        self._path = os.fspath(path)
        self._memory = self._path == ":memory:"
        self._directory = None if self._memory else os.path.dirname(os.path.abspath(path))
        self._retention_s, self._max_bytes = retention_s, max_bytes
        self._low, self._resume, self._interval = low_free_pct, resume_free_pct, check_interval_s
        self._clock, self._wall_ns, self._statvfs = clock, wall_ns, statvfs
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._suspended, self._suspended_since = False, 0
        self._closed = False
        self._last_check = clock()
        self._last_warning, self._suppressed = -math.inf, 0
        self._conn = connect(self._path, synchronous)
        try:
            self._counts.update(self._conn.execute("SELECT name, value FROM counters"))
            self._check_disk()
            self._record_restart()
        except BaseException:
            self._conn.close()
            raise
        self.queries = JournalQueries(self._fetch, self.counters)

    @property
    def suspended(self) -> bool:
        """Whether journaling is suspended for lack of disk space."""
        return self._suspended

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    def counters(self) -> dict[str, int]:
        """All counters (monotone across restarts): journaled, dropped_*, lost_*,
        suspensions, retired."""
        return dict(self._counts)

    def insert(self, items: Sequence[Item], chunk: int = GROUP_COMMIT_ROWS) -> int:
        """Commit ``items`` (time_ns, cpu, cgroup, raw message, tags) in order, in
        transactions of at most ``chunk``; returns how many were journaled.  The rest
        are counted: dropped_disk_low while suspended or when the disk fills,
        dropped_write_error for bytes without an exit record or another error."""
        self._check_open()
        journaled = 0
        for start in range(0, len(items), chunk):
            journaled += self._commit(items[start:start + chunk])
        return journaled

    def insert_samples(self, values: Sequence[Sequence[Any]]) -> int:
        """Commit sample rows (values in ``SAMPLE_COLUMNS`` order, None for NULL) in
        one transaction; how many were journaled (the rest: ``samples_dropped``)."""
        self._check_open()
        if not values:
            return 0
        if self._suspended:
            self._count("samples_dropped", len(values))
            return 0
        try:
            self._txn(lambda conn: _insert_samples(conn, values))
        except (sqlite3.Error, OverflowError, ValueError) as err:
            self._count("samples_dropped", len(values))
            self._warn(f"journal dropped {len(values)} samples: {err}")
            if isinstance(err, sqlite3.Error) and is_sqlite_full(err):
                self._suspend()
            return 0
        return len(values)

    def note(self, counter: str, n: int) -> None:
        """Add ``n`` to ``counter`` (``lost_*`` or ``dropped_*``: losses counted
        before the store); persisted with the next commit."""
        if not counter.startswith(("lost_", "dropped_")):
            raise ValueError(f"not a loss counter: {counter!r}")
        check_reason(counter, n)
        self._counts[counter] = self._counts.get(counter, 0) + n

    def note_lost(self, reason: str, n: int = 1) -> None:
        """Count ``n`` exits lost before the journal (kernel drops, truncated,
        malformed) as ``lost_<reason>``."""
        self.note(f"lost_{check_reason(reason, n)}", n)

    def due_in(self, now: float | None = None) -> float:
        """Seconds of ``clock`` until :meth:`maintain` has work (0: now)."""
        now = self._clock() if now is None else now
        return max(self._last_check + self._interval - now, 0.0)

    def maintain(self, now: float | None = None) -> bool:
        """If ``check_interval_s`` passed since the last: disk check, heartbeat,
        retention, WAL checkpoint (errors counted and logged, never raised);
        whether it ran."""
        self._check_open()
        now = self._clock() if now is None else now
        if now - self._last_check < self._interval:
            return False
        self._last_check = now
        self._check_disk()
        if self._suspended:
            return True
        try:
            self._txn(lambda conn: {})
            self._retire()
            self._checkpoint()
        except sqlite3.Error as err:
            self._warn(f"journal maintenance failed: {err}")
            if is_sqlite_full(err):
                self._suspend()
        return True

    def record_suspension(self, since_ns: int) -> None:
        """Record that journaling was suspended from ``since_ns`` (wall ns) until
        now, before this journal could be created (a new journal on a full disk):
        one more suspension, and its "disk_low" gap.  Raises sqlite3.Error."""
        gap = (since_ns, max(since_ns, self._wall_ns()), "disk_low")
        self._txn(lambda conn: {**_add_gap(conn, gap), "suspensions": 1})

    def close(self, clean: bool = True) -> None:
        """Close a suspension's gap, record a clean stop (``meta.stopped_ns``) and
        close; idempotent.  ``clean=False`` (the daemon died) records no stop, so
        the next start notes a "daemon_down" gap."""
        if self._closed:
            return
        self._closed = True
        now = self._wall_ns()
        try:
            if self._suspended:
                self._txn(lambda conn: _add_gap(conn, (self._suspended_since, now, "disk_low")))
            if clean:
                self._txn(lambda conn: _put_meta(conn, "stopped_ns", now))
            self._checkpoint()
        except sqlite3.Error as err:
            _LOG.warning("journal could not record its clean stop: %s", err)
        finally:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writing

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the journal is stopped")

    def _fetch(self, sql: str, params: Sequence[Any], budget: Budget | None) -> list[Any]:
        self._check_open()
        return fetch(self._conn, sql, params, budget)

    def _commit(self, chunk: Sequence[Item]) -> int:
        if self._suspended:
            self._count("dropped_disk_low", len(chunk))
            return 0
        built, errors = rows(chunk)
        for err in errors:
            self._count("dropped_write_error", 1)
            self._warn(f"journal dropped a record whose bytes do not decode: {err}")
        if not built:
            return 0
        try:
            try:
                self._txn(lambda conn: _insert(conn, built))
            except (OverflowError, UnicodeEncodeError):  # rare, so the slow path
                fitted: list[Row] = [(sql, tuple(map(fit, values))) for sql, values in built]
                self._txn(lambda conn: _insert(conn, fitted))
        except sqlite3.Error as err:
            self._write_failed(err, len(built))
            return 0
        return len(built)

    def _txn(self, body: Body) -> dict[str, int]:
        """Run ``body`` in one write transaction that also stores the counters (plus
        the deltas ``body`` returns) and the heartbeat; the deltas then apply."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            delta = body(conn)
            counts = dict(self._counts)
            for name, n in delta.items():
                counts[name] = counts.get(name, 0) + n
            conn.executemany(PUT_COUNTER, counts.items())
            conn.execute(PUT_META, ("last_alive_ns", self._wall_ns()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for name, n in delta.items():
            self._count(name, n)
        return delta

    def _count(self, name: str, n: int) -> None:
        self._counts[name] = self._counts.get(name, 0) + n

    def _write_failed(self, err: sqlite3.Error, n: int) -> None:
        full = is_sqlite_full(err)
        self._count("dropped_disk_low" if full else "dropped_write_error", n)
        self._warn(f"journal write failed ({err}): {n} records dropped")
        if full:
            self._suspend()
        else:
            self._check_disk()

    def _warn(self, message: str) -> None:
        """Log ``message``, at most once per check interval (with a suppressed count)."""
        now = self._clock()
        if now - self._last_warning < self._interval:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} similar messages suppressed)" if self._suppressed else ""
        _LOG.warning("%s%s", message, more)
        self._last_warning, self._suppressed = now, 0

    # ------------------------------------------------------------ periodic checks

    def _free_pct(self) -> float | None:
        if self._directory is None:
            return None
        try:
            st = self._statvfs(self._directory)
        except OSError as err:
            self._warn(f"cannot check free space of {self._directory}: {err}")
            return None
        return 100.0 * st.f_bavail / st.f_blocks if st.f_blocks else None

    def _check_disk(self) -> None:
        free = self._free_pct()
        if free is None:
            return
        if not self._suspended and free < self._low:
            self._suspend()
        elif self._suspended and free >= self._resume:
            self._resume_journaling()

    def _suspend(self) -> None:
        if self._suspended:
            return
        self._suspended_since = self._wall_ns()
        self._suspended = True
        self._counts["suspensions"] += 1
        _LOG.warning("journal suspended: disk space low under %s; records are counted as "
                     "dropped_disk_low until %.1f%% is free", self._directory, self._resume)

    def _resume_journaling(self) -> None:
        gap = (self._suspended_since, self._wall_ns(), "disk_low")
        try:
            self._txn(lambda conn: _add_gap(conn, gap))
        except sqlite3.Error as err:
            self._warn(f"journal stays suspended: {err}")
            return
        self._suspended = False
        _LOG.warning("journal resumed under %s", self._directory)

    def _retire(self) -> None:
        """Retention: exits and samples older than retention_s; while the pages in
        use exceed max_bytes, the oldest rows of whichever table holds the oldest."""
        if self._retention_s is not None:
            cutoff = self._wall_ns() - int(self._retention_s * 1e9)
            for sql, counter in ((DELETE_OLDER, "retired"),
                                 (DELETE_OLDER_SAMPLES, "samples_retired")):
                for _ in range(RETIRE_CHUNKS_PER_PASS):
                    if self._delete(sql, (cutoff, RETIRE_CHUNK), counter) < RETIRE_CHUNK:
                        break
        if self._max_bytes is not None:
            for _ in range(RETIRE_CHUNKS_PER_PASS):
                table = _oldest_table(self._conn)
                excess = _rows_over(self._conn, self._max_bytes, table)
                sql, counter = ((DELETE_OLDEST, "retired") if table == "exits"
                                else (DELETE_OLDEST_SAMPLES, "samples_retired"))
                if not excess or not self._delete(sql, (excess,), counter):
                    break

    def _delete(self, sql: str, params: tuple[int, ...], counter: str = "retired") -> int:
        delta = self._txn(lambda conn: {counter: conn.execute(sql, params).rowcount})
        return delta[counter]

    def _checkpoint(self) -> None:
        if self._memory:
            return
        self._conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def _record_restart(self) -> None:
        """Record the interval the daemon was down as a gap ("stopped" after a clean
        stop, else "daemon_down" from the last heartbeat)."""
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        since = meta.get("stopped_ns", meta.get("last_alive_ns"))
        reason = "stopped" if "stopped_ns" in meta else "daemon_down"

        def body(conn: sqlite3.Connection) -> dict[str, int]:
            if since is not None:
                _add_gap(conn, (since, max(since, self._wall_ns()), reason))
            conn.execute("DELETE FROM meta WHERE key = 'stopped_ns'")
            return {}

        try:
            self._txn(body)
        except sqlite3.Error as err:
            if not is_sqlite_full(err):
                raise JournalError(f"{self._path}: cannot write the journal: {err}") from err
            self._suspend()


def _insert(conn: sqlite3.Connection, built: list[Row]) -> dict[str, int]:
    """Insert ``built`` in order: one executemany per run of rows sharing a statement."""
    start = 0
    while start < len(built):
        sql, end = built[start][0], start + 1
        while end < len(built) and built[end][0] is sql:
            end += 1
        conn.executemany(sql, [values for _, values in built[start:end]])
        start = end
    return {"journaled": len(built)}


def _add_gap(conn: sqlite3.Connection, gap: tuple[int, int, str]) -> dict[str, int]:
    conn.execute(ADD_GAP, gap)
    return {}


def _put_meta(conn: sqlite3.Connection, key: str, value: int) -> dict[str, int]:
    conn.execute(PUT_META, (key, value))
    return {}


def _insert_samples(conn: sqlite3.Connection, values: Sequence[Sequence[Any]]
                    ) -> dict[str, int]:
    conn.executemany(INSERT_SAMPLE_SQL, values)
    return {"samples_journaled": len(values)}


def _oldest_table(conn: sqlite3.Connection) -> str:
    """"exits" or "samples": the table whose first row is the older."""
    exits, samples = (conn.execute(f"SELECT time_ns FROM {t} ORDER BY id LIMIT 1").fetchone()
                      for t in ("exits", "samples"))
    if samples is None or (exits is not None and exits[0] <= samples[0]):
        return "exits"
    return "samples"


def _rows_over(conn: sqlite3.Connection, max_bytes: int, table: str = "exits") -> int:
    """About how many of the oldest rows of ``table`` to delete to bring the pages in
    use under ``max_bytes`` (at most RETIRE_CHUNK); 0 if already under or empty."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    used: int = (pages - free) * page_size
    low, high = conn.execute(f"SELECT min(id), max(id) FROM {table}").fetchone()
    if used <= max_bytes or low is None:
        return 0
    per_row: float = used / (high - low + 1)
    return min(RETIRE_CHUNK, math.ceil((used - max_bytes) / per_row))
