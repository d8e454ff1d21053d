"""The exit journal on disk: bytes per exit, ingest rate, history query times, and
what each index costs and buys.

Run as root: ``python benchmarks/journal_size.py`` (``--quick``: 50,000 exits and
200,000 history rows).

1. ``--exits`` exits replayed end to end as taskstatsd ingests them (a corpus of
   exit messages captured from the kernel during a fork storm, as
   benchmarks/ingest_replay.py; per record ``taskstats.decode``, a
   ``JournalEntry``, ``submit`` to taskstatsd's writer process; then ``flush()``),
   into a fresh journal: records/s, then bytes per exit of the file after the
   writer's last checkpoint, each table and index from SQLite's dbstat.  Baseline
   of the same run: the message bytes the kernel sent per exit (what the journal
   stored beside the columns before schema 6).  Every message is read back and
   compared with what was sent.
2. A journal of ``--rows`` exits (copies of the recorded ``make -j2`` tree, 20
   users, over ``--days``; benchmarks/history_cost.py's build): bytes per exit and
   the times of the history queries (median of ``--reps`` after one unmeasured),
   with the journal's indexes and with each variant of them (copies of the file,
   indexes dropped or added), each index's bytes per exit from dbstat.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from _bench import cpu_seconds, header, require_root, run_main, table, writer_pid
from ingest_replay import Corpus, capture_corpus
from report_size import templates

from pytaskstats import ExitRecord
from pytaskstats import taskstats as ts
from pytaskstats.daemon.journal_process import JournalProcess
from pytaskstats.daemon.journal_queries import JournalQueries, Scope, read
from pytaskstats.daemon.journal_rows import JournalEntry, Tags
from pytaskstats.kernel import possible_cpus

TARGET_BYTES = 200  # per exit, indexes included
TARGET_RATE = 100_000  # records/s end to end
CHUNK = 100  # records per simulated drain, as ingest_replay
DAY_NS = 86400 * 10**9
# index variants of section 2: (name, indexes kept of INDEXES)
INDEXES = {"exits_time_ns": "CREATE INDEX exits_time_ns ON exits (time_ns)",
           "exits_uid_time": "CREATE INDEX exits_uid_time ON exits (ac_uid, time_ns)",
           "exits_uid": "CREATE INDEX exits_uid ON exits (ac_uid)",
           "exits_pid": "CREATE INDEX exits_pid ON exits (pid)"}
USERS, UID0, NOBODY_UID = 20, 1000, 65534  # as history_cost.py (nobody the last user)
PID_MAX = 4_194_304  # the kernel's pid_max on 64-bit: pids wrap past it
PID_AT = 28  # the AGGR_PID nest's PID value in an exit message


def reader(path: Path) -> JournalQueries:
    """Queries on a read connection of their own, as taskstatsd runs them."""
    return JournalQueries(functools.partial(read, str(path)), dict)


def usage(path: Path, exits: int) -> list[tuple[str, float]]:
    """Bytes per exit of each table and index with any (dbstat), the file's first."""
    with sqlite3.connect(path) as conn:
        parts = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name "
                             "ORDER BY 2 DESC").fetchall()
    return [("file", os.path.getsize(path) / exits),
            *((name, size / exits) for name, size in parts if size / exits >= 0.5)]


class Ingest(NamedTuple):
    rate: float  # records/s, wall clock
    feeder_us: float  # CPU us per record of this process (decode, entry, submit)
    writer_us: float  # CPU us per record of the writer process (rows, SQLite)
    path: Path


def replay(corpus: Corpus, exits: int, directory: str) -> Ingest:
    """``exits`` replayed end to end into a journal in ``directory``."""
    path = Path(directory) / "journal.sqlite3"
    family = corpus.family
    chunks = [corpus.items[i:i + CHUNK] for i in range(0, len(corpus.items), CHUNK)]
    sent = 0
    with JournalProcess(path, queue_size=exits + 1) as journal:
        writer = writer_pid(os.getpid())
        w0, c0 = cpu_seconds(writer) if writer else math.nan, time.process_time()
        t0 = time.perf_counter()
        while sent < exits:
            for chunk in chunks:
                now = time.time_ns()
                for raw, cpu, cgroup in chunk[:exits - sent]:
                    for event in ts.decode(raw, family, len(raw), source="kernel", cpu=cpu):
                        if isinstance(event, ExitRecord):
                            journal.submit(JournalEntry(event, now, cgroup, raw))
                sent += min(len(chunk), exits - sent)
                journal.push()
                if sent >= exits:
                    break
        journal.flush(timeout=300)
        elapsed = time.perf_counter() - t0
        fed = time.process_time() - c0
        wrote = cpu_seconds(writer) - w0 if writer else math.nan
        journaled = journal.counters()["journaled"]
    if journaled != exits:
        raise SystemExit(f"journaled {journaled} of {exits} exits")
    return Ingest(exits / elapsed, fed / exits * 1e6, wrote / exits * 1e6, path)


