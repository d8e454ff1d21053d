"""taskstatsd's ingest replayed in this process: decode + JournalEntry + submit, then
flush(), against a real journal on disk.

Run as root: ``python benchmarks/ingest_replay.py`` (``--help`` for options;
``--quick`` for a shorter run, ``--profile`` for cProfile tables of a replayed
ingest).

A corpus of real exit datagrams is captured from the kernel (a pytaskstats
Listener's ``drain_raw`` during a short fork storm; topped up with ``encode_exit``
of live records only if the capture falls short, and the output says so).  It is
replayed through what taskstatsd's ``Daemon.ingest`` does per record:
``taskstats.decode`` of the bytes, a ``JournalEntry``, ``submit`` into a real
journal on disk (a temp dir; synchronous NORMAL and FULL), then ``flush()``.  The
journal is taskstatsd's ``JournalProcess`` (its writer in a child process); the
same writer loop run in this process (a ``Store`` fed synchronously) is shown
beside it.  Rows marked [info] time the pieces alone, so the bottleneck shows.
Interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

from _bench import (
    build_c,
    finish,
    header,
    interleave,
    kill,
    median,
    require_root,
    run_daemon_main,
    spread,
    table,
    task_ids,
)

from pytaskstats import ExitRecord
from pytaskstats import taskstats as ts
from pytaskstats.daemon import config as config_mod
from pytaskstats.daemon import journal as journal_mod
from pytaskstats.daemon.journal import GROUP_COMMIT_ROWS, Store
from pytaskstats.daemon.journal_process import JournalProcess
from pytaskstats.daemon.journal_rows import Item, JournalEntry, row
from pytaskstats.daemon.journal_schema import connect
from pytaskstats.daemon.journal_writer import Pending
from pytaskstats.kernel import Connection, possible_cpus
from pytaskstats.listener import Listener
from pytaskstats.procfs import cgroup_path

TARGET_REPLAY = 100_000  # records/s, replayed end to end
CHUNK = 100  # records per simulated drain (one time.time_ns() each, as Daemon.ingest)
ROOM_EVERY = 10  # chunks between looks at the journal's queue (its cached health)
SQL_TXN_ROWS = 1000  # rows per transaction in the "SQLite INSERT only" rows
HOSTS = ("process", "in this process")


class InProcess:
    """The writer process's loop run here, synchronously: exits are held as the
    writer holds them (Pending, taskstatsd's default commit rule) and committed by
    a Store when due, at each :meth:`push` (as the writer after each read)."""

    def __init__(self, path: str, synchronous: str, **settings: float | int | None) -> None:
        self.store = Store(path, synchronous=synchronous, **settings)  # type: ignore[arg-type]
        self.held: list[Item] = []
        self.waiting = Pending(batch_size=100, max_delay_s=0.25, queue_size=100_000)

    def submit(self, entry: JournalEntry) -> bool:
        self.held.append(entry.item)
        return True

    def push(self) -> None:
        now = time.monotonic()
        self.store.note("dropped_queue_full", self.waiting.add(self.held, now))
        self.held = []
        if self.waiting.due(now):
            self.store.insert(self.waiting.take(), max(100, GROUP_COMMIT_ROWS))
        self.store.maintain(now)

    def flush(self, timeout: float | None = None) -> None:
        self.push()
        self.store.insert(self.waiting.take(), max(100, GROUP_COMMIT_ROWS))

    def counters(self) -> dict[str, int]:
        return self.store.counters()

    @property
    def pending(self) -> int:
        return len(self.held) + len(self.waiting)

    def stop(self, timeout: float | None = None) -> None:
        self.store.close()


AnyJournal = JournalProcess | InProcess


class Corpus(NamedTuple):
    family: int
    items: list[tuple[bytes, int | None, str | None]]  # raw message, cpu, cgroup path
    records: list[ExitRecord]  # items decoded, for the rows that start after decode
    live: int  # items captured live (the rest built with encode_exit)
    reencoded: int  # live records whose datagram held several messages (as the daemon)


def capture_corpus(target: int, jobs: int, seconds: float = 5.0) -> Corpus:
    """``target`` exit messages as taskstatsd receives them (see the module docstring).

    Each item keeps the CPU of its per-CPU socket and the cgroup path that
    ``cgroup_path`` found when it was drained, as the daemon would store them.
    """
    items: list[tuple[bytes, int | None, str | None]] = []
    reencoded = 0
    storm = str(build_c("fork_storm", static=True))
    proc: subprocess.Popen[str] | None = None
    with Listener(per_cpu=True) as listener:
        family = listener.conns[0].family.id
        listener.drain()  # whatever was queued before
        try:
            proc = subprocess.Popen([storm, str(target + target // 4), str(seconds), str(jobs)],
                                    stdout=subprocess.PIPE, text=True)
            deadline = time.monotonic() + seconds + 3
            while len(items) < target and time.monotonic() < deadline:
                ready = listener.selector.select(0.1)
                for key, _ in ready:
                    for event, raw in listener.drain_raw(key.data):
                        if not isinstance(event, ExitRecord):
                            continue
                        data = raw
                        if data is None:  # several messages in one datagram: as the daemon
                            data = ts.encode_exit(family, event)
                            reencoded += 1
                        items.append((data, event.cpu, cgroup_path(event.tgid or event.pid)))
                if not ready and proc.poll() is not None:
                    break
            finish(proc, seconds + 5)
        finally:
            kill(proc)
    items = items[:target]
    live = len(items)
    if live < target:
        items += built_items(family, target - live)
    records = [decode_one(family, raw, cpu) for raw, cpu, _ in items]
    return Corpus(family, items, records, live, reencoded)


def built_items(family: int, count: int) -> list[tuple[bytes, int | None, str | None]]:
    """The fallback: exit messages encoded from live records of the running tasks."""
    with Connection() as conn:
        stats = list(conn.query_many("pid", task_ids()).items())
    out: list[tuple[bytes, int | None, str | None]] = []
    cpus = possible_cpus()
    while len(out) < count and stats:
        for pid, task in stats[:count - len(out)]:
            record = ExitRecord(task=task, pid=pid, tgid=task.ac_tgid, cpu=cpus[pid % len(cpus)])
            out.append((ts.encode_exit(family, record), record.cpu, None))
    return out


def decode_one(family: int, raw: bytes, cpu: int | None) -> ExitRecord:
    for event in ts.decode(raw, family, len(raw), source="kernel", cpu=cpu):
        if isinstance(event, ExitRecord):
            return event
    raise ValueError("a corpus message holds no exit record")


def open_journal(directory: str, synchronous: str, host: str = "process") -> AnyJournal:
    """A journal as taskstatsd opens it with the default configuration: its writer
    in a child process (``host`` "process", what taskstatsd runs) or its loop run
    in this process ("in this process", :class:`InProcess`)."""
    cfg = config_mod.Config()
    kind = JournalProcess if host == "process" else InProcess
    return kind(
        os.path.join(directory, "journal.sqlite3"), synchronous=synchronous,
        retention_s=cfg.retention_days * 86400 if cfg.retention_days else None,
        max_bytes=int(cfg.max_journal_mb * 1024 * 1024) if cfg.max_journal_mb else None,
        low_free_pct=cfg.low_free_pct, resume_free_pct=cfg.resume_free_pct)


def _name(what: str, synchronous: str, host: str) -> str:
    return f"{what}, writer {host}, synchronous={synchronous}"


class Replay:
    """The contenders of section 1; ``passes`` replays of the corpus each.

    The end-to-end and journal-only loops keep the journal's queue from
    overflowing: every CHUNK records they wait while it is nearly full.  The
    daemon has no such wait (it would count ``dropped_queue_full``); here it
    makes the figure the sustained rate of the slower side instead of a count
    of drops.  The time waited is reported.
    """

    def __init__(self, corpus: Corpus, passes: int, tmp: str, time_limit: float) -> None:
        self.corpus, self.passes, self.tmp, self.time_limit = corpus, passes, tmp, time_limit
        self.records = passes * len(corpus.items)
        n = len(corpus.items)
        self.chunks = [corpus.items[i:i + CHUNK] for i in range(0, n, CHUNK)]
        # journal-only input: every pass's entries with fresh receipt times, as in ingest
        t = time.time_ns()
        self.entries: list[list[JournalEntry]] = []
        for p in range(passes):
            for i in range(0, n, CHUNK):
                now = t + (p * n + i) * 1000
                self.entries.append([
                    JournalEntry(rec, now, cgroup, raw) for rec, (raw, _, cgroup)
                    in zip(corpus.records[i:i + CHUNK], corpus.items[i:i + CHUNK],
                           strict=True)])
        self.extra: dict[str, list[tuple[int, int, float]]] = {}  # journaled, dropped, waited

    def _journal_run(self, name: str, synchronous: str, host: str,
                     feed: Callable[[AnyJournal, float], float]) -> float:
        """Open a fresh journal, time ``feed`` + flush(), return ns per journaled record."""
        with tempfile.TemporaryDirectory(dir=self.tmp, prefix="taskstatsd-replay-") as d:
            journal = open_journal(d, synchronous, host)
            try:
                before = journal.counters()
                t0 = time.perf_counter_ns()
                waited = feed(journal, time.monotonic() + self.time_limit)
                journal.flush(timeout=self.time_limit)
                elapsed = time.perf_counter_ns() - t0
                after = journal.counters()
            finally:
                journal.stop(timeout=self.time_limit)
        journaled = after["journaled"] - before["journaled"]
        dropped = sum(v - before.get(k, 0) for k, v in after.items() if k.startswith("dropped_"))
        self.extra.setdefault(name, []).append((journaled, dropped, waited))
        return elapsed / journaled if journaled else math.inf

    @staticmethod
    def _room(journal: AnyJournal, deadline: float) -> float:
        """Wait (bounded) while the journal's queue is nearly full; return seconds waited."""
        limit = 100_000 - 2 * CHUNK * ROOM_EVERY  # the default queue_size, as the daemon's
        if journal.pending <= limit:
            return 0.0
        t0 = time.perf_counter()
        while journal.pending > limit and time.monotonic() < deadline:
            time.sleep(0.0005)
        return time.perf_counter() - t0

    def end_to_end(self, synchronous: str, host: str = "process") -> Callable[[], float]:
        """decode + JournalEntry + submit per record, as Daemon.ingest; then flush()."""
        name = _name("end to end", synchronous, host)
        family, chunks, passes = self.corpus.family, self.chunks, self.passes

        def feed(journal: AnyJournal, deadline: float) -> float:
            submit, decode, room = journal.submit, ts.decode, self._room
            waited = 0.0
            for _ in range(passes):
                for k, chunk in enumerate(chunks):
                    if k % ROOM_EVERY == 0:
                        waited += room(journal, deadline)
                    now = time.time_ns()
                    for raw, cpu, cgroup in chunk:
                        for event in decode(raw, family, len(raw), source="kernel", cpu=cpu):
                            if isinstance(event, ExitRecord):
                                submit(JournalEntry(event, now, cgroup, raw))
                    journal.push()  # as Daemon.ingest after each drain
                if time.monotonic() > deadline:
                    break
            return waited

        return lambda: self._journal_run(name, synchronous, host, feed)

    def journal_only(self, synchronous: str, host: str = "process") -> Callable[[], float]:
        """submit() of ready-made entries, then flush(): the journal side alone."""
        name = _name("journal only", synchronous, host)
        entries = self.entries

        def feed(journal: AnyJournal, deadline: float) -> float:
            submit, room = journal.submit, self._room
            waited = 0.0
            for k, chunk in enumerate(entries):
                if k % ROOM_EVERY == 0:
                    waited += room(journal, deadline)
                for entry in chunk:
                    submit(entry)
                journal.push()
                if k % 100 == 0 and time.monotonic() > deadline:
                    break
            return waited

        return lambda: self._journal_run(name, synchronous, host, feed)

    def decode_only(self, with_entry: bool) -> Callable[[], float]:
        """taskstats.decode (and, with ``with_entry``, the JournalEntry) per record."""
        family, chunks, passes = self.corpus.family, self.chunks, self.passes

        def run() -> float:
            decode, entry = ts.decode, JournalEntry
            t0 = time.perf_counter_ns()
            for _ in range(passes):
                for chunk in chunks:
                    now = time.time_ns()
                    for raw, cpu, cgroup in chunk:
                        for event in decode(raw, family, len(raw), source="kernel", cpu=cpu):
                            if with_entry and isinstance(event, ExitRecord):
                                entry(event, now, cgroup, raw)
            return (time.perf_counter_ns() - t0) / self.records

        return run

    def _items(self) -> list[list[Item]]:
        """The journal-only input as the writer holds it: (time_ns, cpu, cgroup, raw, tags)."""
        return [[e.item for e in chunk] for chunk in self.entries]

    def rows_only(self) -> Callable[[], float]:
        """The writer's Python work per record: journal_rows.row(item)."""
        entries, make_row = self._items(), row

        def run() -> float:
            t0 = time.perf_counter_ns()
            for chunk in entries:
                for entry in chunk:
                    make_row(entry)
            return (time.perf_counter_ns() - t0) / self.records

        return run

    def sqlite_only(self, synchronous: str) -> Callable[[], float]:
        """executemany(INSERT) of ready rows in transactions of SQL_TXN_ROWS, on a
        connection set up as the journal's writer (same pragmas, schema, index)."""
        entries, make_row = self._items(), row
        per_pass = math.ceil(len(self.corpus.items) / CHUNK)

        def run() -> float:
            spent = 0
            with tempfile.TemporaryDirectory(dir=self.tmp, prefix="taskstatsd-sql-") as d:
                conn = connect(os.path.join(d, "journal.sqlite3"), synchronous)
                try:
                    deadline = time.monotonic() + self.time_limit
                    for p in range(self.passes):
                        rows = [make_row(e) for chunk in entries[p * per_pass:(p + 1) * per_pass]
                                for e in chunk]  # not timed
                        t0 = time.perf_counter_ns()
                        for i in range(0, len(rows), SQL_TXN_ROWS):
                            conn.execute("BEGIN IMMEDIATE")
                            journal_mod._insert(conn, rows[i:i + SQL_TXN_ROWS])
                            conn.execute("COMMIT")
                        spent += time.perf_counter_ns() - t0
                        if time.monotonic() > deadline:
                            return spent / ((p + 1) * len(rows))
                finally:
                    conn.close()
            return spent / self.records

        return run

    def cgroup_lookup(self) -> Callable[[], float]:
        """cgroup_path(tgid) of tasks that are gone: the live daemon's extra per new tgid."""
        tgids = [r.tgid or r.pid for r in self.corpus.records]

        def run() -> float:
            t0 = time.perf_counter_ns()
            for tgid in tgids:
                cgroup_path(tgid)
            return (time.perf_counter_ns() - t0) / len(tgids)

        return run


def replay_section(corpus: Corpus, args: argparse.Namespace, tmp: str) -> None:
    passes = math.ceil(args.records / len(corpus.items))
    warm = Replay(corpus, 1, tmp, args.time_limit)
    replay = Replay(corpus, passes, tmp, args.time_limit)

    def cases(r: Replay) -> list[tuple[str, Callable[[], float]]]:
        return [
            (_name("end to end", "NORMAL", "process"), r.end_to_end("NORMAL")),
            (_name("end to end", "FULL", "process"), r.end_to_end("FULL")),
            ("[info] " + _name("end to end", "NORMAL", HOSTS[1]),
             r.end_to_end("NORMAL", HOSTS[1])),
            ("[info] decode only", r.decode_only(False)),
            ("[info] decode + JournalEntry (producer, no submit)", r.decode_only(True)),
            ("[info] " + _name("journal only", "NORMAL", "process"), r.journal_only("NORMAL")),
            ("[info] " + _name("journal only", "NORMAL", HOSTS[1]),
             r.journal_only("NORMAL", HOSTS[1])),
            ("[info] writer's row() only", r.rows_only()),
            (f"[info] SQLite INSERT only, NORMAL, {SQL_TXN_ROWS:,} rows/txn",
             r.sqlite_only("NORMAL")),
            ("[info] cgroup_path() of an exited task (live daemon only)", r.cgroup_lookup()),
        ]

    for _, run in cases(warm):  # warm-up (one pass each), not counted
        run()
    contenders = cases(replay)
    t0 = time.perf_counter()
    results = interleave(contenders, args.reps)
    wall = time.perf_counter() - t0

    sizes = sorted({len(raw) for raw, _, _ in corpus.items})
    how = (f"{corpus.live:,} captured live (Listener.drain_raw during a fork storm)"
           if corpus.live == len(corpus.items) else
           f"{corpus.live:,} captured live + {len(corpus.items) - corpus.live:,} BUILT with "
           "encode_exit from live records (the capture fell short)")
    dual = sum(r.group is not None for r in corpus.records)
    cgroups = sum(c is not None for _, _, c in corpus.items)
    print("== 1. replayed ingest: decode + JournalEntry + submit, then flush() ==")
    print(f"corpus: {len(corpus.items):,} exit messages, {how}; {dual} with a TGID record, "
          f"{corpus.reencoded} re-encoded (shared datagram), {cgroups} with a cgroup path; "
          f"sizes {', '.join(map(str, sizes))} bytes; struct v{corpus.records[0].task.version}")
    print(f"{passes} passes = {replay.records:,} records per contender and round; "
          f"{args.reps} interleaved rounds in {wall:.1f} s; journals in {tmp} (fresh per "
          f"round); Python {sys.version.split()[0]}")
    print()
    rows = []
    for name, _ in contenders:
        med = median(results[name])
        extra = replay.extra.get(name)
        if extra:
            journaled = f"{median([e[0] for e in extra]):,.0f}"
            dropped = f"{max(e[1] for e in extra):,}"
            waited = f"{median([e[2] for e in extra]):.2f}"
        else:
            journaled = dropped = waited = ""
        target = (f">= {TARGET_REPLAY:,}: {'met' if 1e9 / med >= TARGET_REPLAY else 'MISSED'}"
                  if name.startswith("end to end") else "")
        rows.append([name, f"{med / 1000:.2f}", f"{1e9 / med:,.0f}", spread(results[name]),
                     journaled, dropped, waited, target])
    print(table(["replay", "us/record", "records/s", "min/max", "journaled", "dropped",
                 "waited s", "target"], rows))
    print()
    print("us/record and records/s: medians; end to end and journal only run until flush() "
          "returned (all committed), per journaled record. dropped = the journal's dropped_* "
          "counters (max over rounds); waited s = time the feeder paused while the journal's "
          "queue was nearly full (the writer was the slower side; the daemon would drop "
          "instead). [info] rows time one piece alone; the cgroup_path row is per call, "
          "not part of the replay.")
    print()


def profile_replay(corpus: Corpus, records: int, tmp: str, top: int) -> None:
    """A cProfile table of one end-to-end NORMAL replay with the writer's loop in
    this process (:class:`InProcess`), so one profiler sees the feeding and the
    store; taskstatsd runs the store in its writer process."""
    passes = max(1, math.ceil(records / len(corpus.items)))
    replay = Replay(corpus, passes, tmp, 120.0)
    run = replay.end_to_end("NORMAL", HOSTS[1])
    prof = cProfile.Profile()
    t0 = time.perf_counter_ns()
    prof.runcall(run)
    ns = (time.perf_counter_ns() - t0) / replay.records
    print(f"=== cProfile: end to end, synchronous=NORMAL, {replay.records:,} records, "
          f"{ns / 1000:.2f} us/record under the profiler ===")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print("--- feeding (decode + JournalEntry + submit) and the writer's loop, one thread ---")
    print("\n".join(line for line in out.getvalue().splitlines()
                    if line.strip() and not line.startswith(("   Ordered", "Ordered"))))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a short run: fewer records and rounds")
    parser.add_argument("--reps", type=int, default=None,
                        help="interleaved replay rounds (default 3; --quick 1)")
    parser.add_argument("--records", type=int, default=None,
                        help="records replayed per contender and round (default 200000; "
                        "--quick and --profile 50000)")
    parser.add_argument("--corpus", type=int, default=2000,
                        help="exit messages to capture (default 2000)")
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="bound of any one measurement, seconds (default 60)")
    parser.add_argument("--dir", default=None,
                        help="where the replay journals go (default: the temp dir, $TMPDIR)")
    parser.add_argument("--profile", action="store_true",
                        help="print a cProfile table of a replayed ingest (--records, default "
                        "50000) and exit")
    args = parser.parse_args()
    quick = args.quick or args.profile
    for name, full, short in (("reps", 3, 1), ("records", 200_000, 50_000)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    require_root()
    t0 = time.perf_counter()
    header("taskstatsd replayed ingest", args.quick)
    corpus = capture_corpus(args.corpus, len(possible_cpus()))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="taskstatsd-bench-") as tmp:
        if args.profile:
            profile_replay(corpus, args.records, tmp, 18)
            return
        replay_section(corpus, args, tmp)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    run_daemon_main(main, "ingest_replay.py")
