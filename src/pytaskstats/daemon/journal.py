"""The exit journal of taskstatsd: every exit record in SQLite, with loss accounting.

One writer thread owns the write connection and commits batches taken from a
bounded queue; :meth:`Journal.submit` never blocks.  Every record the daemon
received is journaled or counted as dropped, and losses before the journal are
noted, so ``received + noted losses == accounted()`` once :meth:`Journal.flush`
returned.  The disk-low rule is BSD acct(2)'s hysteresis; a restart and a
suspension leave a row in ``gaps``; retention by age and size counts ``retired``
rows (retention is not loss).

Units: ``time_ns``, gap bounds and the heartbeat are CLOCK_REALTIME ns (the
``wall_ns`` clock); commit, check and retry intervals are seconds of ``clock``
(monotonic).  Kernel fields keep the kernel's units (docs/fields.md); timespec
fields are stored as ns since the epoch.  Columns come from the field table.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from .. import taskstats
from ..errors import TaskstatsError
from ..fields import FIELDS, LATEST_VERSION, Field
from ..netlink import HEADER
from ..records import ExitRecord

__all__ = ["BUCKET_FIELDS", "MIGRATIONS", "PLAUSIBLE_PCT", "PLAUSIBLE_SLACK_NS", "Gap",
           "Journal", "JournalEntry", "JournalError", "commit_due", "decode_raw"]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

BUSY_TIMEOUT_MS = 5000  # writer and readers wait this long for a lock
CHECKPOINT_BUSY_MS = 100  # the periodic TRUNCATE checkpoint gives up on busy readers quickly
JOURNAL_SIZE_LIMIT = 64 << 20  # bytes of WAL kept after a checkpoint
PAGE_SIZE = 16384  # bytes, new journals only: 7..13 rows of 1.2..2.2 KB per page
CACHE_KIB = 2048  # writer page cache (16 MiB measured no faster, and cost 15 MB RSS)
GROUP_COMMIT_ROWS = 10_000  # most rows per transaction when catching up
RETIRE_CHUNK = 1000  # rows deleted per retention transaction
RETIRE_CHUNKS_PER_PASS = 100  # retention work per check, so ingest is never starved
_SQLITE_FULL = 13  # primary result code (sqlite3.SQLITE_FULL is 3.11+)
_I64 = 1 << 63
_U64 = 1 << 64

# ---------------------------------------------------------------- schema

_CONTEXT = ("time_ns", "cpu", "pid", "tgid", "ended_process", "cgroup")
_PLAIN = tuple(f for f in FIELDS if f.ctype != "timespec")
_STAMPED = tuple(f for f in FIELDS if f.ctype == "timespec")
_BY_VERSION = tuple(sorted(_PLAIN, key=lambda f: (f.version, f.position)))  # insert order
_U64_NAMES = frozenset(f.name for f in FIELDS if f.ctype == "u64")


def _column(field: Field) -> str:
    return f"{field.name} {'TEXT' if field.ctype == 'comm' else 'INTEGER'}"


EXITS_DDL = (
    "CREATE TABLE exits (id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, cpu INTEGER, "
    "pid INTEGER NOT NULL, tgid INTEGER, ended_process INTEGER, cgroup TEXT, "
    "raw BLOB NOT NULL, " + ", ".join(_column(f) for f in FIELDS) + ")")
SCHEMA_V1 = (
    EXITS_DDL,
    # one index: history queries are bounded by time; each further index costs ~10% of
    # ingest (measured: 130k rows/s with this one, 70k with tgid/comm/uid/cgroup too)
    "CREATE INDEX exits_time_ns ON exits (time_ns)",
    "CREATE TABLE gaps (id INTEGER PRIMARY KEY, start_ns INTEGER NOT NULL, "
    "end_ns INTEGER NOT NULL, reason TEXT NOT NULL)",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
)
# MIGRATIONS[n - 1] takes PRAGMA user_version n - 1 to n.  Field columns are not
# versioned: a field added to the table becomes a column on open (old rows: NULL).
MIGRATIONS: tuple[tuple[str, ...], ...] = (SCHEMA_V1,)

_INSERT_COLUMNS = (*_CONTEXT, "raw", *(f.name for f in _BY_VERSION), *(f.name for f in _STAMPED))
INSERT_SQL = (f"INSERT INTO exits ({', '.join(_INSERT_COLUMNS)}) "
              f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})")
_PUT_COUNTER = "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)"
_PUT_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_ADD_GAP = "INSERT INTO gaps (start_ns, end_ns, reason) VALUES (?, ?, ?)"
_DELETE_OLDER = ("DELETE FROM exits WHERE id IN "
                 "(SELECT id FROM exits WHERE time_ns < ? LIMIT ?)")
_DELETE_OLDEST = "DELETE FROM exits WHERE id IN (SELECT id FROM exits ORDER BY id LIMIT ?)"

# ---------------------------------------------------------------- values


class JournalError(TaskstatsError):
    """The journal file cannot be used (corrupt, not SQLite, or from a newer taskstatsd)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One exit as received: the record, CLOCK_REALTIME ns of receipt, the cgroup path
    (None if unknown) and the exit message bytes exactly as the kernel sent them.

    ``raw`` is one netlink message; where the transport could not give it alone,
    ``taskstats.encode_exit(family, record)`` is the canonical substitute.
    """

    record: ExitRecord
    time_ns: int
    cgroup: str | None
    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.record, ExitRecord) or not isinstance(self.raw, bytes):
            raise TypeError("JournalEntry needs an ExitRecord and the raw message bytes")


class Gap(NamedTuple):
    """An interval (CLOCK_REALTIME ns) the journal did not cover, and why:
    "stopped" (clean stop), "daemon_down" (crash) or "disk_low" (suspended)."""

    start_ns: int
    end_ns: int
    reason: str


class _FsStats(Protocol):
    @property
    def f_bavail(self) -> int: ...
    @property
    def f_blocks(self) -> int: ...


class _Filters(NamedTuple):
    since_ns: int | None
    until_ns: int | None
    comm: str | None
    uid: int | None
    pid: int | None
    tgid: int | None
    cgroup: str | None


def commit_due(pending: int, oldest: float, now: float, batch_size: int,
               max_delay_s: float) -> bool:
    """The commit rule: ``batch_size`` records pending, or the oldest ``max_delay_s`` old.

    ``oldest`` and ``now`` are readings of the same clock (seconds).
    """
    return pending >= batch_size or (pending > 0 and now - oldest >= max_delay_s)


def decode_raw(raw: bytes) -> ExitRecord:
    """Decode a journaled ``raw`` message again (the family id is its nlmsg_type)."""
    family = HEADER.unpack_from(raw)[1]
    for event in taskstats.decode(raw, family):
        if isinstance(event, ExitRecord):
            return event
    raise ValueError("the raw bytes hold no exit record")


# ---------------------------------------------------------------- rows
#
# Binding None costs ~200 ns per parameter in CPython's sqlite3 (an adapter
# lookup), eight times an int, so rows bind NaN instead: SQLite stores a NaN
# double as NULL.  Fields are bound newest-version last, so the fields a record's
# version lacks are a tail of NaNs chosen by version, with no per-field test.

_NAN = float("nan")


def _getter(fields: Sequence[Field]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A tuple of the record values at the fields' positions (itemgetter, always a tuple)."""
    if len(fields) == 1:
        position = fields[0].position
        return lambda values: (values[position],)
    return itemgetter(*(f.position for f in fields)) if fields else lambda values: ()