def compare(path: Path, corpus: Corpus, exits: int) -> int:
    """How many journaled messages differ from what was sent (0 expected)."""
    rows = reader(path).query(kind="exit", raw=True)
    sent = [corpus.items[i % len(corpus.items)][0] for i in range(exits)]
    differ = sum(bool(row["raw"] != raw) for row, raw in zip(rows, sent, strict=False))
    return differ + abs(len(rows) - exits)


def ingest_section(corpus: Corpus, args: argparse.Namespace, tmp: str) -> None:
    sizes = sorted({len(raw) for raw, _, _ in corpus.items})
    message = statistics.fmean(len(raw) for raw, _, _ in corpus.items)
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        run = replay(corpus, args.exits, d)
        rate = run.rate
        parts = usage(run.path, args.exits)
        wrong = compare(run.path, corpus, args.exits)
    per_exit = parts[0][1]
    print(f"== 1. {args.exits:,} exits replayed end to end (decode + JournalEntry + submit "
          "to the writer process, flush) ==")
    print(f"corpus: {len(corpus.items):,} messages, {corpus.live:,} captured live, sizes "
          f"{', '.join(map(str, sizes))} bytes, struct v{corpus.records[0].task.version}")
    print(table(["", "value", "baseline (same run)", "ratio", "target"], [
        ["bytes per exit on disk", f"{per_exit:.1f}",
         f"{message:.1f} (the message alone)", f"{per_exit / message:.2f}x",
         f"<= {TARGET_BYTES}: {'met' if per_exit <= TARGET_BYTES else 'MISSED'}"],
        ["records/s end to end", f"{rate:,.0f}", f"{TARGET_RATE:,} (target)",
         f"{rate / TARGET_RATE:.2f}x",
         f">= {TARGET_RATE:,}: {'met' if rate >= TARGET_RATE else 'MISSED'}"],
    ]))
    slower = max(run.feeder_us, run.writer_us)
    print(f"CPU per record: feeder (this process) {run.feeder_us:.2f} us, writer process "
          f"{run.writer_us:.2f} us; on two idle cores the slower side allows "
          f"{1e6 / slower:,.0f} records/s (load average at the end "
          f"{os.getloadavg()[0]:.1f})")
    print(table(["part", "bytes/exit"], [[n, f"{v:.1f}"] for n, v in parts]))
    print(f"messages read back (query raw=True) that differ from those sent: {wrong}")
    print()


