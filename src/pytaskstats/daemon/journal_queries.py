"""Reading the exit journal: filters, groups, sums and gaps, over SQL.

:class:`JournalQueries` reads through what its owner gives it: a function running
one SELECT (a :class:`~pytaskstats.daemon.journal.Store`'s own connection, or a
read connection of the file in taskstatsd, whose writer is another process) and
one giving the counters.  Units as in the journal: ``time_ns``
and gap bounds are CLOCK_REALTIME ns; kernel fields keep the kernel's units.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from ..extproto import AGGREGATES, CONTEXT, EXIT_SORTS, GROUP_KEYS
from ..fields import DELAY_KINDS, FIELDS
from ..plausible import sql_plausible, time_fields
from .journal_raw import REBUILD, with_message
from .journal_samples import (
    SAMPLE_SELECT,
    SAMPLE_SORTS,
    Running,
    at_window,
    check_kind,
    count_implausible,
    exit_dict,
    merge_groups,
    merge_rows,
    ns_pid,
    sample_aggregate,
    sample_dict,
    sample_implausible,
    sort_rows,
    translated,
    uncovered,
)

__all__ = ["AGGREGATES", "BUCKET_FIELDS", "BUSY_TIMEOUT_MS", "CONTEXT", "EXIT_TAGS",
           "TAG_COLUMNS", "Budget",
           "Gap", "JournalQueries", "QueryTooLong", "Scope", "Select", "fetch", "ns_pid", "read"]

BUSY_TIMEOUT_MS = 5000  # writer and readers wait this long for a lock
PROGRESS_STEPS = 10_000  # SQLite VM instructions between two Budget.tick calls (~0.1 ms)
# per exit, for the access policy (never returned): whether its owner may see it (1, 0,
# NULL unknown), its PID namespace chain ("" initial, NULL unknown) and its pids
# there ("pids/tgids/ppids" at levels 1..K), see daemon/namespaces.py NsTracker
TAG_COLUMNS = ("owner_sees", "pidns", "ns_ids")
# an exit's tags and whether its thread's totals are in the samples already (1: its
# row is left out of sums over samples and exits, which count every task once)
EXIT_TAGS = (*TAG_COLUMNS, "sampled")


class Gap(NamedTuple):
    """An interval (CLOCK_REALTIME ns) the journal did not cover, and why:
    "stopped" (clean stop), "daemon_down" (crash) or "disk_low" (suspended)."""

    start_ns: int
    end_ns: int
    reason: str


class Budget(NamedTuple):
    """The bounds of one reader's queries: each SELECT returns at most ``max_rows + 1``
    rows (one more than asked tells the caller its answer was cut), and is
    interrupted (:class:`QueryTooLong`) as soon as ``tick()``, called every
    :data:`PROGRESS_STEPS` SQLite instructions, returns True (its deadline passed, or
    the daemon stops); ``tick`` may also do other work meanwhile (drain the kernel):
    what it raises ends the query and is raised by it."""

    max_rows: int
    tick: Callable[[], bool]


class QueryTooLong(Exception):
    """A SELECT interrupted by its :class:`Budget`."""


class Scope(NamedTuple):
    """The rows a restricted client may read (see daemon/policy.py): with ``uid`` and
    ``gid``, only that user's exits its owner may see; with ``pidns`` (a namespace
    chain), only exits of that PID namespace and its descendants whose pids are
    known, with ``pid``/``tgid`` filters and the pids returned at ``level``."""

    uid: int | None = None
    gid: int | None = None
    pidns: str | None = None
    level: int = 0


class _Filters(NamedTuple):
    since_ns: int | None
    until_ns: int | None
    comm: str | None
    uid: int | None
    pid: int | None
    tgid: int | None
    cgroup: str | None
    scope: Scope | None = None
    scans_only: bool = False  # samples of scans, not the tails that exits completed


_DELAY_TOTALS = tuple(f.name for f in FIELDS if f.name.endswith("_delay_total"))
# what JournalQueries.aggregate sums by default: CPU time and every delay total
BUCKET_FIELDS = ("ac_utime", "ac_stime", *_DELAY_TOTALS)
# the delay kind of each time field the plausibility rule (pytaskstats.plausible) checks
_KIND_OF = {name: kind for kind in DELAY_KINDS for name in time_fields(kind)}


def _checked_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """``fields`` without repeats, each a name of :data:`AGGREGATES` (else ValueError)."""
    if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
        raise ValueError("fields must be a list of field names")
    unknown = [f for f in fields if f not in AGGREGATES]
    if unknown:
        raise ValueError(f"cannot aggregate {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(AGGREGATES)}")
    return tuple(dict.fromkeys(fields))


def _sum_of(name: str) -> str:
    """The aggregate of field ``name``, delays longer than their task lived left out."""
    kind = _KIND_OF.get(name)
    if kind is None:
        return AGGREGATES[name]
    return AGGREGATES[name].replace(name, f"CASE WHEN {sql_plausible(kind)} THEN {name} END", 1)


def _implausible(fields: Sequence[str]) -> str:
    """The select item counting the exits with an implausible delay among ``fields``."""
    return count_implausible(fields, _KIND_OF, sql_plausible)


def _exit_sum(name: str, kinds: tuple[str, ...]) -> str:
    """The exits' aggregate of ``name``: with samples, of the exits not sampled."""
    return uncovered(_sum_of(name)) if "sample" in kinds else _sum_of(name)


