"""Per-task cost of a full /proc scan of all threads: pytaskstats' ProcSource against psutil.

Run as any user: ``python benchmarks/procfs_scan.py`` (``--help`` for options).
Needs psutil (``pip install psutil``).

Contenders, interleaved round by round (medians of ``--reps`` rounds), over the
same thread id list:

* pytaskstats ``ProcSource().pids(ids)``: full TaskStats records from each
  thread's stat, status, io and schedstat;
* pytaskstats ``ProcSource().pid(i)`` one by one (each call also reads the
  delay accounting sysctl);
* psutil: ``Process(i)``, then under ``oneshot()`` the same fields as far as psutil
  has them: ``name``, ``ppid``, ``cpu_times`` (utime, stime, blkio ticks),
  ``create_time``, ``nice``, ``num_ctx_switches``, ``uids``, ``gids`` and
  ``io_counters``.  psutil has no page faults, memory peaks, policy or schedstat.

The "[info]" row is not a contender: bare ``os.open``/``os.read``/``os.close`` of
the four files ProcSource reads, without parsing: the floor of its approach.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from _bench import bulk_scan, interleave, median, run_main, single_scan, spread, table, timed

from pytaskstats.procfs import ProcSource

TARGET_VS_PSUTIL = 2.0  # psutil's time / ProcSource.pids()'s
FILES = ("stat", "status", "io", "schedstat")


def psutil_scan(psutil: Any, ids: list[int], repeat: int) -> Callable[[], int]:
    """psutil, per thread id, the fields it shares with a TaskStats record."""
    no_such, denied = (psutil.NoSuchProcess, psutil.ZombieProcess), psutil.AccessDenied

    def one(i: int) -> None:
        proc = psutil.Process(i)
        with proc.oneshot():
            proc.name()
            proc.ppid()
            proc.cpu_times()
            proc.create_time()
            proc.nice()
            proc.num_ctx_switches()
            proc.uids()
            proc.gids()
            try:  # noqa: SIM105 - as above
                proc.io_counters()
            except denied:
                pass  # another user's process: ProcSource leaves these fields None

    def scan() -> int:
        for _ in range(repeat):
            for i in ids:
                try:  # noqa: SIM105 - as above
                    one(i)
                except no_such:
                    pass
        return repeat * len(ids)

    return scan


def bare_reads(root: str, ids: list[int], repeat: int) -> Callable[[], int]:
    """open/read/close of the four files, no parsing: the floor."""
    flags = os.O_RDONLY | os.O_CLOEXEC

    def scan() -> int:
        for _ in range(repeat):
            for i in ids:
                base = f"{root}/{i}/task/{i}/"
                for name in FILES:
                    try:
                        fd = os.open(base + name, flags)
                    except OSError:
                        continue
                    try:  # noqa: SIM105 - as above
                        os.read(fd, 8192)
                    except OSError:
                        pass
                    os.close(fd)
        return repeat * len(ids)

    return scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--tasks", type=int, default=4000,
                        help="task reads per round per contender, at least (default 4000)")
    args = parser.parse_args()
    try:
        import psutil  # noqa: PLC0415 - optional dependency
    except ImportError:
        sys.exit("psutil is not installed: pip install psutil (or pip install -e '.[bench]')")

    source = ProcSource()
    ids = [tid for _, tid in source.all_tasks()]
    repeat = max(1, math.ceil(args.tasks / len(ids)))
    bulk = "pytaskstats ProcSource.pids()"
    contenders: list[tuple[str, Callable[[], float]]] = [
        (bulk, timed(bulk_scan(source.pids, ids, repeat))),
        ("pytaskstats ProcSource.pid() one by one", timed(single_scan(source.pid, ids, repeat))),
        ("psutil Process() + oneshot(), same fields", timed(psutil_scan(psutil, ids, repeat))),
        ("[info] bare open/read/close of the 4 files", timed(bare_reads("/proc", ids, repeat))),
    ]
    for _, run in contenders:  # warm-up round, not counted
        run()
    t0 = time.perf_counter()
    results = interleave(contenders, args.reps)
    wall = time.perf_counter() - t0

    ps = median(results[contenders[2][0]])
    rows = [[name, f"{median(results[name]) / 1000:.2f}", spread(results[name]),
             f"{median(results[name]) / ps:.2f}x"] for name, _ in contenders]
    gone = sum(not os.path.exists(f"/proc/{i}/task/{i}") for i in ids)
    print(f"full /proc scan of {len(ids)} threads ({gone} gone since listed) as uid "
          f"{os.getuid()}; {args.reps} interleaved rounds in {wall:.1f} s; per round "
          f"{repeat} x {len(ids)} = {repeat * len(ids)} task reads per contender; "
          f"Python {sys.version.split()[0]}, psutil {psutil.__version__}")
    print()
    print(table(["contender", "us/task", "min/max", "vs psutil"], rows))
    print()
    print(table(["speedup", "measured", "target"],
                [["ProcSource.pids() vs psutil", f"{ps / median(results[bulk]):.2f}x",
                  f">= {TARGET_VS_PSUTIL:.1f}x"]]))


if __name__ == "__main__":
    run_main(main)