class _Plan(NamedTuple):
    """The plain fields of one struct version: present ones, then a tail it lacks."""

    present: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    absent: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    nones: tuple[None, ...]
    nans: tuple[float, ...]


def _plan(version: int) -> _Plan:
    split = sum(1 for f in _BY_VERSION if f.version <= version)
    tail = len(_BY_VERSION) - split
    return _Plan(_getter(_BY_VERSION[:split]), _getter(_BY_VERSION[split:]), (None,) * tail,
                 (_NAN,) * tail)


_PLANS = {version: _plan(version) for version in range(LATEST_VERSION + 1)}
_stamp_values = _getter(_STAMPED)
_NO_STAMPS, _NAN_STAMPS = (None,) * len(_STAMPED), (_NAN,) * len(_STAMPED)


def _row(entry: JournalEntry) -> tuple[Any, ...]:
    """The INSERT parameters of ``entry`` (order of ``_INSERT_COLUMNS``; NaN = NULL)."""
    rec = entry.record
    task = rec.task
    plan = _PLANS[min(task.version, LATEST_VERSION)]
    absent = plan.absent(task)
    stamps = _stamp_values(task)
    return (entry.time_ns, _NAN if rec.cpu is None else rec.cpu, rec.pid,
            _NAN if rec.tgid is None else rec.tgid,
            _NAN if (ended := rec.ended_process) is None else ended,
            _NAN if entry.cgroup is None else entry.cgroup, entry.raw, *plan.present(task),
            *(plan.nans if absent == plan.nones else absent),
            *(_NAN_STAMPS if stamps == _NO_STAMPS else
              [_NAN if ts is None else ts.to_ns() for ts in stamps]))