def build(path: Path, rows: int, days: float) -> int:
    """``rows`` exits of the recorded ``make -j2`` tree in a journal at ``path`` (as
    history_cost.build, 20 users over ``days``, but each exit its own pid, as pids
    wrap: one pid's history is a few rows); the newest time_ns."""
    family, base = templates()
    raws: dict[tuple[int, int], bytes] = {}
    until = time.time_ns()
    step = int(days * 86400e9) // rows
    with JournalProcess(path, batch_size=10_000, queue_size=rows + 1) as journal:
        for i in range(rows):
            k = i % len(base)
            uid = UID0 + (i // len(base)) % USERS
            uid = NOBODY_UID if uid == UID0 + USERS - 1 else uid
            rec = dataclasses.replace(base[k], task=base[k].task._replace(ac_uid=uid, ac_gid=uid))
            raw = raws.get((k, uid)) or raws.setdefault((k, uid), ts.encode_exit(family, rec))
            pid = 300 + i % (PID_MAX - 300)
            raw = raw[:PID_AT] + pid.to_bytes(4, "little") + raw[PID_AT + 4:]
            journal.submit(JournalEntry(rec, until - (rows - i) * step,
                                        f"/user.slice/user-{uid}.slice", raw,
                                        Tags(True, "", None)))
        journal.flush()
    return until


def queries(now: int, pid: int) -> list[tuple[str, Callable[[JournalQueries], int]]]:
    day = now - DAY_NS
    user = Scope(UID0 + 3, UID0 + 3)

    def top(scope: Scope | None) -> Callable[[JournalQueries], int]:
        return lambda j: len(j.query(kind="exit", since_ns=day, group_by="comm",
                                     sort="-blkio_delay_total", limit=10, scope=scope))

    return [
        ("root: top 10 comms by IO wait, last day", top(None)),
        ("user: top 10 comms by IO wait, last day", top(user)),
        ("root: one pid's exits", lambda j: len(j.query(kind="exit", pid=pid))),
        ("user: one pid's exits", lambda j: len(j.query(kind="exit", pid=pid, scope=user))),
        ("root: --since 1h", lambda j: len(j.query(kind="exit", since_ns=now - DAY_NS // 24))),
        ("user: --comm nomatch --totals",
         lambda j: len([j.totals(kind="exit", comm="nomatch", scope=user)])),
        ("root: --limit 100 (newest)", lambda j: len(j.query(kind="exit", sort="-time_ns",
                                                            limit=100))),
    ]


def timed(fn: Callable[[], int], reps: int) -> tuple[float, int]:
    out, times = fn(), []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def variant(base: Path, directory: str, keep: tuple[str, ...]) -> Path:
    """A copy of ``base`` with exactly the indexes ``keep`` on exits."""
    path = Path(directory) / f"journal-{'-'.join(keep) or 'none'}.sqlite3"
    shutil.copy(base, path)
    with sqlite3.connect(path) as conn:
        have = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'exits'")}
        for name in have - set(keep):
            conn.execute(f"DROP INDEX {name}")
        for name in set(keep) - have:
            conn.execute(INDEXES[name])
    return path


def history_section(args: argparse.Namespace, tmp: str) -> None:
    base = Path(tmp) / "history.sqlite3"
    t0 = time.perf_counter()
    now = build(base, args.rows, args.days)
    built = time.perf_counter() - t0
    with sqlite3.connect(base) as conn:
        pid = conn.execute("SELECT pid FROM exits WHERE ac_uid = ? ORDER BY id DESC LIMIT 1",
                           (UID0 + 3,)).fetchone()[0]
        current = tuple(sorted(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'exits'")))
    variants = [current, *(v for v in (("exits_time_ns", "exits_uid_time"),
                                        ("exits_time_ns", "exits_uid"),
                                        ("exits_time_ns", "exits_uid", "exits_pid"),
                                        ("exits_time_ns", "exits_pid"),
                                        ("exits_pid", "exits_uid_time"),
                                        ("exits_time_ns", "exits_pid", "exits_uid_time"), ())
                           if tuple(sorted(v)) != current)]
    print(f"== 2. history over {args.rows:,} exits ({args.days:g} days, 20 users; built by "
          f"the writer process in {built:.1f} s, {args.rows / built:,.0f} rows/s) ==")
    print(f"times: median of {args.reps} after one unmeasured (page cache warm); "
          "each query on a read connection of its own, as taskstatsd")
    names = [n for n, _ in queries(now, pid)]
    rows: list[list[str]] = [[n] for n in ["bytes per exit (file)", *names]]
    heads = ["indexes on exits"]
    for keep in variants:
        with tempfile.TemporaryDirectory(dir=tmp) as d:
            path = variant(base, d, keep)
            parts = dict(usage(path, args.rows))
            index_bytes = sum(parts.get(k, 0.0) for k in keep)
            heads.append(" + ".join(k.removeprefix("exits_") for k in keep) or "none")
            rows[0].append(f"{parts['exits'] + index_bytes:.1f} "
                           f"({index_bytes:.0f} idx)")
            journal = reader(path)
            for i, (_, run) in enumerate(queries(now, pid), start=1):
                seconds, n = timed(functools.partial(run, journal), args.reps)
                rows[i].append(f"{seconds * 1000:.1f} ms ({n})")
    print(table(heads, rows))
    print("bytes per exit here: the exits table and the kept indexes (dbstat; pages "
          "freed by DROP INDEX not counted); (n) rows answered. The first column is "
          "the journal as taskstatsd makes it.")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--exits", type=int, default=None, help="default 200000")
    parser.add_argument("--rows", type=int, default=None, help="default 1000000")
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--corpus", type=int, default=2000)
    parser.add_argument("--dir", default=None, help="where the journals go (default $TMPDIR)")
    parser.add_argument("--skip-ingest", action="store_true", help="section 2 only")
    parser.add_argument("--skip-history", action="store_true", help="section 1 only")
    args = parser.parse_args()
    args.exits = args.exits or (50_000 if args.quick else 200_000)
    args.rows = args.rows or (200_000 if args.quick else 1_000_000)
    require_root()
    t0 = time.perf_counter()
    header("exit journal size and history", args.quick)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="journal-size-") as tmp:
        if not args.skip_ingest:
            corpus = capture_corpus(args.corpus, len(possible_cpus()))
            ingest_section(corpus, args, tmp)
        if not args.skip_history:
            history_section(args, tmp)
    print(f"total {math.ceil(time.perf_counter() - t0)} s")


if __name__ == "__main__":
    run_main(main)
