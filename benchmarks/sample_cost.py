"""The budget of taskstatsd's samples of live processes: CPU per interval, bytes per
row, journal growth per day.

Run as root: ``python benchmarks/sample_cost.py`` (~1 min; ``--help`` for options).

* **cost per interval**: a helper process starts ``--threads`` sleeping threads
  (1,000 and 10,000 by default).  One sample is what taskstatsd does every
  ``sample_interval_s``: list every thread (/proc/*/task), read each with the
  kernel's pipelined ``query_many``, fold per process, build the rows of the busy
  ones (with their cgroup, credentials and namespace).  Beside it, in the same
  run, the *bare pipelined scan* of the same threads (listing + ``query_many``),
  the floor any sampler pays.  Wall and CPU (``process_time``) per scan, medians
  of ``--scans``; the longest step (median over the scans, wall and CPU) shows how
  long one step holds the daemon's loop (taskstatsd reads SLICE_TASKS threads per
  slice, for about SLICE_S).  On a loaded machine wall times include waiting for a
  CPU: read the CPU columns.
* **bytes per row and growth per day**: a simulated hour of a host with
  ``--processes`` processes of which ``--busy`` do something in every interval of
  ``--interval`` seconds (the idle ones cost nothing) is written into a real
  journal (a Store in a temporary directory, as the writer process commits
  them: one transaction per interval); bytes per row = growth of the file (pages
  in use) / rows; per day = that x rows per day.  Target: < 50 MB/day for 1,000
  processes, 100 busy, at 60 s.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from _bench import median, require_root, run_main, sleeping_threads, table

from pytaskstats.daemon.journal import Store
from pytaskstats.daemon.namespaces import NsTracker
from pytaskstats.daemon.sampler import ProcSample, sample_values
from pytaskstats.daemon.sampling import SLICE_S, Sampling
from pytaskstats.extproto import SAMPLE_DELTAS
from pytaskstats.kernel import Connection
from pytaskstats.procfs import list_tasks

TARGET_MB_DAY = 50.0
def bare_scan(conn: Connection) -> tuple[float, float, int]:
    """Wall s, CPU s and threads of one listing + pipelined query of every thread."""
    w0, c0 = time.perf_counter(), time.process_time()
    tids = [tid for _, tid in list_tasks()]
    conn.query_many("pid", tids)
    return time.perf_counter() - w0, time.process_time() - c0, len(tids)


def sampled_scan(sampling: Sampling) -> tuple[float, float, float, float]:
    """Wall s, CPU s of one whole sample as taskstatsd takes it, and its longest
    step (wall s, CPU s)."""
    sampling._next = 0.0  # due now (the benchmark drives the schedule)
    w0, c0 = time.perf_counter(), time.process_time()
    longest = longest_cpu = 0.0
    taken = sampling.counters["samples_taken"]
    while sampling.counters["samples_taken"] == taken:
        s0, p0 = time.perf_counter(), time.process_time()
        sampling.step()
        longest = max(longest, time.perf_counter() - s0)
        longest_cpu = max(longest_cpu, time.process_time() - p0)
    return time.perf_counter() - w0, time.process_time() - c0, longest, longest_cpu


def scan_costs(threads: int, scans: int) -> list[str]:
    """One table row: the sample and the bare scan with ``threads`` helper threads."""
    helper = sleeping_threads(threads)
    rows: list[Any] = []
    try:
        with Connection() as conn:
            sampling = Sampling(conn, 60.0, rows.extend, NsTracker())
            sampled_scan(sampling)  # the baseline (no rows)
            bare = [bare_scan(conn) for _ in range(scans)]
            sampled = [sampled_scan(sampling) for _ in range(scans)]
    finally:
        assert helper.stdin is not None
        helper.stdin.close()
        helper.wait()
    tasks = bare[-1][2]
    wall, cpu = median([s[0] for s in sampled]), median([s[1] for s in sampled])
    return [f"{threads} (+{tasks - threads} others)", f"{median([b[0] for b in bare]) * 1e3:.1f}",
            f"{median([b[1] for b in bare]) * 1e3:.1f}", f"{wall * 1e3:.1f}", f"{cpu * 1e3:.1f}",
            f"{median([s[2] for s in sampled]) * 1e3:.1f}",
            f"{median([s[3] for s in sampled]) * 1e3:.1f}", f"{cpu / 60 * 100:.3f}%",
            f"{len(rows) / scans:.0f}"]


def simulated_rows(processes: int, busy: int, interval_s: int, at_ns: int,
                   rng: random.Random) -> list[tuple[Any, ...]]:
    """One interval's rows: the ``busy`` processes (of ``processes``) with deltas of
    the usual sizes (CPU ms, some waits, some IO; unmeasured kinds None)."""
    out = []
    for tgid in rng.sample(range(1000, 1000 + processes), busy):
        deltas: list[int | None] = []
        for name in SAMPLE_DELTAS:
            if name.startswith(("irq", "wpcopy")):
                deltas.append(None if rng.random() < 0.5 else 0)
            elif name.endswith("_total"):
                deltas.append(rng.randrange(0, 50_000_000) if rng.random() < 0.4 else 0)
            elif name.endswith(("bytes", "char")):
                deltas.append(rng.randrange(0, 1 << 22) if rng.random() < 0.6 else 0)
            else:
                deltas.append(rng.randrange(0, 5000))
        sample = ProcSample(at_ns, interval_s * 1_000_000_000, tgid, f"proc{tgid % 300}",
                            1000 + tgid % 7, 1000, 1_700_000_000 + tgid, 1 + tgid % 8, False,
                            tuple(deltas), rng.randrange(1000, 4_000_000))
        out.append(sample_values(sample, f"/system.slice/svc{tgid % 40}.service",
                                 (True, "", None), tgid))
    return out


def used_bytes(store: Store) -> int:
    """Bytes of the journal's pages in use (after a checkpoint)."""
    conn = store._conn  # (the benchmark measures the writer's file)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page)