def _fit(value: Any) -> Any:
    """A u64 past int64 as its two's complement (read back by ``_exit_dict``); NULL
    for other integers SQLite cannot hold (``raw`` keeps them)."""
    if not isinstance(value, int) or -_I64 <= value < _I64:
        return value
    return value - _U64 if value < _U64 else None


def _exit_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    if out["ended_process"] is not None:
        out["ended_process"] = bool(out["ended_process"])
    for name in _U64_NAMES:
        value = out[name]
        if value is not None and value < 0:
            out[name] = value + _U64
    return out


# ---------------------------------------------------------------- queries

_GROUP_KEYS = {"comm": "ac_comm", "uid": "ac_uid", "cgroup": "cgroup"}
_SUMMED_UNITS = frozenset({"count", "ns", "us", "bytes", "MB*us"})


def _aggregate(field: Field) -> str | None:
    """How groups combine ``field``: MAX of peaks, MIN of nonzero minima, SUM of counts,
    times, bytes and integrals; None for identities, flags and timestamps."""
    if field.name.startswith("hiwater_") or field.name.endswith("_delay_max"):
        return f"MAX({field.name})"
    if field.name.endswith("_delay_min"):  # 0 means "no delay seen"
        return f"MIN(NULLIF({field.name}, 0))"
    if field.unit in _SUMMED_UNITS and field.name != "ac_tgetime":  # per group, not task
        return f"SUM({field.name})"
    return None


AGGREGATES: dict[str, str] = {f.name: a for f in FIELDS if (a := _aggregate(f)) is not None}
_DELAY_TOTALS = tuple(f.name for f in FIELDS if f.name.endswith("_delay_total"))
# what Journal.aggregate sums by default: CPU time and every delay total
BUCKET_FIELDS = ("ac_utime", "ac_stime", *_DELAY_TOTALS)
PLAUSIBLE_PCT = 5  # a delay may exceed its task's ac_etime by this much (clocks differ)
PLAUSIBLE_SLACK_NS = 10_000_000  # ... plus this
_POSSIBLE = (f"{{0}} <= ac_etime * {1000 + 10 * PLAUSIBLE_PCT} + {PLAUSIBLE_SLACK_NS} "
             "OR ac_etime IS NULL")


def _checked_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """``fields`` without repeats, each a name of :data:`AGGREGATES` (else ValueError)."""
    if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
        raise ValueError("fields must be a list of field names")
    unknown = [f for f in fields if f not in AGGREGATES]
    if unknown:
        raise ValueError(f"cannot aggregate {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(AGGREGATES)}")
    return tuple(dict.fromkeys(fields))


def _sum_of(name: str, plausible: bool) -> str:
    """The aggregate of field ``name``; ``plausible``: impossible delays left out."""
    if plausible and name in _DELAY_TOTALS:
        return f"SUM(CASE WHEN {_POSSIBLE.format(name)} THEN {name} END)"
    return AGGREGATES[name]


def _impossible(fields: Sequence[str]) -> str:
    """The select item counting the exits with an impossible delay among ``fields``."""
    delays = [f for f in fields if f in _DELAY_TOTALS]
    if not delays:
        return ", 0 AS impossible"
    return (", COALESCE(SUM(NOT (" + ") OR NOT (".join(_POSSIBLE.format(f) for f in delays)
            + ")), 0) AS impossible")
_EXIT_SORTS = (*_CONTEXT, *(f.name for f in FIELDS))


def _select_list(total: bool) -> str:
    """``exits`` count and the aggregates; ``total`` uses TOTAL (float) for SUM."""
    aggs = (a.replace("SUM(", "TOTAL(") if total else a for a in AGGREGATES.values())
    return ", ".join(["COUNT(*) AS exits",
                      *(f"{a} AS {name}" for name, a in zip(AGGREGATES, aggs, strict=True))])


def _where(filters: _Filters) -> tuple[str, list[Any]]:
    """WHERE clause and parameters; ``cgroup`` matches the cgroup and its descendants."""
    clauses: list[str] = []
    params: list[Any] = []
    for sql, value in (("time_ns >= ?", filters.since_ns), ("time_ns < ?", filters.until_ns),
                       ("ac_comm = ?", filters.comm), ("ac_uid = ?", filters.uid),
                       ("pid = ?", filters.pid), ("tgid = ?", filters.tgid)):
        if value is not None:
            clauses.append(sql)
            params.append(value)
    if filters.cgroup is not None:
        base = filters.cgroup.rstrip("/")
        clauses.append("(cgroup = ? OR (cgroup >= ? AND cgroup < ?))")
        params += [base or "/", base + "/", base + "0"]  # "0" sorts right after "/"
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _order(sort: str | None, allowed: Sequence[str], default: str, tiebreak: str) -> str:
    if sort is None:
        return f" ORDER BY {default}"
    name = sort.removeprefix("-")
    if name not in allowed:
        raise ValueError(f"cannot sort by {sort!r}; choose one of {', '.join(allowed)} "
                         "(a '-' prefix sorts descending)")
    direction = "DESC" if sort.startswith("-") else "ASC"
    return f" ORDER BY {name} {direction}, {tiebreak}"


