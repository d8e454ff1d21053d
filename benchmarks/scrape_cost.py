"""What the metrics exporter costs per scrape and per live sample, at 1,000 cgroups and
10,000 live tasks.

Run: ``python benchmarks/scrape_cost.py`` (``--help`` for options; any user, ~15 s).
``--live`` (root) adds a real live sample of this machine, with ``--threads`` extra
sleeping threads so that the sample covers about 10,000 real tasks.

The model part is synthetic: ``--tasks`` records spread over ``--cgroups`` cgroup
paths and 20 command names (8 command groups) are fed to an
:class:`~pytaskstats.metrics.aggregate.Aggregator`, their counters growing from
round to round.  Timed, interleaved round by round (medians of ``--reps``):

* scrape: ``generate_latest`` of a private registry holding the collector
  (snapshot + fresh families + text), wall and CPU time, with the series cap
  raised to ``--cgroups`` (every cgroup exported) and at the default 500;
* sample apply: ``on_sample`` of all the tasks (what a live sample adds to the
  bulk query);
* exit: ``on_exit`` per record, for never-sampled tasks;
* process_*: ``generate_latest`` of a registry holding only prometheus_client's
  ProcessCollector (what the endpoint adds for its own process), as a share of the
  capped scrape.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from _bench import interleave, median, sleeping_threads, spread, table
from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.registry import CollectorRegistry

from pytaskstats import Client, ExitRecord, TaskStats
from pytaskstats.metrics.aggregate import VALUE_FIELDS, Aggregator, Live, parse_groups
from pytaskstats.metrics.collector import TaskstatsCollector
from pytaskstats.metrics.live import Sampler, list_tasks

GROUPS = parse_groups([f"g{i}=^cmd{i}$" for i in range(8)])


def record(tid: int, step: int) -> TaskStats:
    """A plausible per-task record whose counters grow with ``step``."""
    v = (tid % 97 + 1) * (step + 1)
    values = dict.fromkeys(VALUE_FIELDS, 0) | {
        "ac_utime": v * 1000, "ac_stime": v * 300, "cpu_count": v,
        "cpu_delay_total": v * 50_000, "blkio_count": v // 3, "blkio_delay_total": v * 20_000,
        "freepages_count": v // 50, "freepages_delay_total": v * 900,
        "read_bytes": v * 4096, "write_bytes": v * 1024}
    return TaskStats(version=17, ac_pid=tid, ac_tgid=tid, ac_ppid=1, ac_comm=f"cmd{tid % 20}",
                     ac_etime=3_600_000_000, **values)  # type: ignore[arg-type]


class Setup:
    """An aggregator holding ``tasks`` live tasks in ``cgroups`` cgroups."""

    def __init__(self, cgroups: int, tasks: int, max_series: int) -> None:
        self.cgroups, self.tasks, self.step = cgroups, tasks, 0
        self.agg = Aggregator(max_series=max_series, groups=GROUPS)
        self.registry = CollectorRegistry()
        self.registry.register(TaskstatsCollector(self.agg))
        self.agg.on_sample(self.lives(), time.monotonic_ns())
        self.size = len(generate_latest(self.registry))

    def lives(self) -> list[Live]:
        self.step += 1
        return [Live(tid, tid, record(tid, self.step),
                     f"/system.slice/unit{tid % self.cgroups}.service")
                for tid in range(1000, 1000 + self.tasks)]

    def scrape(self, cpu: list[float]) -> float:
        """One scrape; returns wall ms and appends CPU ms to ``cpu``."""
        return scrape_ms(self.registry, cpu)

    def apply(self) -> float:
        """One live sample applied (records built outside the timing); ms."""
        lives = self.lives()
        t0 = time.perf_counter()
        self.agg.on_sample(lives, time.monotonic_ns())
        return (time.perf_counter() - t0) * 1e3


def scrape_ms(registry: CollectorRegistry, cpu: list[float]) -> float:
    """One scrape of ``registry``; returns wall ms and appends CPU ms to ``cpu``."""
    c0, t0 = time.process_time(), time.perf_counter()
    generate_latest(registry)
    wall = time.perf_counter() - t0
    cpu.append((time.process_time() - c0) * 1e3)
    return wall * 1e3


def exits(n: int) -> Callable[[], float]:
    """``on_exit`` of ``n`` never-sampled tasks; us per exit."""
    records = [ExitRecord(task=record(tid, 1), pid=tid, tgid=tid) for tid in range(n)]

    def run() -> float:
        agg = Aggregator(groups=GROUPS)
        t0 = time.perf_counter()
        for i, rec in enumerate(records):
            agg.on_exit(rec, f"/system.slice/unit{i % 1000}.service")
        return (time.perf_counter() - t0) / n * 1e6
    return run


def live_sample(threads: int, reps: int) -> tuple[list[str], float]:
    """A real live sample of this machine (with ``threads`` extra threads): the table
    row and the median CPU ms."""
    child = sleeping_threads(threads)
    try:
        with Client("kernel") as client:
            agg = Aggregator()
            sampler = Sampler(agg, client.pids)
            walls, cpus, listing = [], [], []
            for _ in range(reps):
                c0, t0 = time.process_time(), time.perf_counter()
                list_tasks()
                listing.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                assert sampler.sample()
                walls.append((time.perf_counter() - t0) * 1e3)
                cpus.append((time.process_time() - c0) * 1e3)
            n = agg.snapshot().live_tasks
    finally:
        child.kill()
        child.wait()
    row = [f"[live] real sample, {n:,} tasks", f"{median(walls):.1f}", spread(walls),
           f"{median(cpus):.1f}", f"{median(walls) / n * 1e3:.1f} us/task "
           f"(of which listing /proc: {median(listing):.1f} ms)"]
    return row, median(cpus)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cgroups", type=int, default=1000)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--interval", type=float, default=15.0,
                   help="scrape and sample interval for the CPU share (default 15 s)")
    p.add_argument("--live", action="store_true", help="also a real live sample (root)")
    p.add_argument("--threads", type=int, default=10_000,
                   help="extra sleeping threads during --live (default 10,000)")
    args = p.parse_args()
    full = Setup(args.cgroups, args.tasks, max_series=args.cgroups)
    capped = Setup(args.cgroups, args.tasks, max_series=500)
    process = CollectorRegistry()
    ProcessCollector(registry=process)
    cpu: dict[str, list[float]] = {"full": [], "capped": [], "process": []}
    results = interleave([
        ("scrape", lambda: full.scrape(cpu["full"])),
        ("scrape, cap 500", lambda: capped.scrape(cpu["capped"])),
        ("process", lambda: scrape_ms(process, cpu["process"])),
        ("sample apply", full.apply),
        ("exit", exits(args.tasks)),
    ], args.reps)
    print(f"{args.tasks:,} live tasks in {args.cgroups:,} cgroups, 8 command groups; "
          f"{args.reps} rounds, medians")
    rows = [
        [f"scrape, {len(full.agg.cgroups):,} cgroup labels ({full.size / 1e6:.2f} MB)",
         f"{median(results['scrape']):.1f}", spread(results["scrape"]),
         f"{median(cpu['full']):.1f}", ""],
        [f"scrape, cap 500: {len(capped.agg.cgroups)} labels ({capped.size / 1e6:.2f} MB)",
         f"{median(results['scrape, cap 500']):.1f}", spread(results["scrape, cap 500"]),
         f"{median(cpu['capped']):.1f}", ""],
        [f"sample apply, {args.tasks:,} tasks", f"{median(results['sample apply']):.1f}",
         spread(results["sample apply"]), "",
         f"{median(results['sample apply']) / args.tasks * 1e3:.2f} us/task"],
        ["exit (on_exit)", "", spread(results["exit"]), "",
         f"{median(results['exit']):.2f} us/exit"],
        ["process_* (ProcessCollector)", f"{median(results['process']):.2f}",
         spread(results["process"]), f"{median(cpu['process']):.2f}",
         f"{median(results['process']) / median(results['scrape, cap 500']):.2%} of the "
         "cap-500 scrape"],
    ]
    live_cpu: float | None = None
    if args.live:
        if os.geteuid() != 0:
            sys.exit("--live needs root (the kernel's TASKSTATS queries)")
        row, live_cpu = live_sample(args.threads, args.reps)
        rows.append(row)
    print(table(["", "wall ms", "min/max", "CPU ms", "per unit"], rows))
    scrape = median(cpu["full"])
    for what, sample in (("sample apply (synthetic)", median(results["sample apply"])),
                         ("real live sample", live_cpu)):
        if sample is not None:
            per = scrape + sample
            print(f"one scrape (1,000 labels) + one {what} every {args.interval:g} s: "
                  f"{per:.0f} ms CPU = {per / args.interval / 10:.2f}% of a core")


if __name__ == "__main__":
    main()
