"""The CPU cost of ``taskstats top`` itself, with 1,000 extra threads on the machine.

Run as root: ``python benchmarks/top_cost.py`` (~45 s; ``--help`` for options).

A helper process starts ``--threads`` sleeping threads.  Then two measurements:

* **in-process, steady state**: the sampler, model, view and text rendering of
  ``taskstats top`` (no curses) refresh every ``--interval`` seconds for
  ``--seconds``, waiting between refreshes as batch mode does (draining the exit
  listener every 0.5 s).  CPU = this process's user+system time
  (``getrusage``) over the wall time, in % of one core, after a baseline sample.
  Each refresh's phases are timed (``perf_counter``); the table gives medians.
* **end to end**: ``python -m pytaskstats top -b -d INTERVAL -n N > /dev/null`` as
  a child process, CPU from ``wait4``'s rusage over its wall time; this includes
  interpreter start-up, imports and the listener's registration.

Target: below 3% of one core at a 2 s refresh with 1,000 threads.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import time

from _bench import median, require_root, sleeping_threads, table

from pytaskstats import Client
from pytaskstats.top.batch import info, wait
from pytaskstats.top.model import Model
from pytaskstats.top.render import text_block
from pytaskstats.top.sampler import Sampler
from pytaskstats.top.view import ViewState, view

TARGET_PCT = 3.0
def cpu_s() -> float:
    """This process's user + system CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def in_process(interval: float, seconds: float) -> tuple[float, dict[str, list[float]], int]:
    """CPU % of one core, per-phase seconds per refresh, tasks in the last sample."""
    phases: dict[str, list[float]] = {}
    state = ViewState(interval=interval)
    sink = io.StringIO()
    with Client("kernel") as client:
        sampler, model = Sampler(client), Model()
        try:
            model.update(sampler.sample())
            start_wall, start_cpu = time.monotonic(), cpu_s()
            due, tasks = start_wall, 0
            while time.monotonic() - start_wall < seconds:
                due = max(due + interval, time.monotonic())
                wait(sampler, due)
                tasks = refresh(sampler, model, state, sink, phases)
            used, wall = cpu_s() - start_cpu, time.monotonic() - start_wall
        finally:
            sampler.close()
    return used / wall * 100, phases, tasks


def refresh(sampler: Sampler, model: Model, state: ViewState, sink: io.StringIO,
            phases: dict[str, list[float]]) -> int:
    """One refresh as batch mode does it, each phase timed; returns the task count."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    smp = sampler.sample()
    t1 = time.perf_counter()
    frame = model.update(smp)
    rows = view(frame, state)
    t2 = time.perf_counter()
    sink.seek(0)
    sink.write(text_block(frame, rows, info(sampler), state))
    t3 = time.perf_counter()
    for name, value in sampler.costs.items():
        phases.setdefault(f"sample: {name}", []).append(value)
    phases.setdefault("model + view (sort)", []).append(t2 - t1)
    phases.setdefault("render text", []).append(t3 - t2)
    phases.setdefault("whole refresh (wall)", []).append(t3 - t0)
    phases.setdefault("whole refresh (CPU)", []).append(time.process_time() - cpu0)
    return frame.tasks


def end_to_end(interval: float, seconds: float) -> tuple[float, float]:
    """CPU % of one core of the real command, and its wall time."""
    count = max(1, round(seconds / interval))
    start = time.monotonic()
    with open(os.devnull, "w") as null:
        proc = subprocess.Popen([sys.executable, "-m", "pytaskstats", "--backend", "kernel",
                                 "top", "-b", "-d", str(interval), "-n", str(count)],
                                stdout=null)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"taskstats top failed with status {proc.returncode}")
    return (usage.ru_utime + usage.ru_stime) / wall * 100, wall


def main() -> None:
    """Parse options, start the helper, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1000, help="helper threads (1000)")
    parser.add_argument("--interval", type=float, default=2.0, help="refresh seconds (2)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement (20)")
    parser.add_argument("--skip-cli", action="store_true", help="skip the end-to-end run")
    args = parser.parse_args()
    require_root()
    with sleeping_threads(args.threads) as helper:
        assert helper.stdin is not None
        try:
            report(args)
        finally:
            helper.stdin.close()
            helper.wait()


def report(args: argparse.Namespace) -> None:
    """Run both measurements and print them."""
    pct, phases, tasks = in_process(args.interval, args.seconds)
    refreshes = len(phases["whole refresh (wall)"])
    print(f"taskstats top cost: {tasks} tasks on the machine ({args.threads} helper threads), "
          f"refresh every {args.interval:g} s, {refreshes} refreshes, {os.cpu_count()} CPUs\n")
    rows = [[name, f"{median(v) * 1e3:.2f}", f"{max(v) * 1e3:.2f}"]
            for name, v in phases.items()]
    print(table(["per refresh", "median ms", "max ms"], rows))
    cpu_per = median(phases["whole refresh (CPU)"])
    print(f"\nper task: {cpu_per / tasks * 1e6:.1f} us CPU per refresh")
    lines = [["in-process, steady state", f"{pct:.2f}%", f"< {TARGET_PCT:g}%",
              "yes" if pct < TARGET_PCT else "NO"]]
    if not args.skip_cli:
        cli_pct, wall = end_to_end(args.interval, args.seconds)
        lines.append([f"end to end, `taskstats top -b` ({wall:.0f} s, incl. start-up)",
                      f"{cli_pct:.2f}%", f"< {TARGET_PCT:g}%",
                      "yes" if cli_pct < TARGET_PCT else "NO"])
    print()
    print(table(["CPU of one core", "measured", "target", "met"], lines))


if __name__ == "__main__":
    main()
