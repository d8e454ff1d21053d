"""The time ``taskstats run --trace`` adds to a run of many exit records, side by side
with what ``run --json`` spends on its output (no kernel needed).

``python benchmarks/trace_cost.py [--records 100000] [--reps 3]``

Records: ``--records`` exit records shaped like a long parallel build (copies of the
recorded ``make -j2`` of tests/fixtures/report/make_j2.json with new pids, one tree
under one root: see report_size.py).  Both contenders start from what ``run`` holds
when the command has exited (the records, their arrival times, ``summarize``'s
processes) and go through the command's own functions:

- baseline ``run --json``: ``format_json`` and the compact JSON text to a file;
- ``--trace``: ``report_data`` (build_run: lifetimes, plausibility), ``critical_path``,
  ``trace_text`` (build_trace and the compact JSON) and ``report.save`` to a file;
- [info] ``critical_path`` alone, on the same processes.

Rounds interleave the contenders (rotating who goes first); medians; a full
``gc.collect()`` before each measurement.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from report_size import synthetic

from pytaskstats import report
from pytaskstats.cli.run import RunResult, format_json, report_data, trace_text
from pytaskstats.report.critical import critical_path
from pytaskstats.summary import summarize


def main() -> None:
    """Time both contenders and print a table with ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--span", type=float, default=600.0, help="the run's wall time (s)")
    opts = ap.parse_args()
    records, times = synthetic(opts.records, opts.span)
    result = RunResult(["make", "-j64"], 0, opts.span, records, exit_s=times,
                       started_ns=time.time_ns())
    procs = summarize(records)
    data = report_data(result, procs, True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        sizes: dict[str, int] = {}

        def as_json() -> None:
            text = json.dumps(format_json(result, procs, True), separators=(",", ":")) + "\n"
            (out / "run.json").write_text(text)
            sizes["run --json"] = len(text)

        def as_trace() -> None:
            d = report_data(result, procs, True)
            text = trace_text(d, critical_path(d.processes))
            report.save(out / "trace.json", text)
            sizes["--trace"] = len(text)

        def path_only() -> None:
            critical_path(data.processes)

        contenders: dict[str, Callable[[], None]] = {
            "run --json (baseline)": as_json, "--trace": as_trace,
            "[info] critical_path": path_only}
        spent: dict[str, list[float]] = {k: [] for k in contenders}
        names = list(contenders)
        for rep in range(opts.reps + 1):  # the first round warms up
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                gc.collect()
                start = time.perf_counter()
                contenders[name]()
                if rep:
                    spent[name].append(time.perf_counter() - start)
    base = statistics.median(spent["run --json (baseline)"])
    print(f"{len(records):,} exit records, {len(procs):,} processes, {opts.reps} rounds "
          f"(medians), python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'contender':<24} {'median':>9} {'min/max':>13} {'ratio':>7} {'output':>10}")
    for name, values in spent.items():
        med = statistics.median(values)
        spread = f"{min(values) / med - 1:+.0%}/{max(values) / med - 1:+.0%}"
        size = next((f"{v / 1e6:.1f} MB" for k, v in sizes.items() if name.startswith(k)), "")
        print(f"{name:<24} {med:>8.3f}s {spread:>13} {med / base:>6.2f}x {size:>10}")


if __name__ == "__main__":
    main()