def _select_list(kinds: tuple[str, ...]) -> str:
    """``exits`` count, the aggregates (implausible delays left out; with samples,
    over the exits not sampled) and the count of exits with one."""
    return ", ".join(["COUNT(*) AS exits",
                      *(f"{_exit_sum(name, kinds)} AS {name}" for name in AGGREGATES),
                      _implausible(tuple(AGGREGATES))])


def _where(filters: _Filters) -> tuple[str, list[Any]]:
    """WHERE clause and parameters; ``cgroup`` matches the cgroup and its descendants."""
    clauses: list[str] = []
    params: list[Any] = []
    scope = filters.scope or Scope()
    level = scope.level if scope.pidns is not None else 0
    pid_sql, tgid_sql = (f"ns_pid(ns_ids, {level}, {part}) = ?" if level else sql
                         for part, sql in ((0, "pid = ?"), (1, "tgid = ?")))
    for sql, value in (("time_ns >= ?", filters.since_ns), ("time_ns < ?", filters.until_ns),
                       ("ac_comm = ?", filters.comm), ("ac_uid = ?", filters.uid),
                       (pid_sql, filters.pid),
                       (tgid_sql, filters.tgid), ("ac_uid = ?", scope.uid),
                       ("ac_gid = ?", scope.gid)):
        if value is not None:
            clauses.append(sql)
            params.append(value)
    if scope.uid is not None:
        clauses.append("owner_sees = 1")
    if scope.pidns is not None:
        clauses.append(f"(pidns = ? OR (pidns >= ? AND pidns < ?)) "
                       f"AND ns_pid(ns_ids, {level}, 0) IS NOT NULL")
        params += [scope.pidns, scope.pidns + "/", scope.pidns + "0"]
    if filters.scans_only:
        clauses.append("tail = 0")
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
    if group_by not in GROUP_KEYS:
        raise ValueError(f"cannot group by {group_by!r}; choose one of "
                         f"{', '.join(GROUP_KEYS)}")
    return GROUP_KEYS[group_by]


def fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any],
          budget: Budget | None = None) -> list[sqlite3.Row]:
    """Rows of ``sql`` on ``conn`` (with the ns_pid() function the scopes use), within
    ``budget`` if given (see :class:`Budget`)."""
    conn.create_function("ns_pid", 3, ns_pid, deterministic=True)
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    if budget is None:
        return cursor.execute(sql, params).fetchall()
    stopped: list[BaseException | None] = []

    def tick() -> bool:
        try:
            if budget.tick():
                stopped.append(None)
        except BaseException as err:  # SQLite would swallow it: raised after the query
            stopped.append(err)
        return bool(stopped)

    conn.set_progress_handler(tick, PROGRESS_STEPS)
    try:
        return cursor.execute(sql, params).fetchmany(budget.max_rows + 1)
    except sqlite3.OperationalError as err:
        if stopped and stopped[0] is not None:
            raise stopped[0] from None
        if stopped:
            raise QueryTooLong(str(err)) from err
        raise
    finally:
        conn.set_progress_handler(None, 0)
        cursor.close()


