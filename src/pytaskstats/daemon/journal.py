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

import errno
import logging
import math
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple, Protocol, TypeVar

from .. import taskstats
from ..errors import ProtocolError, TaskstatsError
from ..fields import FIELDS, LATEST_VERSION, MIN_VERSION, Field, layout
from ..netlink import HEADER
from ..records import AGROUP, ExitRecord
from .journal_queries import (
    AGGREGATES,
    BUCKET_FIELDS,
    BUSY_TIMEOUT_MS,
    CONTEXT,
    TAG_COLUMNS,
    Gap,
    JournalQueries,
    fetch,
    read,
)

__all__ = ["AGGREGATES", "BUCKET_FIELDS", "MIGRATIONS", "NO_TAGS", "Gap", "Item", "Journal",
           "JournalEntry", "JournalError", "Tags", "commit_due", "decode_raw"]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

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

_PLAIN = tuple(f for f in FIELDS if f.ctype != "timespec")
_STAMPED = tuple(f for f in FIELDS if f.ctype == "timespec")
_BY_VERSION = tuple(sorted(_PLAIN, key=lambda f: (f.version, f.position)))  # insert order


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
# the access policy's columns (TAG_COLUMNS); rows from before keep NULL there, which
# every restricted reader takes as "unknown": shown to admins only (fail closed)
SCHEMA_V2 = ("ALTER TABLE exits ADD COLUMN owner_sees INTEGER",
             "ALTER TABLE exits ADD COLUMN pidns TEXT",
             "ALTER TABLE exits ADD COLUMN ns_ids TEXT")
# every non-admin history query filters on its uid: without this index each one read
# the whole journal (benchmarks/history_cost.py: 10-40x); it costs ingest 5-15%
# (measured: that script's journal build, 300k rows, with and without it)
SCHEMA_V3 = ("CREATE INDEX exits_uid_time ON exits (ac_uid, time_ns)",)
# MIGRATIONS[n - 1] takes PRAGMA user_version n - 1 to n.  Field columns are not
# versioned: a field added to the table becomes a column on open (old rows: NULL).
MIGRATIONS: tuple[tuple[str, ...], ...] = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3)

_INSERT_COLUMNS = (*CONTEXT, "raw", *TAG_COLUMNS, *(f.name for f in _BY_VERSION),
                   *(f.name for f in _STAMPED))
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


class Tags(NamedTuple):
    """What the access policy knows of an exit (the TAG_COLUMNS): whether its owner
    may see it (None: unknown), its PID namespace chain ("" the initial one, None
    unknown) and its pids there ("pids/tgids/ppids" at levels 1..K)."""

    owner_sees: bool | None = None
    pidns: str | None = None
    ns_ids: str | None = None


NO_TAGS = Tags()


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One exit as received: the record, CLOCK_REALTIME ns of receipt, the cgroup path
    (None if unknown), the exit message bytes exactly as the kernel sent them and
    the access policy's :class:`Tags`.

    ``raw`` is one netlink message; where the transport could not give it alone,
    ``taskstats.encode_exit(family, record)`` is the canonical substitute.
    """

    record: ExitRecord
    time_ns: int
    cgroup: str | None
    raw: bytes
    tags: Tags = NO_TAGS

    def __post_init__(self) -> None:
        if not isinstance(self.record, ExitRecord) or not isinstance(self.raw, bytes):
            raise TypeError("JournalEntry needs an ExitRecord and the raw message bytes")


class _FsStats(Protocol):
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


Item = tuple[int, int | None, str | None, bytes, Tags]  # time_ns, cpu, cgroup, raw, tags
Row = tuple[str, Sequence[Any]]  # an INSERT statement and its parameters


def _decoded_row(item: Item, rec: ExitRecord) -> Row:
    """INSERT_SQL's parameters for ``item`` whose raw bytes decoded to ``rec``."""
    time_ns, cpu, cgroup, raw, tags = item
    task = rec.task
    plan = _PLANS[min(task.version, LATEST_VERSION)]
    absent = plan.absent(task)
    stamps = _stamp_values(task)
    return INSERT_SQL, (
        time_ns, _NAN if cpu is None else cpu, rec.pid, _NAN if rec.tgid is None else rec.tgid,
        _NAN if (ended := rec.ended_process) is None else ended,
        _NAN if cgroup is None else cgroup, raw, *_tag_values(tags), *plan.present(task),
        *(plan.nans if absent == plan.nones else absent),
        *(_NAN_STAMPS if stamps == _NO_STAMPS else
          [_NAN if ts is None else ts.to_ns() for ts in stamps]))


