"""Per-task cost of a full scan as the thread count grows, side by side with the C floor.

Run as root: ``python benchmarks/scan_scaling.py`` (``--help`` for options; ~1 min).

For each thread count (default 100, 1,000, 5,000 and 10,000) a helper process starts
that many sleeping threads (they wait on one Event; 64 KiB stacks); every thread of
the machine is then listed once and scanned, interleaved round by round (medians of
``--reps``):

* C floor: benchmarks/c_floor.c, one GET per send (timed inside the C program);
* [info] C, 128 requests per send;
* pytaskstats pipelined ``Client.pids()`` to the kernel;
* pytaskstats pipelined ``Client.pids()`` through a taskstatsd of its own
  (tests/daemon_util.RunningDaemon, ``--no-cgroups`` as the other daemon benchmarks
  may run it).

Both pytaskstats contenders read every field of every record they time
(``_bench.read_fields``).  The last table gives each contender's cost at every
count relative to its own cost at the first count (the "scan cost" target: within
+-15% from 100 to 10,000 threads).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

from _bench import (
    build_c,
    bulk_scan,
    family_id,
    interleave,
    median,
    require_root,
    run_daemon_main,
    running_daemon,
    sleeping_threads,
    spread,
    table,
    task_ids,
    timed,
)
from scan import C_WINDOW, c_floor

from pytaskstats import Client

TARGET_DRIFT = 0.15  # per-task cost at the largest count vs the smallest, either way
def measure(count: int, exe: str, family: int, socket_path: str,
            args: argparse.Namespace) -> tuple[int, dict[str, list[float]]]:
    """(threads scanned, ns/task per contender and round) with ``count`` sleeping."""
    helper = sleeping_threads(count)
    try:
        ids = task_ids()
        repeat = max(1, math.ceil(args.queries / len(ids)))
        with Client("kernel") as kernel, Client("daemon", socket_path=socket_path) as daemon:
            contenders: list[tuple[str, Callable[[], float]]] = [
                ("C floor", c_floor(exe, family, ids, repeat)),
                (f"[info] C, {C_WINDOW} per send", c_floor(exe, family, ids, repeat, C_WINDOW)),
                ("pids() kernel", timed(bulk_scan(kernel.pids, ids, repeat))),
                ("pids() via taskstatsd", timed(bulk_scan(daemon.pids, ids, repeat))),
            ]
            for _, run in contenders:  # warm-up
                run()
            return len(ids), interleave(contenders, args.reps)
    finally:
        if helper.stdin:
            helper.stdin.close()
        helper.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="100,1000,5000,10000",
                        help="sleeping thread counts (default 100,1000,5000,10000)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--queries", type=int, default=20000,
                        help="queries per round per contender, at least (default 20000)")
    args = parser.parse_args()
    require_root()
    counts = [int(c) for c in args.counts.split(",")]
    exe, family = str(build_c("c_floor")), family_id()
    print(f"scan cost by thread count: Python {sys.version.split()[0]}; medians of "
          f"{args.reps} interleaved rounds, >= {args.queries} queries per contender and round")
    print()
    per: dict[int, dict[str, float]] = {}
    rows = []
    t0 = time.perf_counter()
    with running_daemon(no_cgroups=True) as (_, socket_path, _status):
        for count in counts:
            scanned, results = measure(count, exe, family, socket_path, args)
            per[count] = {name: median(v) for name, v in results.items()}
            floor = per[count]["C floor"]
            for name, values in results.items():
                rows.append([f"{count:,}", f"{scanned:,}", name, f"{per[count][name] / 1000:.2f}",
                             spread(values), f"{per[count][name] / floor:.2f}x"])
    print(table(["sleeping", "scanned", "contender", "us/task", "min/max", "vs C floor"], rows))
    print()
    first, last = counts[0], counts[-1]
    drift = []
    for name in per[first]:
        change = per[last][name] / per[first][name] - 1
        target = (f"within +-{TARGET_DRIFT:.0%}" if not name.startswith(("C", "[info]"))
                  else "")
        drift.append([name, *(f"{per[c][name] / per[first][name]:.2f}x" for c in counts),
                      f"{change:+.0%}", target])
    print(table(["contender", *(f"{c:,}" for c in counts), f"{first:,} -> {last:,}",
                 "target"], drift))
    print()
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    run_daemon_main(main, "scan_scaling")
