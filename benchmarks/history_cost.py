"""What a history query costs taskstatsd's loop, with and without the uid index.

Builds a journal of ``--rows`` exits with taskstatsd's journal writer process
(10,000 rows per transaction; copies of the recorded ``make -j2`` tree, 20 users, spread over
``--days``), then times the typical queries of a non-admin client (always scoped
to its uid) and of root, first with the journal's indexes, then with ``exits_uid`` dropped (the
schema before it); each query once unmeasured first (a warm page cache).
Prints ms per query (median of ``--reps``) and journal rows per second of query
time.  Checks nothing.  Needs no root.

With ``--attack SECONDS`` (root), then: a taskstatsd on that journal, root's GET
latency (its own pid, back to back) for SECONDS alone and then while 4 clients as
nobody (one of the 20 users) repeat ``{"comm": "nomatch", "totals": true}`` (the
security review's F5), what they were answered, then root's ``{"limit": 2**63-1}``:
its time, rows, RSS and the loss counters.

    python benchmarks/history_cost.py --rows 1000000 --attack 10
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _bench import require_root, run_main, table
from attack import NOBODY, REPO, percentile, rss_mb, world_python, world_readable_package
from report_size import templates

from pytaskstats import Client, taskstats
from pytaskstats.daemon.journal_process import JournalProcess
from pytaskstats.daemon.journal_queries import Budget, JournalQueries, QueryTooLong, Scope, read
from pytaskstats.daemon.journal_rows import JournalEntry, Tags
from pytaskstats.daemon.journal_schema import UID_INDEX

USERS = 20
UID0 = 1000
NOBODY_UID = 65534  # the last of the users
BATCH = 10_000  # rows per commit while building
SCAN = """
import collections, errno, json, sys, time
from pytaskstats import Client, NetlinkError
from pytaskstats import extproto
answers, end = collections.Counter(), time.monotonic() + float(sys.argv[2])
with Client("daemon", socket_path=sys.argv[1]) as c:
    while time.monotonic() < end:
        try:
            c.history(comm="nomatch", totals=True)
            answers["rows"] += 1
        except NetlinkError as err:
            answers[errno.errorcode[err.errno]] += 1
