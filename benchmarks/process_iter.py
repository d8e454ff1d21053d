"""Cost per process of listing every process with its name, CPU time and start time:
``pytaskstats.Client.process_iter`` against ``psutil.process_iter``.

Run as root (the kernel contender needs CAP_NET_ADMIN): ``python benchmarks/process_iter.py``
(``--help`` for options).  Needs psutil (``pip install -e '.[bench]'``).

Contenders, interleaved round by round (medians of ``--reps`` rounds), each listing
every process of the machine (``--procs`` sleepers are started first, so there are
enough) with the same three attributes:

* pytaskstats kernel: ``Client("kernel").process_iter(["name", "cpu_time",
  "start_time"])``: per process, the leader's and the group's records, pipelined,
  fully decoded (every field of the table, delays included);
* pytaskstats procfs: the same through ``Client("procfs")`` (/proc: stat, status, io,
  schedstat of the leader and of every thread);
* psutil: ``psutil.process_iter(["name", "cpu_times", "create_time"])`` with its
  process cache cleared each round (a first listing, as the others are).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _bench import interleave, median, require_root, run_main, spread, table

from pytaskstats import Client

ATTRS = ["name", "cpu_time", "start_time"]


def ours(client: Client) -> Callable[[], float]:
    """ns per process of one full process_iter."""
    def run() -> float:
        t0 = time.perf_counter_ns()
        count = sum(1 for _ in client.process_iter(ATTRS))
        return (time.perf_counter_ns() - t0) / count
    return run


def theirs(psutil: Any) -> Callable[[], float]:
    """ns per process of one full psutil.process_iter, cache cleared."""
    def run() -> float:
        psutil.process_iter.cache_clear()
        t0 = time.perf_counter_ns()
        count = sum(1 for _ in psutil.process_iter(["name", "cpu_times", "create_time"]))
        return (time.perf_counter_ns() - t0) / count
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--procs", type=int, default=500,
                        help="sleeping processes started first (default 500)")
    args = parser.parse_args()
    require_root()
    try:
        import psutil  # noqa: PLC0415 - optional dependency
    except ImportError:
        sys.exit("psutil is not installed: pip install psutil (or pip install -e '.[bench]')")
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(args.procs)]
    try:
        with Client("kernel") as kernel, Client("procfs") as procfs:
            contenders = [("pytaskstats process_iter (kernel)", ours(kernel)),
                          ("pytaskstats process_iter (procfs)", ours(procfs)),
                          ("psutil.process_iter", theirs(psutil))]
            for _, run in contenders:  # warm-up round, not counted
                run()
            count = sum(1 for _ in kernel.process_iter(["pid"]))
            t0 = time.perf_counter()
            results = interleave(contenders, args.reps)
            wall = time.perf_counter() - t0
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    base = median(results["psutil.process_iter"])
    rows = [[name, f"{median(results[name]) / 1000:.1f}", spread(results[name]),
             f"{median(results[name]) / base:.2f}x"] for name, _ in contenders]
    print(f"{count} processes listed with name, CPU time and start time; {args.reps} "
          f"interleaved rounds in {wall:.1f} s; Python {sys.version.split()[0]}, "
          f"psutil {psutil.__version__}")
    print()
    print(table(["contender", "us/process", "min/max", "vs psutil"], rows))


if __name__ == "__main__":
    run_main(main)
