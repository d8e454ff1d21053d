"""taskstatsd's live ingest: fork storms against a running daemon; journaled exits/s
from its counters over time, and what was lost.

Run as root: ``python benchmarks/live_ingest.py`` (``--help`` for options;
``--quick`` for one storm).  It starts a taskstatsd of its own
(tests/daemon_util.RunningDaemon) and runs ``--storms`` storms (fork_storm.c) of
``--storm-forks`` exits against it.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Sequence
from typing import NamedTuple

from _bench import (
    Status,
    build_c,
    daemon_config,
    daemon_cpu,
    finish,
    header,
    kill,
    lost,
    median,
    require_root,
    run_daemon_main,
    running_daemon,
    table,
)

from pytaskstats.kernel import possible_cpus

POLL = 0.1  # seconds between status samples during a live storm
QUIET = 1.0  # seconds without a new journaled record after the storm: it is over


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
                out = finish(proc, 10)
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
            out = finish(proc, 10)
        kill(proc)
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


def print_live(storms: list[Storm], args: argparse.Namespace, jobs: int,
               final: dict[str, int]) -> None:
    print("== 2. live ingest: a running taskstatsd under fork storms ==")
    print(f"{len(storms)} storms of {args.storm_forks:,} forks (fork_storm.c, {jobs} workers) "
          f"against one taskstatsd ({daemon_config(args.no_cgroups)}); counters sampled every "
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


def add_storm_options(parser: argparse.ArgumentParser) -> None:
    """The storm options (shared with daemon_load.py, whose memory row follows storms)."""
    parser.add_argument("--storm-forks", type=int, default=20000,
                        help="forks per live storm (default 20000)")
    parser.add_argument("--storms", type=int, default=None,
                        help="live storms (default 3; --quick 1)")
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="bound of any one measurement, seconds (default 60)")
    parser.add_argument("--no-cgroups", action="store_true",
                        help="run the daemon with --no-cgroups (no /proc/TGID/cgroup read "
                        "per exit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one storm")
    add_storm_options(parser)
    args = parser.parse_args()
    if args.storms is None:
        args.storms = 1 if args.quick else 3
    require_root()
    jobs = len(possible_cpus())
    t0 = time.perf_counter()
    header("taskstatsd live ingest", args.quick)
    build_c("fork_storm", static=True)
    with running_daemon(args.no_cgroups) as (pid, _, status):
        time.sleep(1.0)  # start-up done, heap settled
        status.counters()
        storms = [live_storm(pid, status, forks=args.storm_forks, jobs=jobs, seconds=10.0,
                             time_limit=args.time_limit) for _ in range(args.storms)]
        print_live(storms, args, jobs, status.counters())
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    run_daemon_main(main, "live_ingest.py")