print(json.dumps(answers))
"""


def build(path: Path, rows: int, days: float) -> int:
    """Write ``rows`` exits to a journal at ``path``; its newest time_ns."""
    family, base = templates()
    raws: dict[tuple[int, int], bytes] = {}  # the writer reads the fields from the bytes
    until = time.time_ns()
    step = int(days * 86400e9) // rows
    with JournalProcess(path, batch_size=BATCH, queue_size=rows + 1) as journal:
        for i in range(rows):
            k = i % len(base)
            uid = UID0 + (i // len(base)) % USERS
            uid = NOBODY_UID if uid == UID0 + USERS - 1 else uid
            task = base[k].task._replace(ac_uid=uid, ac_gid=uid)
            rec = dataclasses.replace(base[k], task=task)
            raw = raws.get((k, uid)) or raws.setdefault(
                (k, uid), taskstats.encode_exit(family, rec))
            journal.submit(JournalEntry(rec, until - (rows - i) * step,
                                        f"/user.slice/user-{uid}.slice", raw,
                                        Tags(True, "", None)))
        journal.flush()
    return until


def reader(path: Path) -> JournalQueries:
    """Queries of the journal at ``path`` as taskstatsd runs them: each on a read
    connection of its own (the writer is another process)."""
    return JournalQueries(functools.partial(read, str(path)), dict)


def queries(now: int) -> list[tuple[str, dict[str, Any]]]:
    """(name, JournalQueries.query/totals keywords) of the typical requests."""
    user = Scope(UID0 + 3, UID0 + 3)
    hour = now - 3600 * 10**9
    return [
        ("user: --comm nomatch --totals", {"totals": True, "comm": "nomatch", "scope": user}),
        ("user: --since 1h", {"since_ns": hour, "scope": user}),
        ("user: --limit 100", {"limit": 100, "scope": user}),
        ("user: --group-by comm", {"group_by": "comm", "scope": user}),
        ("root: --comm cc1 --totals", {"totals": True, "comm": "cc1"}),
        ("root: --since 1h", {"since_ns": hour}),
        ("root: --uid 1003 --totals", {"totals": True, "uid": UID0 + 3}),
    ]


def run(journal: JournalQueries, kw: dict[str, Any]) -> int:
    """Rows answered by one request like Daemon.history asks it."""
    kw = dict(kw)
    if kw.pop("totals", False):
        return len([journal.totals(**kw)])
    return len(journal.query(**kw))


def timed(fn: Callable[[], int], reps: int) -> tuple[float, int]:
    """Median seconds of ``fn`` over ``reps`` runs (after one unmeasured: the page
    cache warm), and its result."""
    times, out = [], fn()
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def measure(path: Path, now: int, rows: int, reps: int) -> list[tuple[str, float, int]]:
    journal = reader(path)
    return [(name, *timed(functools.partial(run, journal, kw), reps))
            for name, kw in queries(now)]


def budgeted(path: Path, ms: float) -> str:
    """How long an unbounded root query runs under a Budget of ``ms``."""
    journal = reader(path)
    deadline = time.monotonic() + ms / 1000
    start = time.perf_counter()
    with journal.bounded(Budget(10_000, lambda: time.monotonic() >= deadline)):
        try:
            got = f"{len(journal.query(sort='-ac_utime'))} rows"
        except QueryTooLong:
            got = "QueryTooLong"
    return f"{got} after {(time.perf_counter() - start) * 1000:.0f} ms"


def gets(socket_path: str, seconds: float) -> list[float]:
    """Latencies (ms) of root asking the daemon for its own pid, back to back."""
    out, end = [], time.monotonic() + seconds
    with Client("daemon", socket_path=socket_path) as c:
        while time.monotonic() < end:
            start = time.perf_counter()
            c.pid(os.getpid())
            out.append((time.perf_counter() - start) * 1000)
    return out


def attack(state: Path, seconds: float) -> None:
    """The security review's F5 scenario against a taskstatsd on ``state``."""
    sys.path.insert(0, str(REPO))
    from tests.daemon_util import RunningDaemon  # noqa: PLC0415  (needs the repo on sys.path)

    daemon = RunningDaemon(state)
    base, env = world_readable_package()
    try:
        quiet = gets(daemon.socket, seconds)
        scans = [subprocess.Popen([*NOBODY, world_python(), "-c", SCAN, daemon.socket,
                                   str(seconds)], env=env, cwd="/", stdout=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        loaded = gets(daemon.socket, seconds)
        answers: collections.Counter[str] = collections.Counter()
        for proc in scans:
            out, _ = proc.communicate(timeout=seconds + 60)
            answers.update(json.loads(out or "{}"))
        print(table(["root GET", "n", "p50 ms", "p99 ms", "max ms"], [
            [name, str(len(v)), f"{percentile(v, 50):.2f}", f"{percentile(v, 99):.2f}",
             f"{max(v):.1f}"] for name, v in (("alone", quiet), ("4 nobody scanners", loaded))]))
        print(f"nobody's answers: {dict(answers)}")
        start = time.perf_counter()
        with Client("daemon", socket_path=daemon.socket) as c:
            rows = c.history(limit=2**63 - 1)
            status = c.status()
        counters = {k: v for k, v in status["counters"].items()
                    if k in ("lost_overrun", "history_timeouts", "history_refused")}
        print(f"root {{'limit': 2**63-1}}: {len(rows)} rows in "
              f"{time.perf_counter() - start:.2f} s ({rows.note or 'whole'}); daemon RSS "
              f"{rss_mb(daemon.pid):.0f} MB; {counters}")
    finally:
        daemon.close()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--attack", type=float, default=0, metavar="SECONDS",
                   help="then run the F5 attack on a taskstatsd for SECONDS (root)")
    args = p.parse_args()
    if args.attack:
        require_root()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        state.mkdir(mode=0o700)
        path = state / "journal.sqlite3"
        start = time.perf_counter()
        now = build(path, args.rows, args.days)
        size = path.stat().st_size / 2**20
        print(f"journal: {args.rows} rows, {size:.0f} MiB, built in "
              f"{time.perf_counter() - start:.1f} s")
        with_index = measure(path, now, args.rows, args.reps)
        with sqlite3.connect(path) as conn:
            conn.execute("DROP INDEX exits_uid")
        without = measure(path, now, args.rows, args.reps)
        lines = [[name, f"{a * 1000:.1f}", f"{b * 1000:.1f}", str(n),
                  f"{args.rows / a / 1e6:.1f}M"]
                 for (name, a, n), (_, b, _) in zip(with_index, without, strict=True)]
        print(table(["query", "ms (index)", "ms (no uid index)", "rows out",
                     "journal rows/s"], lines))
        print(f"root --sort -ac_utime under a 200 ms Budget: {budgeted(path, 200)}")
        if args.attack:
            with sqlite3.connect(path) as conn:
                conn.execute(UID_INDEX)  # the index back
            attack(state, args.attack)


if __name__ == "__main__":
    run_main(main)
