"""taskstatsd under load: replayed and live ingest, CPU and memory, query latency.

Run as root: ``python benchmarks/daemon.py`` (``--help`` for options; ``--quick``
for a shorter run, ``--profile`` for cProfile tables of a replayed ingest).

Four measurements, in one run:

1. Replayed ingest, in this process.  A corpus of real exit datagrams is
   captured from the kernel (a pytaskstats Listener's ``drain_raw`` during a
   short fork storm; topped up with ``encode_exit`` of live records only if the
   capture falls short, and the output says so).  It is replayed through what
   taskstatsd's ``Daemon.ingest`` does per record: ``taskstats.decode`` of the
   bytes, a ``JournalEntry``, ``submit`` into a real journal on disk (a temp
   dir; synchronous NORMAL and FULL), then ``flush()``.  The journal is
   taskstatsd's ``JournalProcess`` (its writer in a child process); the library's
   ``Journal`` (writer thread in this process) is shown beside it.  Rows marked
   [info] time the pieces alone, so the bottleneck shows.  Interleaved rounds,
   medians.
2. Live ingest: a real taskstatsd (tests/daemon_util.RunningDaemon) and fork
   storms (fork_storm.c) of ``--storm-forks`` exits; journaled exits/s from the
   daemon's ``journaled`` counter over time, and what was lost.
3. The daemon's CPU time (/proc/PID/stat) and memory (VmRSS, PSS, VmHWM), its
   journal writer process included, when idle and under paced exit rates (a
   small C generator written to benchmarks/.build/).
4. Query latency: ``Client("daemon").pid(p)`` against ``Client("kernel").pid(p)``
   one by one (median, p99), and the bulk ``pids()`` per task, interleaved.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

from _bench import (
    BUILD,
    build_c,
    interleave,
    median,
    require_root,
    run_daemon_main,
    spread,
    table,
    task_ids,
)

from pytaskstats import Client, ExitRecord, NoSuchTask
from pytaskstats import taskstats as ts
from pytaskstats.daemon import config as config_mod
from pytaskstats.daemon import journal as journal_mod
from pytaskstats.daemon.journal import Item, Journal, JournalEntry
from pytaskstats.daemon.journal_process import JournalProcess
from pytaskstats.kernel import Connection, Listener, possible_cpus
from pytaskstats.procfs import cgroup_path

REPO = Path(__file__).resolve().parent.parent
TARGET_REPLAY = 100_000  # records/s, replayed end to end
TARGET_IDLE_CPU = 0.5  # % of one core
TARGET_RSS_MB = 40.0
CHUNK = 100  # records per simulated drain (one time.time_ns() each, as Daemon.ingest)
AnyJournal = Journal | JournalProcess
ROOM_EVERY = 10  # chunks between looks at the journal's queue (a call to the writer)
SQL_TXN_ROWS = 1000  # rows per transaction in the "SQLite INSERT only" rows
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL = 0.1  # seconds between status samples during a live storm
QUIET = 1.0  # seconds without a new journaled record after the storm: it is over

# The paced generator of section 3.  Written to benchmarks/.build/ and compiled there.
FORK_RATE_C = r"""/* fork_rate - paced exit generator of benchmarks/daemon.py (written by it).
 *
 * Usage: fork_rate RATE SECONDS
 *
 * Forks RATE children per second (each _exit(0)s at once) for SECONDS, paced
 * with clock_nanosleep(TIMER_ABSTIME) on a fixed schedule.  A fork that comes
 * late is not made up for more than 50 ms later: no long bursts.  SIGCHLD is
 * ignored, so the kernel reaps the children.  Prints
 *
 *   forks=<n> elapsed_ns=<n>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	long long t0, end, next, step;
	double rate, seconds;
	long forks = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: %s RATE SECONDS\n", argv[0]);
		return 2;
	}
	rate = atof(argv[1]);
	seconds = atof(argv[2]);
	if (rate <= 0 || seconds <= 0) {
		fprintf(stderr, "fork_rate: RATE and SECONDS must be positive\n");
		return 2;
	}
	signal(SIGCHLD, SIG_IGN);
	step = (long long)(1e9 / rate);
	t0 = next = now_ns();
	end = t0 + (long long)(seconds * 1e9);
	while (next < end) {
		struct timespec at = { next / 1000000000LL, next % 1000000000LL };
		long long now;
		pid_t pid;

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
			;
		pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid > 0)
			forks++;
		next += step;
		now = now_ns();
		if (now - next > 50000000LL)
			next = now;
	}
	while (wait(NULL) > 0 || errno == EINTR)
		;
	printf("forks=%ld elapsed_ns=%lld\n", forks, now_ns() - t0);
	return 0;
}
"""


def build_embedded(name: str, source: str) -> Path:
    """Write ``source`` to benchmarks/.build/NAME.c (if it changed) and compile it
    with gcc -O2 into benchmarks/.build/NAME (if stale; static if possible)."""
    BUILD.mkdir(exist_ok=True)
    src, exe = BUILD / f"{name}.c", BUILD / name
    if not src.exists() or src.read_text() != source:
        src.write_text(source)
    if exe.exists() and exe.stat().st_mtime >= src.stat().st_mtime:
        return exe
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        sys.exit(f"cannot build {src.name}: no gcc/cc on PATH")
    cmd = [gcc, "-O2", "-Wall", "-Wextra", "-o", str(exe), str(src)]
    if subprocess.run([*cmd, "-static"], capture_output=True, check=False).returncode != 0:
        subprocess.run(cmd, check=True)
    return exe


def _fields(out: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def _finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, str]:
    """A generator's ``key=value`` report; it is killed if it overstays ``timeout``."""
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    return _fields(out or "")


def _kill(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def _rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


# ================================================================ 1. replayed ingest


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
            _finish(proc, seconds + 5)
        finally:
            _kill(proc)
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
    in a child process (``host`` "process", what taskstatsd runs) or in a thread of
    this process ("thread", the library's Journal)."""
    cfg = config_mod.Config()
    kind = JournalProcess if host == "process" else Journal
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
        return [[(e.time_ns, e.record.cpu, e.cgroup, e.raw, e.tags) for e in chunk]
                for chunk in self.entries]

    def rows_only(self) -> Callable[[], float]:
        """The writer thread's Python work per record: journal._row(item)."""
        entries, make_row = self._items(), journal_mod._row

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
        entries, make_row = self._items(), journal_mod._row
        per_pass = math.ceil(len(self.corpus.items) / CHUNK)

        def run() -> float:
            spent = 0
            with tempfile.TemporaryDirectory(dir=self.tmp, prefix="taskstatsd-sql-") as d:
                conn = journal_mod._connect(os.path.join(d, "journal.sqlite3"), synchronous)
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
            ("[info] " + _name("end to end", "NORMAL", "thread"),
             r.end_to_end("NORMAL", "thread")),
            ("[info] decode only", r.decode_only(False)),
            ("[info] decode + JournalEntry (producer, no submit)", r.decode_only(True)),
            ("[info] " + _name("journal only", "NORMAL", "process"), r.journal_only("NORMAL")),
            ("[info] " + _name("journal only", "NORMAL", "thread"),
             r.journal_only("NORMAL", "thread")),
            ("[info] writer's _row() only", r.rows_only()),
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
    """cProfile tables of one end-to-end NORMAL replay: the feeding (main) thread and
    the journal's writer thread, each profiled on its own (the writer runs as a thread
    here so one profiler sees both; taskstatsd runs it as a process)."""
    passes = max(1, math.ceil(records / len(corpus.items)))
    replay = Replay(corpus, passes, tmp, 120.0)
    run = replay.end_to_end("NORMAL", "thread")
    main_prof, writer_prof = cProfile.Profile(), cProfile.Profile()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        # first profile event of the writer thread: hand over to cProfile
        sys.setprofile(None)
        writer_prof.enable()

    threading.setprofile(hook)
    try:
        t0 = time.perf_counter_ns()
        main_prof.runcall(run)
        ns = (time.perf_counter_ns() - t0) / replay.records
    finally:
        threading.setprofile(None)
    writer_prof.disable()
    print(f"=== cProfile: end to end, synchronous=NORMAL, {replay.records:,} records, "
          f"{ns / 1000:.2f} us/record under the profiler ===")
    for label, prof in (("feeding thread (decode + JournalEntry + submit)", main_prof),
                        ("journal writer thread", writer_prof)):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
        print(f"--- {label} ---")
        print("\n".join(line for line in out.getvalue().splitlines()
                        if line.strip() and not line.startswith(("   Ordered", "Ordered"))))
        print()


# ================================================================ 2-4. a running daemon


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of process ``pid`` (or of its thread ``tid``), in seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        text = f.read()
    after = text[text.rindex(")") + 2:].split()  # field 3 (state) onwards
    return (int(after[11]) + int(after[12])) / CLK_TCK


def writer_pid(pid: int) -> int | None:
    """The daemon's child: its journal writer process."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids = f.read().split()
        if kids:
            return int(kids[0])
    return None


def daemon_cpu(pid: int) -> tuple[float, float, float]:
    """CPU seconds of the daemon and its writer together, its main thread, the writer."""
    writer = writer_pid(pid)
    spent = cpu_seconds(writer) if writer else 0.0
    return cpu_seconds(pid) + spent, cpu_seconds(pid, pid), spent


class Memory(NamedTuple):
    """MiB: VmRSS of the daemon and of its writer, their sum, their summed PSS
    (shared pages split between them: what the pair costs) and the daemon's VmHWM."""

    rss: float
    writer_rss: float
    total_rss: float
    pss: float
    hwm: float


def _status_mb(pid: int, path: str, keys: tuple[str, ...]) -> dict[str, float]:
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/{path}") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                found[key] = int(value.split()[0]) / 1024
    return found


def memory_mb(pid: int) -> Memory:
    """The daemon's and its writer's memory (see Memory)."""
    own = _status_mb(pid, "status", ("VmRSS", "VmHWM"))
    pss = _status_mb(pid, "smaps_rollup", ("Pss",)).get("Pss", math.nan)
    writer = writer_pid(pid)
    w_rss = w_pss = 0.0
    if writer:
        w_rss = _status_mb(writer, "status", ("VmRSS",)).get("VmRSS", math.nan)
        w_pss = _status_mb(writer, "smaps_rollup", ("Pss",)).get("Pss", math.nan)
    rss = own.get("VmRSS", math.nan)
    return Memory(rss, w_rss, rss + w_rss, pss + w_pss, own.get("VmHWM", math.nan))


class Status:
    """The daemon's status counters and journal, through a daemon-backend Client."""

    def __init__(self, socket_path: str) -> None:
        self.client = Client("daemon", socket_path=socket_path)

    def sample(self) -> tuple[float, dict[str, int]]:
        """(the daemon's wall clock when it read its counters, in s; the counters)."""
        doc = self.client.status()
        daemon = doc["daemon"]
        at = (int(daemon["started_ns"]) + float(daemon["uptime_s"]) * 1e9) / 1e9
        return at, {k: int(v) for k, v in doc["counters"].items()}

    def counters(self) -> dict[str, int]:
        return self.sample()[1]

    def history(self, **params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client.history(**params)
        return rows

    def close(self) -> None:
        self.client.close()


def lost(before: dict[str, int], after: dict[str, int]) -> int:
    """Exits lost before the journal or dropped by it, between two counter readings."""
    return sum(v - before.get(k, 0) for k, v in after.items()
               if k.startswith(("lost_", "dropped_")))


class Load(NamedTuple):
    name: str
    window: float
    generated: float  # exits/s made by the generator (nan: none)
    received: int  # exits the daemon received in the window
    cpu: float  # daemon + writer CPU seconds in the window
    cpu_main: float  # of which the daemon's main thread (kernel sockets, clients)
    cpu_writer: float  # of which the journal writer process
    memory: Memory


def load_window(pid: int, status: Status, exe: Path | None, *, rate: int, window: float,
                name: str) -> Load:
    """Daemon CPU and memory over ``window`` s, idle or under ``rate`` exits/s."""
    proc = None
    try:
        if exe is not None:
            proc = subprocess.Popen([str(exe), str(rate), str(window + 1.5)],
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(0.75)  # the generator and the daemon get going
        c0 = status.counters()
        (cpu0, main0, writer0), t0 = daemon_cpu(pid), time.monotonic()
        time.sleep(window)
        (cpu1, main1, writer1), t1 = daemon_cpu(pid), time.monotonic()
        memory = memory_mb(pid)
        c1 = status.counters()
        generated = math.nan
        if proc is not None:
            out = _finish(proc, window + 10)
            if "forks" in out:
                generated = int(out["forks"]) / (int(out["elapsed_ns"]) / 1e9)
    finally:
        _kill(proc)
    return Load(name, t1 - t0, generated, c1["received"] - c0["received"], cpu1 - cpu0,
                main1 - main0, writer1 - writer0, memory)


class Storm(NamedTuple):
    forks: int  # children made
    generated: int  # exits of fork_storm processes: children, workers, the generator
    gen_seconds: float
    journaled: int  # of those, in the journal (history by comm)
    rx_rate: float  # journaled / (last - first receipt time of those)
    rate: float  # journaled / (storm start .. all journaled, daemon clock)
    lag: float  # generator end .. all journaled
    lost: int
    other: int  # unrelated exits the daemon received meanwhile
    cpu: float  # daemon CPU time / (storm start .. all journaled)


def live_storm(pid: int, status: Status, *, forks: int, jobs: int, seconds: float,
               time_limit: float) -> Storm:
    """One fork storm against the running daemon; sample its counters every POLL s.

    The daemon serves its kernel sockets before its clients, so during a storm a
    status reply can come late: each sample is stamped with the daemon's own clock.
    Other exits on the machine also move the counters, so the storm is over when
    the journal holds every exit of the storm's processes (history by comm), or
    when their count stopped growing for QUIET seconds (then some were lost).
    """
    exe = str(build_c("fork_storm", static=True))
    at0, c0 = status.sample()
    t0, cpu0 = time.monotonic(), daemon_cpu(pid)[0]
    since = time.time_ns()
    query = {"comm": "fork_storm", "since_ns": since}

    def storm_journaled() -> int:  # history flushes the journal first
        rows = status.history(**query, group_by="comm")
        return int(rows[0]["exits"]) if rows else 0

    proc = subprocess.Popen([exe, str(forks), str(seconds), str(jobs)],
                            stdout=subprocess.PIPE, text=True)
    out: dict[str, str] = {}
    expected: int | None = None
    done = (at0, t0, cpu0)  # daemon clock, our clock, daemon CPU when all were journaled
    try:
        deadline = t0 + time_limit
        got, got_since = -1, t0
        while time.monotonic() < deadline:
            time.sleep(POLL)
            at, counters = status.sample()
            now, cpu = time.monotonic(), daemon_cpu(pid)[0]
            if expected is None:
                if proc.poll() is None:
                    continue
                out = _finish(proc, 10)
                made = int(out.get("forks", 0))
                expected = made + len(out.get("workers", "").split(",")) + 1
            if counters["journaled"] - c0["journaled"] < expected and now - got_since < QUIET:
                continue
            count = storm_journaled()
            if count != got:
                got, got_since, done = count, now, (at, now, cpu)
            if got >= expected or now - got_since >= QUIET:
                break
    finally:
        if proc.poll() is None or not out:
            out = _finish(proc, 10)
        _kill(proc)
    c1 = status.counters()
    made = int(out.get("forks", 0))
    workers = len(out["workers"].split(",")) if out.get("workers") else 0
    gen_ns = int(out.get("elapsed_ns", 0))
    journaled = storm_journaled()
    rx_rate = 0.0
    if journaled > 1:
        first_rx = status.history(**query, sort="time_ns", limit=1)[0]["time_ns"]
        last_rx = status.history(**query, sort="-time_ns", limit=1)[0]["time_ns"]
        rx_rate = journaled / ((last_rx - first_rx) / 1e9) if last_rx > first_rx else 0.0
    at_done, t_done, cpu_done = done
    generated = made + workers + 1
    return Storm(made, generated, gen_ns / 1e9, journaled, rx_rate,
                 journaled / (at_done - at0) if at_done > at0 else 0.0,
                 at_done - (since + gen_ns) / 1e9, lost(c0, c1),
                 c1["received"] - c0["received"] - generated,
                 (cpu_done - cpu0) / (t_done - t0) if t_done > t0 else 0.0)


def latency_section(socket_path: str, args: argparse.Namespace) -> None:
    ids = task_ids()
    repeat = max(1, math.ceil(int(args.queries) / len(ids)))
    samples: dict[str, list[int]] = {}
    esrch = {"daemon": 0, "kernel": 0}

    def one_by_one(client: Client, name: str) -> Callable[[], float]:
        def run() -> float:
            lat = []
            query = client.pid
            for _ in range(repeat):
                for i in ids:
                    t0 = time.perf_counter_ns()
                    try:
                        query(i)
                    except NoSuchTask:
                        esrch[name] += 1
                    lat.append(time.perf_counter_ns() - t0)
            samples.setdefault(name, []).extend(lat)
            return median(lat)

        return run

    def bulk(client: Client) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter_ns()
            for _ in range(repeat):
                client.pids(ids)
            return (time.perf_counter_ns() - t0) / (repeat * len(ids))

        return run

    with Client("daemon", socket_path=socket_path) as via_daemon, \
            Client("kernel") as kernel:
        contenders = [("daemon pid(p), one by one", one_by_one(via_daemon, "daemon")),
                      ("kernel pid(p), one by one", one_by_one(kernel, "kernel")),
                      ("daemon pids(all), per task", bulk(via_daemon)),
                      ("kernel pids(all), per task", bulk(kernel))]
        for _, run in contenders:  # warm-up, not counted
            run()
        samples.clear()
        esrch.update(daemon=0, kernel=0)
        t0 = time.perf_counter()
        results = interleave(contenders, args.latency_reps)
        wall = time.perf_counter() - t0

    def p99(values: Sequence[int]) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

    gone = sum(not os.path.exists(f"/proc/{i}") for i in ids)
    print("== 4. query latency: Client(\"daemon\") against Client(\"kernel\") ==")
    print(f"{len(ids)} threads ({gone} gone since listed; ESRCH one by one: daemon "
          f"{esrch['daemon']}, kernel {esrch['kernel']}), {repeat} x {len(ids)} = "
          f"{repeat * len(ids):,} queries per contender and round; {args.latency_reps} "
          f"interleaved rounds in {wall:.1f} s")
    print()
    rows = []
    for name, _ in contenders:
        med = median(results[name])
        kind = "daemon" if name.startswith("daemon") else "kernel"
        if "one by one" in name:
            pooled = samples[kind]
            other = median(samples["kernel"])
            rows.append([name, f"{median(pooled) / 1000:.1f}", f"{p99(pooled) / 1000:.1f}",
                         spread(results[name]),
                         f"{median(pooled) / other:.2f}x" if kind == "daemon" else "",
                         f"{p99(pooled) / p99(samples['kernel']):.2f}x"
                         if kind == "daemon" else ""])
        else:
            kernel_bulk = median(results["kernel pids(all), per task"])
            rows.append([name, f"{med / 1000:.1f}", "-", spread(results[name]),
                         f"{med / kernel_bulk:.2f}x" if kind == "daemon" else "", ""])
    print(table(["query", "median us", "p99 us", "min/max", "daemon/kernel",
                 "p99 daemon/kernel"], rows))
    print()
    print("one by one: latency of each call (perf_counter_ns around Client.pid), median and "
          "p99 over all rounds' calls; min/max = spread of the per-round medians. pids(all): "
          "the whole pipelined bulk query / number of tasks.")


def daemon_sections(args: argparse.Namespace, jobs: int) -> None:
    sys.path.insert(0, str(REPO))
    from tests.daemon_util import RunningDaemon  # noqa: PLC0415  (needs the repo on sys.path)

    rate_exe = build_embedded("fork_rate", FORK_RATE_C)
    build_c("fork_storm", static=True)
    daemon = RunningDaemon(None, *(["--no-cgroups"] if args.no_cgroups else []))
    status: Status | None = None
    try:
        pid = daemon.pid
        status = Status(daemon.socket)
        t_start = time.monotonic()
        time.sleep(1.0)  # start-up done, heap settled
        status.counters()
        loads = [load_window(pid, status, None, rate=0, window=args.idle_seconds,
                             name="idle")]
        for rate in args.rates:
            loads.append(load_window(pid, status, rate_exe, rate=rate, window=args.rate_seconds,
                                     name=f"~{rate:,} exits/s"))
        storms = [live_storm(pid, status, forks=args.storm_forks, jobs=jobs, seconds=10.0,
                             time_limit=args.time_limit) for _ in range(args.storms)]
        after_storms = memory_mb(pid)
        final = status.counters()
        uptime = time.monotonic() - t_start
        print_live(storms, args, jobs, final)
        print_loads(loads, after_storms, rate_exe, uptime, args)
        latency_section(daemon.socket, args)
    finally:
        if status is not None:
            status.close()
        daemon.close()


def print_live(storms: list[Storm], args: argparse.Namespace, jobs: int,
               final: dict[str, int]) -> None:
    print("== 2. live ingest: a running taskstatsd under fork storms ==")
    print(f"{len(storms)} storms of {args.storm_forks:,} forks (fork_storm.c, {jobs} workers) "
          f"against one taskstatsd ({_daemon_config(args)}); counters sampled every "
          f"{POLL:g} s via Client(\"daemon\").status()")
    print()

    def row(name: str, m: Sequence[float]) -> list[str]:
        gen, gen_rate, journaled, rx_rate, rate, lag, missing, lost_n, other, cpu = m
        return [name, f"{gen:.0f}", f"{gen_rate:,.0f}", f"{journaled:.0f}", f"{rx_rate:,.0f}",
                f"{rate:,.0f}", f"{lag:.2f}", f"{missing:.0f}", f"{lost_n:.0f}", f"{other:.0f}",
                f"{cpu:.0%}"]

    metrics = [[s.generated, s.forks / s.gen_seconds if s.gen_seconds else 0.0, s.journaled,
                s.rx_rate, s.rate, s.lag, s.generated - s.journaled, s.lost, s.other, s.cpu]
               for s in storms]
    rows = [row(f"storm #{i + 1}", m) for i, m in enumerate(metrics)]
    if len(storms) > 1:
        rows.append(row("MEDIAN", [median(col) for col in zip(*metrics, strict=True)]))
    print(table(["storm", "generated", "gen exits/s", "journaled", "recv exits/s",
                 "journaled/s", "lag s", "missing", "lost", "other", "daemon CPU"], rows))
    print()
    print("generated = exits of fork_storm processes (children + workers + generator); "
          "journaled = of those, in the journal (history by comm since the storm began); "
          "recv exits/s = journaled / their span of receipt times (the journal's time_ns); "
          "journaled/s = journaled / (storm start .. the first status sample, on the "
          "daemon's clock, by which all were committed: includes the commit delay and the "
          f"{POLL:g} s sampling); lag s = from the generator's end to that sample; missing = "
          "generated - journaled; lost = change of the daemon's lost_* + dropped_* counters "
          "(all exits); other = unrelated exits the daemon received meanwhile; daemon CPU = "
          "its CPU time over storm start .. all committed (100% = one core).")
    print(f"daemon counters at the end: received {final.get('received', 0):,}, journaled "
          f"{final.get('journaled', 0):,}, lost/dropped "
          f"{sum(v for k, v in final.items() if k.startswith(('lost_', 'dropped_'))):,}")
    print()


def _daemon_config(args: argparse.Namespace) -> str:
    return ("--config /dev/null: defaults" + (", --no-cgroups" if args.no_cgroups else ""))


def _rss_target(memory: Memory) -> str:
    """The target checked on both sums: PSS (what the pair costs) and RSS (which
    counts the pages they share, libpython and libsqlite3, twice)."""
    def verdict(mb: float) -> str:
        return "met" if mb < TARGET_RSS_MB else "MISSED"
    return (f"< {TARGET_RSS_MB:.0f}: PSS {verdict(memory.pss)}, "
            f"RSS sum {verdict(memory.total_rss)}")


def print_loads(loads: list[Load], after_storms: Memory, exe: Path,
                uptime: float, args: argparse.Namespace) -> None:
    print("== 3. daemon CPU and memory, idle and under paced exit rates ==")
    print(f"the same taskstatsd ({_daemon_config(args)}), measured before the storms; "
          f"generator: {exe.relative_to(REPO)} (fork + _exit(0) on a clock_nanosleep "
          f"schedule); CPU from /proc/PID/stat utime+stime at {CLK_TCK} ticks/s; memory "
          "from /proc/PID/status and smaps_rollup, of the daemon and of its journal writer "
          "process")
    print()
    rows = []
    for load in loads:
        cpu_pct = 100 * load.cpu / load.window
        idle = load.name == "idle"
        target = (f"< {TARGET_IDLE_CPU}%: {'met' if cpu_pct < TARGET_IDLE_CPU else 'MISSED'}"
                  if idle else "")
        per_exit = (f"{load.cpu / load.received * 1e6:.0f}"
                    if load.received and not idle else "-")
        m = load.memory
        rows.append([load.name, f"{load.window:.1f}",
                     "-" if math.isnan(load.generated) else f"{load.generated:,.0f}",
                     _rate(load.received, load.window), f"{cpu_pct:.2f}%",
                     f"{100 * load.cpu_main / load.window:.2f}%",
                     f"{100 * load.cpu_writer / load.window:.2f}%", per_exit, target,
                     f"{m.rss:.1f} + {m.writer_rss:.1f} = {m.total_rss:.1f}", f"{m.pss:.1f}",
                     f"{m.hwm:.1f}", _rss_target(m)])
    m = after_storms
    rows.append(["after the live storms", "", "", "", "", "", "", "", "",
                 f"{m.rss:.1f} + {m.writer_rss:.1f} = {m.total_rss:.1f}", f"{m.pss:.1f}",
                 f"{m.hwm:.1f}", _rss_target(m)])
    print(table(["load", "window s", "gen exits/s", "recv exits/s", "CPU", "main thr",
                 "writer", "us CPU/exit", "CPU target", "VmRSS MB daemon + writer",
                 "PSS MB", "VmHWM MB", "RSS target"], rows))
    print()
    print("CPU = daemon + writer utime+stime / window (% of one core, all threads); main thr "
          "= the daemon's main thread alone; writer = the journal writer process; us "
          "CPU/exit = CPU time / exits received; recv exits/s from the daemon's `received` "
          "counter (idle: the machine's other exits, which the daemon handles too); PSS = "
          "the two processes' proportional set sizes summed (pages they share counted "
          "once); VmHWM = the daemon's peak RSS "
          f"since it started (rows in time order; the daemon was {uptime:.0f} s old "
          "at the last row).")
    print()


# ================================================================ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a short run (~25 s): fewer records, rounds and storms, "
                        "shorter windows")
    parser.add_argument("--reps", type=int, default=None,
                        help="interleaved replay rounds (default 3; --quick 1)")
    parser.add_argument("--records", type=int, default=None,
                        help="records replayed per contender and round (default 200000; "
                        "--quick and --profile 50000)")
    parser.add_argument("--corpus", type=int, default=2000,
                        help="exit messages to capture (default 2000)")
    parser.add_argument("--storm-forks", type=int, default=20000,
                        help="forks per live storm (default 20000)")
    parser.add_argument("--storms", type=int, default=None,
                        help="live storms (default 3; --quick 1)")
    parser.add_argument("--idle-seconds", type=float, default=None,
                        help="idle window (default 10; --quick 3)")
    parser.add_argument("--rate-seconds", type=float, default=None,
                        help="window per paced rate (default 4; --quick 2)")
    parser.add_argument("--rates", type=int, nargs="*", default=[1000, 5000],
                        help="paced exit rates per second (default 1000 5000)")
    parser.add_argument("--queries", type=int, default=2000,
                        help="one-by-one queries per latency contender and round (default 2000)")
    parser.add_argument("--latency-reps", type=int, default=None,
                        help="interleaved latency rounds (default 5; --quick 2)")
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="bound of any one measurement, seconds (default 60)")
    parser.add_argument("--dir", default=None,
                        help="where the replay journals go (default: the temp dir, $TMPDIR)")
    parser.add_argument("--no-cgroups", action="store_true",
                        help="run the daemon with --no-cgroups (no /proc/TGID/cgroup read "
                        "per exit)")
    parser.add_argument("--no-replay", action="store_true", help="skip section 1")
    parser.add_argument("--no-daemon", action="store_true", help="skip sections 2-4")
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile tables of a replayed ingest (--records, default "
                        "50000) and exit")
    args = parser.parse_args()
    quick = args.quick or args.profile
    for name, full, short in (("reps", 3, 1), ("records", 200_000, 50_000), ("storms", 3, 1),
                              ("idle_seconds", 10.0, 3.0), ("rate_seconds", 4.0, 2.0),
                              ("latency_reps", 5, 2)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    require_root()

    jobs = len(possible_cpus())
    t0 = time.perf_counter()
    print(f"taskstatsd benchmark{' (--quick)' if args.quick else ''}: {jobs} CPUs, Linux "
          f"{os.uname().release}, Python {sys.version.split()[0]}")
    print()
    if args.profile or not args.no_replay:
        corpus = capture_corpus(args.corpus, jobs)
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="taskstatsd-bench-") as tmp:
            if args.profile:
                profile_replay(corpus, args.records, tmp, 18)
                return
            replay_section(corpus, args, tmp)
        del corpus
    if not args.no_daemon:
        daemon_sections(args, jobs)
    print()
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    run_daemon_main(main, "daemon.py")