def growth(processes: int, busy: int, interval_s: int, hours: float) -> tuple[float, int]:
    """Bytes per sample row in a real journal, and the rows written."""
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "journal.sqlite3"))
        before = used_bytes(store)
        start = time.time_ns()
        written = 0
        for i in range(int(hours * 3600 / interval_s)):
            rows = simulated_rows(processes, busy, interval_s,
                                  start + i * interval_s * 1_000_000_000, rng)
            written += store.insert_samples(rows)
        store.maintain(time.monotonic() + 3600)
        after = used_bytes(store)
        store.close()
    return (after - before) / written, written


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1000, 10000],
                        help="helper threads per measurement (1000 10000)")
    parser.add_argument("--scans", type=int, default=5, help="samples per measurement (5)")
    parser.add_argument("--processes", type=int, default=1000, help="simulated host (1000)")
    parser.add_argument("--busy", type=int, default=100, help="busy per interval (100)")
    parser.add_argument("--interval", type=int, default=60, help="sample seconds (60)")
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours (1)")
    args = parser.parse_args(argv)
    require_root()
    print(f"sampling cost per interval ({os.cpu_count()} CPUs; a step reads for about "
          f"{SLICE_S * 1e3:g} ms, then the loop goes on)\n")
    rows = [scan_costs(n, args.scans) for n in args.threads]
    print(table(["threads", "bare scan ms", "bare CPU ms", "sample ms", "sample CPU ms",
                 "longest step ms", "its CPU ms", "CPU at 60 s", "rows/sample"], rows))
    per_row, written = growth(args.processes, args.busy, args.interval, args.hours)
    per_day = per_row * args.busy * 86400 / args.interval / 1e6
    print(f"\njournal growth: {written} rows written ({args.hours:g} h simulated: "
          f"{args.processes} processes, {args.busy} busy, every {args.interval} s)\n")
    print(table(["bytes per row", "MB per day", "target", "met"],
                [[f"{per_row:.0f}", f"{per_day:.1f}", f"< {TARGET_MB_DAY:g}",
                  "yes" if per_day < TARGET_MB_DAY else "NO"]]))


if __name__ == "__main__":
    run_main(main)
