"""The exit journal's SQLite file: DDL, migrations, columns, opening and its errors.

Columns come from the field table (:mod:`pytaskstats.fields`); a field added to the
table becomes a column on open (old rows: NULL).  Units: ``time_ns`` and gap bounds
are CLOCK_REALTIME ns; kernel fields keep the kernel's units (docs/fields.md);
timespec fields are stored as ns since the epoch.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable

from ..errors import TaskstatsError
from ..extproto import SAMPLE_DELTAS
from ..fields import FIELDS, Field
from ..netlink import HEADER
from .journal_queries import BUSY_TIMEOUT_MS, CONTEXT, EXIT_TAGS, TAG_COLUMNS
from .journal_raw import REBUILD, diff, rebuild

__all__ = [
    "EXITS_DDL",
    "INSERT_SAMPLE_SQL",
    "INSERT_SQL",
    "MIGRATIONS",
    "SAMPLE_COLUMNS",
    "UID_INDEX",
    "JournalError",
    "apply",
    "check_reason",
    "check_settings",
    "connect",
    "is_full",
    "is_sqlite_full",
]

CHECKPOINT_BUSY_MS = 100  # the periodic TRUNCATE checkpoint gives up on busy readers quickly
JOURNAL_SIZE_LIMIT = 64 << 20  # bytes of WAL kept after a checkpoint
PAGE_SIZE = 16384  # bytes, new journals only: 7..13 rows of 1.2..2.2 KB per page
CACHE_KIB = 2048  # writer page cache (16 MiB measured no faster, and cost 15 MB RSS)
_SQLITE_FULL = 13  # primary result code (sqlite3.SQLITE_FULL is 3.11+)

PLAIN = tuple(f for f in FIELDS if f.ctype != "timespec")
STAMPED = tuple(f for f in FIELDS if f.ctype == "timespec")
BY_VERSION = tuple(sorted(PLAIN, key=lambda f: (f.version, f.position)))  # insert order


Statement = str | Callable[[sqlite3.Connection], None]  # SQL, or a step in Python
_FILL_CHUNK = 1000  # rows per read while schema 6 fills the rebuild columns


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
UID_INDEX = "CREATE INDEX exits_uid ON exits (ac_uid)"  # since schema 6
# samples of live processes (daemon/sampler.py): one row per process and interval
# with deltas (NULL: unmeasured); ``pid`` is the tgid, so the exits' filters apply;
# ``tail`` marks a thread's last delta, taken from its exit record (whose row is
# then ``sampled``: its totals are in the samples already)
SAMPLE_COLUMNS = ("time_ns", "interval_ns", "pid", "tgid", "ac_comm", "ac_uid", "ac_gid",
                  "cgroup", "btime", "threads", "tail", *TAG_COLUMNS, *SAMPLE_DELTAS,
                  "hiwater_rss")
SCHEMA_V4 = (
    "CREATE TABLE samples (id INTEGER PRIMARY KEY, "
    + ", ".join(f"{c} {'TEXT' if c in ('ac_comm', 'cgroup', 'pidns', 'ns_ids') else 'INTEGER'}"
                for c in SAMPLE_COLUMNS) + ")",
    "CREATE INDEX samples_time_ns ON samples (time_ns)",
    "CREATE INDEX samples_uid_time ON samples (ac_uid, time_ns)",
    "ALTER TABLE exits ADD COLUMN sampled INTEGER",
)
# pidns named a namespace by its inode until schema 5, and the kernel hands an inode
# out again once its namespace is gone: those rows cannot be told from a later
# namespace's, so they become admin-only, like rows from before schema 2, exits and
# samples alike (a row of the initial namespace, "", stays: that namespace is never
# reused); one pass over the journal on open, like quick_check (measured: 3 s for
# 318 MB, 200k rows, under load)
SCHEMA_V5 = tuple(f"UPDATE {table} SET owner_sees = NULL, pidns = NULL, ns_ids = NULL "
                  "WHERE pidns <> ''" for table in ("exits", "samples"))
def _fill_rebuild(conn: sqlite3.Connection) -> None:
    """Schema 6: each row's family, seq and, where its columns do not rebuild its
    stored message, the difference (every message stays recoverable exactly)."""
    _add_field_columns(conn)  # the rebuild reads every field (an older table's: NULL)
    last = -1
    while True:
        cursor = conn.execute("SELECT * FROM exits WHERE id > ? ORDER BY id LIMIT ?",
                              (last, _FILL_CHUNK))
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        if not rows:
            return
        updates = []
        for row in rows:
            raw = bytes(row["raw"])
            family, seq = (HEADER.unpack_from(raw)[1::2] if len(raw) >= HEADER.size
                           else (None, None))
            rebuilt = b"" if family is None else rebuild(family, seq, row["pid"], row)
            updates.append((family, seq, diff(raw, rebuilt), row["id"]))
        conn.executemany("UPDATE exits SET nl_family = ?, nl_seq = ?, extra = ? WHERE id = ?",
                         updates)
        last = rows[-1]["id"]


# the message bytes are no longer stored (they were 3/4 of the file): the columns
# rebuild them, with the family and seq of the header and, when the message is not
# what they rebuild, its difference in ``extra`` (daemon/journal_raw.py).  One pass
# over the journal, then DROP COLUMN rewrites the table (SQLite 3.35+); the pages
# freed are reused by new rows (VACUUM gives them back to the file system).
SCHEMA_V6: tuple[Statement, ...] = (
    "ALTER TABLE exits ADD COLUMN nl_family INTEGER",
    "ALTER TABLE exits ADD COLUMN nl_seq INTEGER",
    "ALTER TABLE exits ADD COLUMN extra BLOB",
    _fill_rebuild,
    "ALTER TABLE exits DROP COLUMN raw",
    # the uid index without time_ns: 20.5 -> ~10.5 bytes per exit, which brings a
    # replayed exit under 200 bytes; unbounded user queries keep it (9.6 -> 9.8 ms,
    # 1M rows), bounded ones take exits_time_ns (top comms over a day 6.5 -> 14 ms)
    # (benchmarks/journal_size.py); a pid index would cost 11 more (one pid's exits
    # 41 -> 0.2 ms): left out
    "DROP INDEX exits_uid_time",
    UID_INDEX,
)
# MIGRATIONS[n - 1] takes PRAGMA user_version n - 1 to n.  Field columns are not
# versioned: a field added to the table becomes a column on open (old rows: NULL).
MIGRATIONS: tuple[tuple[Statement, ...], ...] = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4,
                                                 SCHEMA_V5, SCHEMA_V6)

_INSERT_COLUMNS = (*CONTEXT, *REBUILD, *EXIT_TAGS, *(f.name for f in BY_VERSION),
                   *(f.name for f in STAMPED))
INSERT_SQL = (f"INSERT INTO exits ({', '.join(_INSERT_COLUMNS)}) "
              f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})")
INSERT_SAMPLE_SQL = (f"INSERT INTO samples ({', '.join(SAMPLE_COLUMNS)}) "
                     f"VALUES ({', '.join('?' * len(SAMPLE_COLUMNS))})")
PUT_COUNTER = "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)"
PUT_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
ADD_GAP = "INSERT INTO gaps (start_ns, end_ns, reason) VALUES (?, ?, ?)"
DELETE_OLDER = ("DELETE FROM exits WHERE id IN "
                "(SELECT id FROM exits WHERE time_ns < ? LIMIT ?)")
DELETE_OLDEST = "DELETE FROM exits WHERE id IN (SELECT id FROM exits ORDER BY id LIMIT ?)"
DELETE_OLDER_SAMPLES = DELETE_OLDER.replace("exits", "samples")
DELETE_OLDEST_SAMPLES = DELETE_OLDEST.replace("exits", "samples")


class JournalError(TaskstatsError):
    """The journal file cannot be used (corrupt, not SQLite, or from a newer taskstatsd)."""


def is_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk is full (SQLITE_FULL, ENOSPC, EDQUOT)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, sqlite3.Error) and is_sqlite_full(err)


def is_sqlite_full(err: sqlite3.Error) -> bool:
    """Whether SQLite's ``err`` is SQLITE_FULL."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:  # Python 3.10
        return "full" in str(err)
    return bool(code & 0xFF == _SQLITE_FULL)