def _integral(row: sqlite3.Row) -> dict[str, Any]:
    return {k: int(v) if isinstance(v, float) else v for k, v in dict(row).items()}


def read(path: str, sql: str, params: Sequence[Any],
         budget: Budget | None = None) -> list[sqlite3.Row]:
    """Rows of ``sql`` on a short-lived read-only connection to the journal ``path``,
    within ``budget`` if given (see :class:`Budget`)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        return fetch(conn, sql, params, budget)
    finally:
        conn.close()


Select = Callable[[str, Sequence[Any], Budget | None], list[sqlite3.Row]]


class JournalQueries:
    """History queries and loss totals over ``select`` (the rows of one SELECT with
    its parameters, within the Budget when one is given) and ``counters`` (the
    journal's counters, see :meth:`accounted`)."""

    def __init__(self, select: Select, counters: Callable[[], Mapping[str, int]]) -> None:
        self._run, self._counters = select, counters
        self.budget: Budget | None = None

    @contextlib.contextmanager
    def bounded(self, budget: Budget) -> Iterator[None]:
        """Run the queries of the ``with`` block within ``budget`` (one thread only)."""
        self.budget = budget
        try:
            yield
        finally:
            self.budget = None

    def counters(self) -> dict[str, int]:
        """The journal's counters (journaled, dropped_*, lost_*, suspensions, retired)."""
        return dict(self._counters())

    def _select(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        return self._run(sql, params, self.budget)

    def lost_total(self) -> int:
        """Exits lost before the journal (every ``lost_*`` counter)."""
        return sum(v for k, v in self.counters().items() if k.startswith("lost_"))

    def accounted(self) -> int:
        """journaled + every dropped_* + every lost_*.  Once :meth:`flush` returned it
        equals the exits submitted plus those noted lost, i.e. what the kernel sent;
        before, ``pending`` records are in neither."""
        return sum(v for k, v in self.counters().items()
                   if k == "journaled" or k.startswith(("dropped_", "lost_")))


    def query(self, *, since_ns: int | None = None, until_ns: int | None = None,
              comm: str | None = None, uid: int | None = None, pid: int | None = None,
              tgid: int | None = None, cgroup: str | None = None,
              group_by: Literal["comm", "uid", "cgroup"] | None = None,
              sort: str | None = None, limit: int | None = None,
              raw: bool = False, scope: Scope | None = None, kind: str | None = None,
              at_ns: int | None = None, running: Running | None = None
              ) -> list[dict[str, Any]]:
        """Journaled exits and samples, oldest first, filtered (all filters AND;
        ``since_ns`` <= time_ns < ``until_ns``, or with ``at_ns`` the sample interval
        holding it (:meth:`at_window`); ``cgroup`` includes descendants; ``pid`` and
        ``tgid`` match a sample's tgid).  ``kind``: "exit" or "sample" only.

        Without ``group_by``: one dict per row, ``kind`` "exit" or "sample".  An exit
        has ``time_ns cpu pid tgid ended_process cgroup``, every kernel field of the
        task record (timespecs as ns), ``sampled`` (its totals are in the samples)
        and, if ``raw``, the message bytes; a sample has extproto.SAMPLE_KEYS
        (``running`` from ``running(tgid, btime)``, False without it).  With
        ``group_by``: one dict per group with its key (``ac_comm``, ``ac_uid`` or
        ``cgroup``), ``exits``, ``samples``, the :data:`AGGREGATES` (every task counted
        once: samples plus the exits not sampled; delays longer than their task lived
        left out) and ``implausible`` (rows that had one).  ``sort``: a key of those
        dicts, "-" for descending.  ``scope``: only the rows a restricted client may
        read (:class:`Scope`).
        """
        kinds = check_kind(kind, scan=True)
        if at_ns is not None:
            since_ns, until_ns = self.at_window(at_ns)
        filters = _Filters(since_ns, until_ns, comm, uid, pid, tgid, cgroup, scope,
                           kind == "scan")
        if group_by is not None:
            if raw:
                raise ValueError("raw bytes are per exit; not with group_by")
            return self._aggregated(filters, _group_key(group_by), sort, limit, kinds)
        level = scope.level if scope is not None and scope.pidns is not None else 0
        exits: list[dict[str, Any]] = []
        if "exit" in kinds:
            exits = [exit_dict(row) for row in self._exits(filters, sort, limit, raw)]
            if raw:
                exits = [with_message(row) for row in exits]
            if level:
                exits = [translated(row, level) for row in exits]
        if "sample" not in kinds:
            return exits
        samples = [sample_dict(row, level, running)
                   for row in self._samples(filters, sort, limit, len(kinds) == 1)]
        return samples if "exit" not in kinds else merge_rows(exits, samples, sort, limit)

    def totals(self, *, since_ns: int | None = None, until_ns: int | None = None,
               comm: str | None = None, uid: int | None = None, pid: int | None = None,
               tgid: int | None = None, cgroup: str | None = None,
               scope: Scope | None = None, kind: str | None = None,
               at_ns: int | None = None) -> dict[str, Any]:
        """``exits``, ``samples`` and the :data:`AGGREGATES` over the filtered rows (as
        :meth:`query` groups them; None: no value)."""
        if at_ns is not None:
            since_ns, until_ns = self.at_window(at_ns)
        filters = _Filters(since_ns, until_ns, comm, uid, pid, tgid, cgroup, scope)
        return self._aggregated(filters, None, None, None, check_kind(kind))[0]

    def aggregate(self, *, bucket_s: int | None = None, group_by: str | None = None,
                  fields: Sequence[str] = BUCKET_FIELDS,
                  since_ns: int | None = None, until_ns: int | None = None,
                  comm: str | None = None, uid: int | None = None, pid: int | None = None,
                  tgid: int | None = None, cgroup: str | None = None,
                  scope: Scope | None = None, kind: str | None = None,
                  at_ns: int | None = None) -> list[dict[str, Any]]:
        """Sums over the rows filtered as :meth:`query`, per time bucket of ``bucket_s``
        seconds (aligned to multiples of it since the epoch) and/or per ``group_by`` key;
        one dict per non-empty group, oldest bucket then key first (one dict in all
        without either, even with no rows).

        Each dict: ``bucket_ns`` (the bucket's start, ns since the epoch; with
        ``bucket_s``), the key (``ac_comm``, ``ac_uid`` or ``cgroup``; with ``group_by``),
        ``exits``, ``samples``, ``processes`` (exits that ended a process; None if no
        row knew) and the :data:`AGGREGATES` of ``fields`` (names checked against the
        field table), every task counted once (samples plus exits not sampled).  A
        delay longer than its task lived, which the kernel sometimes reports, is left
        out (:mod:`pytaskstats.plausible`), and ``implausible`` counts the rows that
        had one among ``fields``.
        """
        fields = _checked_fields(fields)
        kinds = check_kind(kind)
        if at_ns is not None:
            since_ns, until_ns = self.at_window(at_ns)
        filters = _Filters(since_ns, until_ns, comm, uid, pid, tgid, cgroup, scope)
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
        tail = where + (f" GROUP BY {group} ORDER BY {group}" if keys else "")
        parts: list[dict[str, Any]] = []
        if "exit" in kinds:
            head = ", ".join([*keys, "COUNT(*) AS exits", "SUM(ended_process) AS processes"])
            aggs = "".join(f", {_exit_sum(f, kinds)} AS {f}" for f in fields)
            parts += self._summed(f"SELECT {head}{aggs}, {_implausible(fields)} FROM exits"
                                  f"{tail}", [*params, *where_params])
        if "sample" in kinds:
            aggs = "".join(f", {sample_aggregate(f)} AS {f}" for f in fields)
            parts += self._summed(f"SELECT {', '.join([*keys, 'COUNT(*) AS samples'])}{aggs}, "
                                  f"{sample_implausible(fields)} FROM samples{tail}",
                                  [*params, *where_params])
        names = [k.split(" AS ")[-1] for k in keys]
        out = merge_groups(parts, names)
        if len(kinds) > 1:
            out.sort(key=lambda row: tuple((row[n] is not None, row[n]) for n in names))
        if not keys:
            out = out[:1]
        for row in out:
            if bucket_s is not None:
                row["bucket_ns"] = row.pop("bucket") * bucket_s * 1_000_000_000
        return out

    def at_window(self, at_ns: int) -> tuple[int, int | None]:
        """(since_ns, until_ns) of the sample interval holding ``at_ns`` (see
        :func:`.journal_samples.at_window`)."""
        return at_window(self._select, at_ns)

    def gaps(self) -> list[Gap]:
        """Intervals not covered by the journal, oldest first."""
        rows = self._select("SELECT start_ns, end_ns, reason FROM gaps ORDER BY start_ns, id",
                            [])
        return [Gap(*row) for row in rows]

    def _exits(self, filters: _Filters, sort: str | None, limit: int | None,
               raw: bool) -> list[sqlite3.Row]:
        where, params = _where(filters)
        ns = filters.scope is not None and filters.scope.pidns is not None
        columns = ", ".join([*CONTEXT, *(f.name for f in FIELDS), "sampled",
                             *(REBUILD if raw else ()), *(["ns_ids"] if ns else [])])
        order = _order(sort, EXIT_SORTS, "id", "id")
        return self._select(f"SELECT {columns} FROM exits{where}{order}"
                            f"{_limit(limit, params)}", params)

    def _samples(self, filters: _Filters, sort: str | None, limit: int | None,
                 only: bool) -> list[sqlite3.Row]:
        """Sample rows; a ``sort`` they lack orders them by id (ValueError if ``only``)."""
        where, params = _where(filters)
        ns = filters.scope is not None and filters.scope.pidns is not None
        columns = ", ".join([*SAMPLE_SELECT, *(["ns_ids"] if ns else [])])
        name = (sort or "").removeprefix("-")
        if sort is not None and (name in SAMPLE_SORTS or only):
            order = _order(sort, SAMPLE_SORTS, "id", "id")
        else:
            order = " ORDER BY id"
        return self._select(f"SELECT {columns} FROM samples{where}{order}"
                            f"{_limit(limit, params)}", params)

    def _summed(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        """The rows of an aggregate ``sql``; SUM falls back to TOTAL (exact below
        2**53) when a sum overflows int64."""
        try:
            rows = self._select(sql, params)
        except sqlite3.OperationalError as err:
            if "overflow" not in str(err):
                raise
            rows = self._select(sql.replace("SUM(", "TOTAL("), params)
        return [_integral(row) for row in rows]

    def _aggregated(self, filters: _Filters, key: str | None, sort: str | None,
                    limit: int | None, kinds: tuple[str, ...] = ("exit",)
                    ) -> list[dict[str, Any]]:
        """Groups by column ``key`` (None: one row over everything) of ``kinds``."""
        where, params = _where(filters)
        group = f" GROUP BY {key}" if key else ""
        head = f"SELECT {key}, " if key else "SELECT "
        allowed = (key, "exits", "samples", *AGGREGATES) if key else ()
        if kinds == ("exit",):
            order = "" if key is None else _order(sort, allowed, key, key)
            tail = f"{where}{group}{order}{_limit(limit, params)}"
            return self._summed(f"{head}{_select_list(kinds)} FROM exits{tail}", params)
        parts: list[dict[str, Any]] = []
        if "exit" in kinds:
            parts += self._summed(f"{head}{_select_list(kinds)} FROM exits{where}{group}",
                                  params)
        aggs = ", ".join(f"{sample_aggregate(n)} AS {n}" for n in AGGREGATES)
        parts += self._summed(f"{head}COUNT(*) AS samples, {aggs}, "
                              f"{sample_implausible(AGGREGATES)} FROM samples{where}{group}",
                              params)
        out = merge_groups(parts, [key] if key else [])
        if key is None:
            return out[:1]
        _order(sort, allowed, key, key)  # checks the name
        return sort_rows(out, sort or key, limit)