# The usual exit message (one AGGR_PID nest) skips decoding: its struct is unpacked
# straight into an INSERT whose columns follow the struct's own order; timespecs
# are summed to ns by SQLite.  Every other shape is decoded (_decoded_row).


class _RawPlan(NamedTuple):
    """The INSERT of one (version, payload size) in struct order, and where the
    values needing Python live in the unpacked tuple (-1: not in this layout)."""

    sql: str
    struct: struct.Struct
    comm: int
    flag: int  # ac_flag, for ended_process (v12+ only)
    tgid: int


_RAW_PLANS: dict[tuple[int, int], _RawPlan | None] = {}
_U16 = struct.Struct("=H")  # the struct's version


def _raw_plan(version: int, size: int) -> _RawPlan | None:
    if not MIN_VERSION <= version <= LATEST_VERSION:
        return None
    lay = layout(version)
    fields = lay.fields[:lay.fitting(size)]
    names = [f.name for f in fields]
    marks = ["NULLIF(? * 1000000000 + ?, 0)" if f.ctype == "timespec" else "?" for f in fields]
    flat = [n for f in fields for n in ((f.name, "") if f.ctype == "timespec" else (f.name,))]

    def at(name: str) -> int:
        return flat.index(name) if name in flat else -1

    sql = (f"INSERT INTO exits ({', '.join((*CONTEXT, 'raw', *TAG_COLUMNS, *names))}) "
           f"VALUES ({', '.join(['?'] * (len(CONTEXT) + 1 + len(TAG_COLUMNS)) + marks)})")
    plan = _RawPlan(sql, lay.struct_for(len(fields)), at("ac_comm"),
                    at("ac_flag") if version >= 12 else -1, at("ac_tgid"))
    if len(_RAW_PLANS) < 1024:  # sizes are few; bound the cache all the same
        _RAW_PLANS[version, size] = plan
    return plan


def _tag_values(tags: Tags) -> tuple[Any, ...]:
    """The TAG_COLUMNS' values (NaN binds NULL)."""
    if tags is NO_TAGS:
        return _NAN_TAGS
    sees, pidns, ids = tags
    return (_NAN if sees is None else int(sees), _NAN if pidns is None else pidns,
            _NAN if ids is None else ids)


_NAN_TAGS = (_NAN,) * len(TAG_COLUMNS)


def _row(item: Item) -> Row:
    """The INSERT of ``item`` (NaN binds NULL).  Raises ProtocolError or ValueError
    when its raw bytes hold no exit record."""
    time_ns, cpu, cgroup, raw, tags = item
    single = taskstats.single_exit(raw)
    if single is not None:
        pid, start = single
        version = _U16.unpack_from(raw, start)[0]
        key = (version, len(raw) - start)
        plan = _RAW_PLANS[key] if key in _RAW_PLANS else _raw_plan(*key)
        if plan is not None:
            values = plan.struct.unpack_from(raw, start)
            row = [time_ns, _NAN if cpu is None else cpu, pid,
                   _NAN if plan.tgid < 0 else values[plan.tgid],
                   _NAN if plan.flag < 0 else 1 if values[plan.flag] & AGROUP else 0,
                   _NAN if cgroup is None else cgroup, raw, *_tag_values(tags), *values]
            if plan.comm >= 0:
                comm = values[plan.comm].partition(b"\0")[0].decode("utf-8", "replace")
                row[len(CONTEXT) + 1 + len(TAG_COLUMNS) + plan.comm] = comm
            return plan.sql, row
    return _decoded_row(item, decode_raw(raw))


