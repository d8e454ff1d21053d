"""taskstatsd's CPU time and memory, idle and under paced exit rates, its journal
writer process included.

Run as root: ``python benchmarks/daemon_load.py`` (``--help`` for options;
``--quick`` for shorter windows).  It starts a taskstatsd of its own
(tests/daemon_util.RunningDaemon), measures it idle and under paced exit rates (a
small C generator, benchmarks/fork_rate.c), then once more after ``--storms``
fork storms (live_ingest.py's, whose table is not printed here).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from _bench import (
    CLK_TCK,
    REPO,
    Status,
    build_c,
    daemon_config,
    daemon_cpu,
    finish,
    header,
    kill,
    require_root,
    run_daemon_main,
    running_daemon,
    table,
    writer_pid,
)
from live_ingest import add_storm_options, live_storm

from pytaskstats.kernel import possible_cpus

TARGET_IDLE_CPU = 0.5  # % of one core
TARGET_RSS_MB = 40.0


def _rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


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
            out = finish(proc, window + 10)
            if "forks" in out:
                generated = int(out["forks"]) / (int(out["elapsed_ns"]) / 1e9)
    finally:
        kill(proc)
    return Load(name, t1 - t0, generated, c1["received"] - c0["received"], cpu1 - cpu0,
                main1 - main0, writer1 - writer0, memory)


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
    print(f"the same taskstatsd ({daemon_config(args.no_cgroups)}), measured before the storms; "
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorter windows, one storm")
    parser.add_argument("--idle-seconds", type=float, default=None,
                        help="idle window (default 10; --quick 3)")
    parser.add_argument("--rate-seconds", type=float, default=None,
                        help="window per paced rate (default 4; --quick 2)")
    parser.add_argument("--rates", type=int, nargs="*", default=[1000, 5000],
                        help="paced exit rates per second (default 1000 5000)")
    add_storm_options(parser)
    args = parser.parse_args()
    for name, full, short in (("storms", 3, 1), ("idle_seconds", 10.0, 3.0),
                              ("rate_seconds", 4.0, 2.0)):
        if getattr(args, name) is None:
            setattr(args, name, short if args.quick else full)
    require_root()
    jobs = len(possible_cpus())
    t0 = time.perf_counter()
    header("taskstatsd CPU and memory", args.quick)
    rate_exe = build_c("fork_rate", static=True)
    build_c("fork_storm", static=True)
    with running_daemon(args.no_cgroups) as (pid, _, status):
        t_start = time.monotonic()
        time.sleep(1.0)  # start-up done, heap settled
        status.counters()
        loads = [load_window(pid, status, None, rate=0, window=args.idle_seconds,
                             name="idle")]
        for rate in args.rates:
            loads.append(load_window(pid, status, rate_exe, rate=rate, window=args.rate_seconds,
                                     name=f"~{rate:,} exits/s"))
        for _ in range(args.storms):
            live_storm(pid, status, forks=args.storm_forks, jobs=jobs, seconds=10.0,
                       time_limit=args.time_limit)
        after_storms = memory_mb(pid)
        status.counters()
        print_loads(loads, after_storms, rate_exe, time.monotonic() - t_start, args)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    run_daemon_main(main, "daemon_load.py")