def _limit(limit: int | None, params: list[Any]) -> str:
    if limit is None:
        return ""
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative integer, not {limit!r}")
    params.append(limit)
    return " LIMIT ?"


def _group_key(group_by: str) -> str:
    if group_by not in _GROUP_KEYS:
        raise ValueError(f"cannot group by {group_by!r}; choose one of "
                         f"{', '.join(_GROUP_KEYS)}")
    return _GROUP_KEYS[group_by]


def _fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(sql, params).fetchall()


def _integral(row: sqlite3.Row) -> dict[str, Any]:
    return {k: int(v) if isinstance(v, float) else v for k, v in dict(row).items()}


# ---------------------------------------------------------------- opening


def _is_full(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:  # Python 3.10
        return "full" in str(err)
    return bool(code & 0xFF == _SQLITE_FULL)


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    """The writer connection: checked, in WAL mode, migrated, with every field column."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    try:
        _quick_check(conn, path)
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # no effect once the file exists
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")  # validated by the caller
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        _migrate(conn, path)
        _add_field_columns(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_settings(*, synchronous: str, batch_size: int, max_delay_s: float,
                    queue_size: int, retention_s: float | None, max_bytes: int | None,
                    low_free_pct: float, resume_free_pct: float,
                    check_interval_s: float) -> None:
    """Raise ValueError for settings the journal cannot honour."""
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    if min(batch_size, queue_size, max_delay_s, check_interval_s) <= 0:
        raise ValueError("batch_size, queue_size, max_delay_s and check_interval_s "
                         "must be positive")
    if any(limit is not None and limit <= 0 for limit in (retention_s, max_bytes)):
        raise ValueError("retention_s and max_bytes must be positive (or None)")
    if not 0 <= low_free_pct <= resume_free_pct <= 100:
        raise ValueError("need 0 <= low_free_pct <= resume_free_pct <= 100")


def _quick_check(conn: sqlite3.Connection, path: str) -> None:
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as err:
        raise JournalError(f"{path}: not a usable SQLite journal ({err}); "
                           "move it aside to start a new one") from err
    if problems != ["ok"]:
        raise JournalError(f"{path}: quick_check failed: {'; '.join(problems[:5])}; "
                           "move it aside to start a new journal")


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise JournalError(f"{path}: journal schema {version} is newer than this "
                           f"taskstatsd's ({len(MIGRATIONS)})")
    for target in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _add_field_columns(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(exits)")}
    for field in FIELDS:
        if field.name not in have:
            conn.execute(f"ALTER TABLE exits ADD COLUMN {_column(field)}")


# ---------------------------------------------------------------- the journal


class _Command:
    """Work for the writer thread: ``fn`` runs on its connection (None: only a flush)."""

    def __init__(self, fn: Callable[[sqlite3.Connection], Any] | None) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()

    def run(self, conn: sqlite3.Connection) -> None:
        try:
            self.future.set_result(None if self.fn is None else self.fn(conn))
        except Exception as err:  # handed to the waiting caller, who re-raises it
            self.future.set_exception(err)


Body = Callable[[sqlite3.Connection], dict[str, int]]


class Journal:
    """The exit journal at ``path`` (a file, or ":memory:" for tests).

    Commits when ``batch_size`` records are pending or the oldest is ``max_delay_s``
    old (seconds of ``clock``), or on flush()/stop().  A commit takes every pending
    record (group commit: a writer that fell behind catches up in transactions of up
    to ``max(batch_size, GROUP_COMMIT_ROWS)``).  At most ``queue_size`` records are
    accepted and not yet committed.  Every ``check_interval_s``: disk check (suspend
    below ``low_free_pct`` % free, resume at ``resume_free_pct`` %), heartbeat,
    retention (rows older than ``retention_s`` seconds; oldest rows while the pages in
    use exceed ``max_bytes``) and a WAL checkpoint.

    ``synchronous`` (a config string, checked): with "NORMAL" a power loss may roll
    back the last commits (a crash of the daemon loses none); "FULL" syncs the WAL
    at every commit.

    Queries of a file journal use a short-lived read connection of the calling
    thread.  An in-memory journal has only the writer's connection, so its queries
    run on the writer thread, in order with the commits (and fail after stop()).
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 synchronous: str = "NORMAL", batch_size: int = 100,
                 max_delay_s: float = 0.25, queue_size: int = 100_000,
                 retention_s: float | None = None, max_bytes: int | None = None,
                 low_free_pct: float = 2.0, resume_free_pct: float = 4.0,
                 check_interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns,
                 statvfs: Callable[[str], _FsStats] = os.statvfs) -> None:
        _check_settings(synchronous=synchronous, batch_size=batch_size,
                        max_delay_s=max_delay_s, queue_size=queue_size,
                        retention_s=retention_s, max_bytes=max_bytes,
                        low_free_pct=low_free_pct, resume_free_pct=resume_free_pct,
                        check_interval_s=check_interval_s)
        self._path = os.fspath(path)
        self._memory = self._path == ":memory:"
        self._directory = None if self._memory else os.path.dirname(os.path.abspath(path))
        self._batch_size, self._max_delay, self._queue_size = batch_size, max_delay_s, queue_size
        self._retention_s, self._max_bytes = retention_s, max_bytes
        self._low, self._resume = low_free_pct, resume_free_pct
        self._interval = check_interval_s
        self._clock, self._wall_ns, self._statvfs = clock, wall_ns, statvfs
        self._init_state()
        self._conn = _connect(self._path, synchronous)
        try:
            self._counts.update(self._conn.execute("SELECT name, value FROM counters"))
            self._check_disk()
            self._record_restart()
        except BaseException:
            self._conn.close()
            raise
        self._thread = threading.Thread(target=self._run, name="taskstatsd-journal",
                                        daemon=True)
        self._thread.start()

    def _init_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._incoming: list[JournalEntry] = []  # guarded by _cond, like what follows
        self._oldest = 0.0  # clock reading when _incoming became non-empty
        self._inflight = 0  # taken by the writer, not yet committed or dropped
        self._commands: list[_Command] = []
        self._taken: list[_Command] = []  # the commands of the writer's current cycle
        self._stopping = False
        self._failure: BaseException | None = None
        self._suspended = False
        self._counts: dict[str, int] = dict.fromkeys(
            ("journaled", "dropped_queue_full", "dropped_disk_low", "dropped_write_error",
             "suspensions", "retired"), 0)
        # writer thread only:
        self._suspended_since = 0
        self._last_check = self._clock()
        self._last_warning, self._suppressed = -math.inf, 0

    # ------------------------------------------------------------ producer side

    def submit(self, entry: JournalEntry) -> bool:
        """Queue ``entry``; never blocks.  False (and counted) when the queue is full
        or journaling is suspended.  Raises RuntimeError after stop()."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("submit() after the journal stopped") from self._failure
            if self._suspended:
                self._counts["dropped_disk_low"] += 1
                return False
            if len(self._incoming) + self._inflight >= self._queue_size:
                self._counts["dropped_queue_full"] += 1
                return False
            self._incoming.append(entry)
            pending = len(self._incoming)
            if pending == 1:
                self._oldest = self._clock()
                self._cond.notify()
            elif pending == self._batch_size:
                self._cond.notify()
        return True

    def note_lost(self, reason: str, n: int = 1) -> None:
        """Count ``n`` exits lost before the journal (kernel drops, truncated,
        malformed) as ``lost_<reason>``; persisted with the next commit."""
        if not reason.isidentifier() or not reason.islower() or n < 0:
            raise ValueError(f"bad loss {reason!r} x {n}: want a lowercase name and n >= 0")
        with self._cond:
            key = f"lost_{reason}"
            self._counts[key] = self._counts.get(key, 0) + n

    def counters(self) -> dict[str, int]:
        """All counters (monotone across restarts): journaled, dropped_*, lost_*,
        suspensions, retired."""
        with self._cond:
            return dict(self._counts)

    def lost_total(self) -> int:
        """Exits lost before the journal (every ``lost_*`` counter)."""
        return sum(v for k, v in self.counters().items() if k.startswith("lost_"))

    def accounted(self) -> int:
        """journaled + every dropped_* + every lost_*.  Once :meth:`flush` returned it
        equals the exits submitted plus those noted lost, i.e. what the kernel sent;
        before, ``pending`` records are in neither."""
        return sum(v for k, v in self.counters().items()
                   if k == "journaled" or k.startswith(("dropped_", "lost_")))

    @property
    def pending(self) -> int:
        """Records accepted but not yet committed or dropped."""
        with self._cond:
            return len(self._incoming) + self._inflight

    @property
    def suspended(self) -> bool:
        """Whether journaling is suspended for lack of disk space."""
        with self._cond:
            return self._suspended

    def flush(self, timeout: float | None = None) -> None:
        """Commit (or count as dropped) everything submitted before the call; also
        runs the periodic checks if they are due."""
        self._call(None, timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Flush, record a clean stop (``meta.stopped_ns``) and join the writer; idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, fn: Callable[[sqlite3.Connection], _T] | None,
              timeout: float | None = None) -> _T:
        command = _Command(fn)
        with self._cond:
            if self._stopping:
                raise RuntimeError("the journal is stopped") from self._failure
            self._commands.append(command)
            self._cond.notify()
        result: _T = command.future.result(timeout)
        return result

    # ------------------------------------------------------------ queries

    def query(self, *, since_ns: int | None = None, until_ns: int | None = None,
              comm: str | None = None, uid: int | None = None, pid: int | None = None,
              tgid: int | None = None, cgroup: str | None = None,
              group_by: Literal["comm", "uid", "cgroup"] | None = None,
              sort: str | None = None, limit: int | None = None,
              raw: bool = False) -> list[dict[str, Any]]:
        """Journaled exits, oldest first, filtered (all filters AND; ``since_ns`` <=
        time_ns < ``until_ns``; ``cgroup`` includes descendants).

        Without ``group_by``: one dict per exit with ``time_ns cpu pid tgid
        ended_process cgroup``, every kernel field of the task record (timespecs as
        ns) and, if ``raw``, the message bytes.  With ``group_by``: one dict per
        group with its key (``ac_comm``, ``ac_uid`` or ``cgroup``), ``exits`` and the
        :data:`AGGREGATES`.  ``sort``: a key of those dicts, "-" for descending.
        """
        filters = _Filters(since_ns, until_ns, comm, uid, pid, tgid, cgroup)
        if group_by is None:
            return [_exit_dict(row) for row in self._exits(filters, sort, limit, raw)]
        if raw:
            raise ValueError("raw bytes are per exit; not with group_by")
        return self._aggregated(filters, _group_key(group_by), sort, limit)

    def totals(self, *, since_ns: int | None = None, until_ns: int | None = None,
               comm: str | None = None, uid: int | None = None, pid: int | None = None,
               tgid: int | None = None, cgroup: str | None = None) -> dict[str, Any]:
        """``exits`` and the :data:`AGGREGATES` over the filtered exits (None: no value)."""
        filters = _Filters(since_ns, until_ns, comm, uid, pid, tgid, cgroup)
        return self._aggregated(filters, None, None, None)[0]

    def aggregate(self, *, bucket_s: int | None = None, group_by: str | None = None,
                  fields: Sequence[str] = BUCKET_FIELDS, plausible: bool = False,
                  since_ns: int | None = None, until_ns: int | None = None,
                  comm: str | None = None, uid: int | None = None, pid: int | None = None,
                  tgid: int | None = None, cgroup: str | None = None) -> list[dict[str, Any]]:
        """Sums over the exits filtered as :meth:`query`, per time bucket of ``bucket_s``
        seconds (aligned to multiples of it since the epoch) and/or per ``group_by`` key;
        one dict per non-empty group, oldest bucket then key first (one dict in all
        without either, even with no exits).

        Each dict: ``bucket_ns`` (the bucket's start, ns since the epoch; with
        ``bucket_s``), the key (``ac_comm``, ``ac_uid`` or ``cgroup``; with ``group_by``),
        ``exits``, ``processes`` (exits that ended a process; None if no row knew) and
        the :data:`AGGREGATES` of ``fields`` (names checked against the field table).
        ``plausible``: a delay total longer than its task's ``ac_etime`` (plus
        PLAUSIBLE_PCT % and PLAUSIBLE_SLACK_NS), which the kernel sometimes reports,
        is left out of its sum, and ``impossible`` counts the exits that had one.
        """
        fields = _checked_fields(fields)
        filters = _Filters(since_ns, until_ns, comm, uid, pid, tgid, cgroup)
        keys: list[str] = []
        params: list[Any] = []
        if bucket_s is not None:
            if not isinstance(bucket_s, int) or isinstance(bucket_s, bool) or bucket_s <= 0:
                raise ValueError(f"bucket_s must be a positive integer, not {bucket_s!r}")
            keys.append("time_ns / ? AS bucket")
            params.append(bucket_s * 1_000_000_000)
        if group_by is not None:
            keys.append(_group_key(group_by))
        where, where_params = _where(filters)
        group = ", ".join(k.split(" AS ")[-1] for k in keys)
        tail = f" FROM exits{where}" + (f" GROUP BY {group} ORDER BY {group}" if keys else "")
        head = ", ".join([*keys, "COUNT(*) AS exits", "SUM(ended_process) AS processes"])

        def sql(sum_name: str) -> str:
            aggs = "".join(f", {_sum_of(f, plausible).replace('SUM(', sum_name)} AS {f}"
                           for f in fields)
            return f"SELECT {head}{aggs}{_impossible(fields) if plausible else ''}{tail}"

        try:
            rows = self._select(sql("SUM("), [*params, *where_params])
        except sqlite3.OperationalError as err:
            if "overflow" not in str(err):
                raise
            rows = self._select(sql("TOTAL("), [*params, *where_params])
        out = [_integral(row) for row in rows]
        for row in out:
            if bucket_s is not None:
                row["bucket_ns"] = row.pop("bucket") * bucket_s * 1_000_000_000
        return out

    def gaps(self) -> list[Gap]:
        """Intervals not covered by the journal, oldest first."""
        rows = self._select("SELECT start_ns, end_ns, reason FROM gaps ORDER BY start_ns, id",
                            [])
        return [Gap(*row) for row in rows]

    def _exits(self, filters: _Filters, sort: str | None, limit: int | None,
               raw: bool) -> list[sqlite3.Row]:
        where, params = _where(filters)
        columns = ", ".join([*_CONTEXT, *(f.name for f in FIELDS), *(["raw"] if raw else [])])
        order = _order(sort, _EXIT_SORTS, "id", "id")
        return self._select(f"SELECT {columns} FROM exits{where}{order}"
                            f"{_limit(limit, params)}", params)

    def _aggregated(self, filters: _Filters, key: str | None, sort: str | None,
                    limit: int | None) -> list[dict[str, Any]]:
        """Groups by column ``key`` (None: one row over everything).  SUM falls back to
        TOTAL (exact below 2**53) when a sum overflows int64."""
        where, params = _where(filters)
        group = f" GROUP BY {key}" if key else ""
        order = "" if key is None else _order(sort, (key, "exits", *AGGREGATES), key, key)
        tail = f"{where}{group}{order}{_limit(limit, params)}"
        head = f"SELECT {key}, " if key else "SELECT "
        try:
            rows = self._select(f"{head}{_select_list(False)} FROM exits{tail}", params)
        except sqlite3.OperationalError as err:
            if "overflow" not in str(err):
                raise
            rows = self._select(f"{head}{_select_list(True)} FROM exits{tail}", params)
        return [_integral(row) for row in rows]

    def _select(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        if self._memory:
            return self._call(lambda conn: _fetch(conn, sql, params))
        conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None)
        try:
            conn.execute("PRAGMA query_only = ON")
            return _fetch(conn, sql, params)
        finally:
            conn.close()

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        try:
            while self._cycle():
                pass
            self._shutdown()
        except BaseException as err:
            self._fail(err)  # logged with its traceback; callers get RuntimeError
            if not isinstance(err, Exception):
                raise

    def _cycle(self) -> bool:
        """One round: wait for work, commit what is due, run the checks, answer commands."""
        with self._cond:
            self._wait_for_work()
            commands = self._taken = self._commands
            self._commands = []
            stopping = self._stopping
            batch = self._take(stopping or any(c.fn is None for c in commands))
        self._write(batch)
        self._maintain()
        for command in commands:
            command.run(self._conn)
        return not stopping

    def _wait_for_work(self) -> None:
        now = self._clock()
        if self._commands or self._stopping or self._due(now):
            return
        if now - self._last_check >= self._interval:
            return
        deadline = self._last_check + self._interval
        if self._incoming:
            deadline = min(deadline, self._oldest + self._max_delay)
        self._cond.wait(min(max(deadline - now, 0.001), self._interval))

    def _due(self, now: float) -> bool:
        return commit_due(len(self._incoming), self._oldest, now, self._batch_size,
                          self._max_delay)

    def _take(self, force: bool) -> list[JournalEntry]:
        if not (force or self._due(self._clock())):
            return []
        batch, self._incoming = self._incoming, []
        self._inflight += len(batch)
        return batch

    def _write(self, batch: list[JournalEntry]) -> None:
        size = max(self._batch_size, GROUP_COMMIT_ROWS)
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            self._commit(chunk)
            with self._cond:
                self._inflight -= len(chunk)

    def _commit(self, chunk: list[JournalEntry]) -> None:
        if self._suspended:
            self._count("dropped_disk_low", len(chunk))
            return
        rows = [_row(entry) for entry in chunk]
        try:
            try:
                self._txn(lambda conn: _insert(conn, rows))
            except OverflowError:  # an integer beyond int64: rare, so the slow path
                fitted = [tuple(map(_fit, row)) for row in rows]
                self._txn(lambda conn: _insert(conn, fitted))
        except sqlite3.Error as err:
            self._write_failed(err, len(rows))

    def _txn(self, body: Body) -> dict[str, int]:
        """Run ``body`` in one write transaction that also stores the counters (plus
        the deltas ``body`` returns) and the heartbeat; the deltas then apply."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            delta = body(conn)
            with self._cond:
                counts = dict(self._counts)
            for name, n in delta.items():
                counts[name] = counts.get(name, 0) + n
            conn.executemany(_PUT_COUNTER, counts.items())
            conn.execute(_PUT_META, ("last_alive_ns", self._wall_ns()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        for name, n in delta.items():
            self._count(name, n)
        return delta

    def _count(self, name: str, n: int) -> None:
        with self._cond:
            self._counts[name] = self._counts.get(name, 0) + n

    def _write_failed(self, err: sqlite3.Error, n: int) -> None:
        full = _is_full(err)
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

    def _maintain(self) -> None:
        """Every check interval: disk check, heartbeat, retention, WAL checkpoint."""
        now = self._clock()
        if now - self._last_check < self._interval:
            return
        self._last_check = now
        self._check_disk()
        if self._suspended:
            return
        try:
            self._txn(lambda conn: {})
            self._retire()
            self._checkpoint()
        except sqlite3.Error as err:
            self._warn(f"journal maintenance failed: {err}")
            if _is_full(err):
                self._suspend()

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
        with self._cond:
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
        with self._cond:
            self._suspended = False
        _LOG.warning("journal resumed under %s", self._directory)

    def _retire(self) -> None:
        if self._retention_s is not None:
            cutoff = self._wall_ns() - int(self._retention_s * 1e9)
            for _ in range(RETIRE_CHUNKS_PER_PASS):
                if self._delete(_DELETE_OLDER, (cutoff, RETIRE_CHUNK)) < RETIRE_CHUNK:
                    break
        if self._max_bytes is not None:
            for _ in range(RETIRE_CHUNKS_PER_PASS):
                excess = _rows_over(self._conn, self._max_bytes)
                if not excess or not self._delete(_DELETE_OLDEST, (excess,)):
                    break

    def _delete(self, sql: str, params: tuple[int, ...]) -> int:
        delta = self._txn(lambda conn: {"retired": conn.execute(sql, params).rowcount})
        return delta["retired"]

    def _checkpoint(self) -> None:
        if self._memory:
            return
        self._conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    # ------------------------------------------------------------ start and stop

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
            if not _is_full(err):
                raise JournalError(f"{self._path}: cannot write the journal: {err}") from err
            self._suspend()

    def _shutdown(self) -> None:
        now = self._wall_ns()
        try:
            if self._suspended:
                self._txn(lambda conn: _add_gap(conn, (self._suspended_since, now, "disk_low")))
            self._txn(lambda conn: _put_meta(conn, "stopped_ns", now))
            self._checkpoint()
        except sqlite3.Error as err:
            _LOG.warning("journal could not record its clean stop: %s", err)
        finally:
            self._conn.close()

    def _fail(self, err: BaseException) -> None:
        """The writer died of a bug: refuse further work, fail the waiting callers."""
        _LOG.error("journal writer failed: %r", err, exc_info=err)
        with self._cond:
            self._stopping, self._failure = True, err
            commands, self._commands = self._taken + self._commands, []
        for command in commands:
            if not command.future.done():
                command.future.set_exception(RuntimeError("the journal writer failed"))
        self._conn.close()


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> dict[str, int]:
    conn.executemany(INSERT_SQL, rows)
    return {"journaled": len(rows)}


def _add_gap(conn: sqlite3.Connection, gap: tuple[int, int, str]) -> dict[str, int]:
    conn.execute(_ADD_GAP, gap)
    return {}


def _put_meta(conn: sqlite3.Connection, key: str, value: int) -> dict[str, int]:
    conn.execute(_PUT_META, (key, value))
    return {}


def _rows_over(conn: sqlite3.Connection, max_bytes: int) -> int:
    """About how many of the oldest rows to delete to bring the pages in use under
    ``max_bytes`` (at most RETIRE_CHUNK); 0 if already under or empty."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    used: int = (pages - free) * page_size
    low, high = conn.execute("SELECT min(id), max(id) FROM exits").fetchone()
    if used <= max_bytes or low is None:
        return 0
    per_row: float = used / (high - low + 1)
    return min(RETIRE_CHUNK, math.ceil((used - max_bytes) / per_row))