def _fit(value: Any) -> Any:
    """A u64 past int64 as its two's complement (read back by ``_exit_dict``); NULL
    for other integers SQLite cannot hold (``raw`` keeps them); text that is not
    UTF-8 (a path's undecodable bytes) with "?" in their place."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if not isinstance(value, int) or -_I64 <= value < _I64:
        return value
    return value - _U64 if value < _U64 else None


# ---------------------------------------------------------------- opening


def is_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk is full (SQLITE_FULL, ENOSPC, EDQUOT)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, sqlite3.Error) and _is_full(err)


def _is_full(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:  # Python 3.10
        return "full" in str(err)
    return bool(code & 0xFF == _SQLITE_FULL)


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    """The writer connection: checked, in WAL mode, migrated, with every field column.
    A new file is made 0600 whatever the umask (SQLite gives -wal and -shm the
    journal's mode): it holds every user's tasks."""
    if path != ":memory:":
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
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


def check_reason(reason: str, n: int) -> str:
    """``reason`` if it names a loss counter (lowercase identifier) and ``n`` >= 0."""
    if not reason.isidentifier() or not reason.islower() or n < 0:
        raise ValueError(f"bad loss {reason!r} x {n}: want a lowercase name and n >= 0")
    return reason


def check_settings(*, synchronous: str, batch_size: int, max_delay_s: float,
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


class Journal(JournalQueries):
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
                 statvfs: Callable[[str], _FsStats] = os.statvfs,
                 writer_thread: bool = True) -> None:
        check_settings(synchronous=synchronous, batch_size=batch_size,
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
        self._thread: threading.Thread | None = None
        if writer_thread:
            self._thread = threading.Thread(target=self._guarded, args=(self._run,),
                                            name="taskstatsd-journal", daemon=True)
            self._thread.start()

    def _init_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._incoming: list[Item] = []  # guarded by _cond, like what follows
        self._oldest = 0.0  # clock reading when _incoming became non-empty
        self._inflight = 0  # taken by the writer, not yet committed or dropped
        self._commands: list[_Command] = []
        self._taken: list[_Command] = []  # the commands of the writer's current cycle
        self._stopping = False
        self._clean = True
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
        return self.submit_many([(entry.time_ns, entry.record.cpu, entry.cgroup, entry.raw,
                                  entry.tags)]) == 1

    def submit_many(self, items: Sequence[Item]) -> int:
        """Queue ``items`` (time_ns, cpu, cgroup, raw message, tags) in order, as
        :meth:`submit`; returns how many were accepted (the rest are counted)."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("submit() after the journal stopped") from self._failure
            if self._suspended:
                self._counts["dropped_disk_low"] += len(items)
                return 0
            room = max(0, self._queue_size - len(self._incoming) - self._inflight)
            if room < len(items):
                self._counts["dropped_queue_full"] += len(items) - room
                items = items[:room]
            if not items:
                return 0
            before = len(self._incoming)
            self._incoming += items
            if before == 0:
                self._oldest = self._clock()
                self._cond.notify()
            elif before < self._batch_size <= len(self._incoming):
                self._cond.notify()
        return len(items)

    def push(self) -> None:
        """Nothing to do: the writer thread takes submissions as they come (this is
        for parity with :class:`~pytaskstats.daemon.journal_process.JournalProcess`)."""

    def note_lost(self, reason: str, n: int = 1) -> None:
        """Count ``n`` exits lost before the journal (kernel drops, truncated,
        malformed) as ``lost_<reason>``; persisted with the next commit."""
        self.note(f"lost_{check_reason(reason, n)}", n)

    def note(self, counter: str, n: int) -> None:
        """Add ``n`` to ``counter`` (``lost_*`` or ``dropped_*``: what a writer in
        another process was told); persisted with the next commit."""
        if not counter.startswith(("lost_", "dropped_")):
            raise ValueError(f"not a loss counter: {counter!r}")
        check_reason(counter, n)
        with self._cond:
            self._counts[counter] = self._counts.get(counter, 0) + n

    def record_suspension(self, since_ns: int) -> None:
        """Record that journaling was suspended from ``since_ns`` (wall ns) until
        now, before this journal could be created (a new journal on a full disk):
        one more suspension, and its "disk_low" gap.  Raises sqlite3.Error."""
        def body(conn: sqlite3.Connection) -> dict[str, int]:
            _add_gap(conn, (since_ns, max(since_ns, self._wall_ns()), "disk_low"))
            return {"suspensions": 1}

        self._call(lambda conn: self._txn(body))

    def counters(self) -> dict[str, int]:
        """All counters (monotone across restarts): journaled, dropped_*, lost_*,
        suspensions, retired."""
        with self._cond:
            return dict(self._counts)

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

    def stop(self, timeout: float | None = None, *, clean: bool = True) -> None:
        """Flush, record a clean stop (``meta.stopped_ns``) and join the writer;
        idempotent.  ``clean=False`` (the daemon died; its writer saves what it
        has) records no stop, so the next start notes a "daemon_down" gap."""
        with self._cond:
            stopped, self._stopping = self._stopping, True
            self._clean &= clean
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        elif not stopped:
            self._guarded(self._run)

    # ------------------------------------------------------------ without a writer thread

    def work(self) -> None:
        """Commit what is due, run the checks if due, answer waiting calls; for a
        journal opened with ``writer_thread=False``, whose owner calls this when
        :meth:`idle_for` says (taskstatsd's writer process does)."""
        self._guarded(lambda: self._cycle(wait=False))

    def idle_for(self) -> float:
        """Seconds until :meth:`work` has something due (0: now)."""
        with self._cond:
            return self._idle_for()

    @property
    def failure(self) -> BaseException | None:
        """The bug that stopped the writer, if one did."""
        return self._failure

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
        if self._thread is None:
            self.work()
        result: _T = command.future.result(timeout)
        return result

    def _select(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        if self._memory:
            return self._call(lambda conn: fetch(conn, sql, params))
        return read(self._path, sql, params, self.budget)

    # ------------------------------------------------------------ writer thread

    def _guarded(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as err:
            self._fail(err)  # logged with its traceback; callers get RuntimeError
            if not isinstance(err, Exception):
                raise

    def _run(self) -> None:
        while self._cycle(wait=self._thread is not None):
            pass
        self._shutdown()

    def _cycle(self, wait: bool = True) -> bool:
        """One round: wait for work, commit what is due, run the checks, answer
        commands; False once stopping."""
        with self._cond:
            if wait:
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
        idle = self._idle_for()
        if idle > 0:
            self._cond.wait(min(max(idle, 0.001), self._interval))

    def _idle_for(self) -> float:
        now = self._clock()
        if self._commands or self._stopping or self._due(now):
            return 0.0
        deadline = self._last_check + self._interval
        if self._incoming:
            deadline = min(deadline, self._oldest + self._max_delay)
        return max(deadline - now, 0.0)

    def _due(self, now: float) -> bool:
        return commit_due(len(self._incoming), self._oldest, now, self._batch_size,
                          self._max_delay)

    def _take(self, force: bool) -> list[Item]:
        if not (force or self._due(self._clock())):
            return []
        batch, self._incoming = self._incoming, []
        self._inflight += len(batch)
        return batch

    def _write(self, batch: list[Item]) -> None:
        size = max(self._batch_size, GROUP_COMMIT_ROWS)
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            self._commit(chunk)
            with self._cond:
                self._inflight -= len(chunk)

    def _commit(self, chunk: list[Item]) -> None:
        if self._suspended:
            self._count("dropped_disk_low", len(chunk))
            return
        rows = self._rows(chunk)
        if not rows:
            return
        try:
            try:
                self._txn(lambda conn: _insert(conn, rows))
            except (OverflowError, UnicodeEncodeError):  # rare, so the slow path
                fitted: list[Row] = [(sql, tuple(map(_fit, row))) for sql, row in rows]
                self._txn(lambda conn: _insert(conn, fitted))
        except sqlite3.Error as err:
            self._write_failed(err, len(rows))

    def _rows(self, chunk: list[Item]) -> list[Row]:
        """The rows of ``chunk``; an item whose bytes hold no exit record (never one
        from taskstatsd, which decoded them) is counted as dropped_write_error."""
        try:
            return [_row(item) for item in chunk]
        except (ProtocolError, ValueError):
            pass
        rows = []
        for item in chunk:
            try:
                rows.append(_row(item))
            except (ProtocolError, ValueError) as err:
                self._count("dropped_write_error", 1)
                self._warn(f"journal dropped a record whose bytes do not decode: {err}")
        return rows

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
            if self._clean:
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


def _insert(conn: sqlite3.Connection, rows: list[Row]) -> dict[str, int]:
    """Insert ``rows`` in order: one executemany per run of rows sharing a statement."""
    start = 0
    while start < len(rows):
        sql, end = rows[start][0], start + 1
        while end < len(rows) and rows[end][0] is sql:
            end += 1
        conn.executemany(sql, [row for _, row in rows[start:end]])
        start = end
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