def check_reason(reason: str, n: int) -> str:
    """``reason`` if it names a loss counter (lowercase identifier) and ``n`` >= 0."""
    if not reason.isidentifier() or not reason.islower() or n < 0:
        raise ValueError(f"bad loss {reason!r} x {n}: want a lowercase name and n >= 0")
    return reason


def check_settings(*, synchronous: str = "NORMAL", batch_size: int = 1,
                   max_delay_s: float = 1.0, queue_size: int = 1,
                   retention_s: float | None = None, max_bytes: int | None = None,
                   low_free_pct: float = 2.0, resume_free_pct: float = 4.0,
                   check_interval_s: float = 5.0) -> None:
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


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """The writer connection: checked, in WAL mode, migrated, with every field column.
    A new file is made 0600 whatever the umask (SQLite gives -wal and -shm the
    journal's mode): it holds every user's tasks."""
    if path != ":memory:":
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
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
                apply(conn, statement)
            conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def apply(conn: sqlite3.Connection, statement: Statement) -> None:
    """Run one migration statement (SQL, or a step in Python) on ``conn``."""
    if isinstance(statement, str):
        conn.execute(statement)
    else:
        statement(conn)


def _add_field_columns(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(exits)")}
    for field in FIELDS:
        if field.name not in have:
            conn.execute(f"ALTER TABLE exits ADD COLUMN {_column(field)}")

