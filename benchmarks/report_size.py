"""Generation time and size of the HTML reports for large inputs (no kernel needed).

``python benchmarks/report_size.py`` (``--help`` for options; ``--chromium`` also
times headless Chromium loading and screenshotting each page).

Run report: ``--records`` (100,000) exit records shaped like a long parallel build:
copies of the real records of tests/fixtures/report/make_j2.json (a recorded
``make -j2``, 29 records), each copy with new pids and its own tree, started one
after another over a ``--span`` (600 s) run under one root process.  Timed:
``build_run`` (plausibility check, summarize, lifetimes) and ``render_run``.

History report: the same records journaled into an in-memory journal over
``--hours`` (24) and queried the way ``taskstats history --report`` does
(buckets, groups by comm and cgroup, totals); timed: the queries and
``render_history``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pytaskstats import ExitRecord, taskstats
from pytaskstats.daemon.journal import Store
from pytaskstats.daemon.journal_rows import JournalEntry
from pytaskstats.report import (
    BUCKET_FIELDS,
    GROUP_FIELDS,
    HistoryReport,
    build_run,
    choose_bucket,
    render_history,
    render_run,
)

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "report" / "make_j2.json"
_T = TypeVar("_T")


def templates() -> tuple[int, list[ExitRecord]]:
    """The recorded run's family id and exit records."""
    doc = json.loads(FIXTURE.read_text())
    records = []
    for _, raw in doc["exits"]:
        event = taskstats.decode(bytes.fromhex(raw), doc["family"])[0]
        assert isinstance(event, ExitRecord)
        records.append(event)
    return doc["family"], records


def synthetic(n: int, span_s: float) -> tuple[list[ExitRecord], list[float]]:
    """``n`` exit records of a build-like run of ``span_s`` seconds, and their arrival
    times (seconds after the start): copies of the recorded ``make -j2`` tree, each
    with new pids, started one after another under one root process."""
    _, base = templates()
    base_times = [t for t, _ in json.loads(FIXTURE.read_text())["exits"]]
    base_wall = max(base_times)
    copies = -(-n // len(base))
    root = 1000
    records: list[ExitRecord] = []
    times: list[float] = []
    for c in range(copies):
        offset = c * (span_s - base_wall) / copies
        pids = {r.tgid or r.pid: 0 for r in base}
        for k, tgid in enumerate(pids):
            pids[tgid] = root + 1 + c * len(pids) + k
        for rec, t in zip(base, base_times, strict=True):
            if len(records) == n - 1:
                break
            old = rec.tgid or rec.pid
            tgid = pids[old]
            pid = tgid if rec.pid == old else tgid + 500_000_000
            task = rec.task._replace(ac_pid=pid, ac_tgid=tgid,
                                     ac_ppid=pids.get(rec.task.ac_ppid or 0, root))
            records.append(dataclasses.replace(rec, task=task, group=None, pid=pid, tgid=tgid))
            times.append(t + offset)
    last = base[0].task._replace(ac_pid=root, ac_tgid=root, ac_ppid=1, ac_comm="make",
                                 ac_etime=int(span_s * 1e6))
    records.append(ExitRecord(task=last, pid=root, tgid=root))
    times.append(span_s)
    return records, times


def timed(fn: Callable[[], _T]) -> tuple[_T, float]:
    """``fn()`` and its wall time in seconds."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def chromium_load(path: Path) -> float | None:
    """Seconds for headless Chromium to load ``path`` and write a screenshot."""
    exe = shutil.which("chromium")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               f"--screenshot={profile}/shot.png", "--window-size=1280,2000",
               f"file://{path}"]
        _, seconds = timed(lambda: subprocess.run(cmd, capture_output=True, timeout=300,
                                                  check=True))
    return seconds


def run_report(n: int, span_s: float, out: Path) -> dict[str, Any]:
    """Time the run report of ``n`` synthetic records; write it to ``out``."""
    records, times = synthetic(n, span_s)
    data, build_s = timed(lambda: build_run(["make", "-j64"], 0, span_s, records, times,
                                            delayacct=True, started_ns=time.time_ns()))
    html, render_s = timed(lambda: render_run(data))
    out.write_text(html)
    return {"records": n, "processes": len(data.processes), "build_s": build_s,
            "render_s": render_s, "bytes": len(html.encode()),
            "timeline_rows": html.count('<rect class="b"')}


def history_report(n: int, hours: float, out: Path) -> dict[str, Any]:
    """Time the history report over a journal of ``n`` synthetic records."""
    family, _ = templates()
    records, _ = synthetic(n, hours * 3600)
    until = time.time_ns()
    since = until - int(hours * 3600e9)
    step = (until - since) // n
    with Store(":memory:") as store:
        store.insert([JournalEntry(rec, since + i * step, f"/build.slice/job{i % 40}",
                                   taskstats.encode_exit(family, rec)).item
                      for i, rec in enumerate(records)])
        journal = store.queries
        bucket = choose_bucket(hours * 3600)

        def ask() -> HistoryReport:
            window: dict[str, Any] = {"since_ns": since, "until_ns": until}
            return HistoryReport(
                since, until, bucket,
                tuple(journal.aggregate(bucket_s=bucket, fields=BUCKET_FIELDS, **window)),
                tuple(journal.aggregate(group_by="comm", fields=GROUP_FIELDS, **window)),
                tuple(journal.aggregate(group_by="cgroup", fields=GROUP_FIELDS, **window)),
                journal.aggregate(fields=GROUP_FIELDS, **window)[0], True)

        data, query_s = timed(ask)
    html, render_s = timed(lambda: render_history(data))
    out.write_text(html)
    return {"records": n, "buckets": len(data.buckets), "bucket_s": bucket,
            "query_s": query_s, "render_s": render_s, "bytes": len(html.encode())}


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--span", type=float, default=600.0, help="run length, seconds")
    parser.add_argument("--hours", type=float, default=24.0, help="journal range, hours")
    parser.add_argument("--out", default=tempfile.gettempdir(), help="where the pages go")
    parser.add_argument("--chromium", action="store_true", help="also time Chromium")
    args = parser.parse_args()
    out = Path(args.out)
    run = run_report(args.records, args.span, out / "report-run-bench.html")
    print(f"run report: {run['records']:,} exit records ({run['processes']:,} processes), "
          f"build_run {run['build_s']:.2f} s, render_run {run['render_s']:.2f} s, "
          f"{run['bytes'] / 1024:.0f} KiB, {run['timeline_rows']} timeline rows")
    hist = history_report(args.records, args.hours, out / "report-history-bench.html")
    print(f"history report: {hist['records']:,} journal rows over {args.hours:g} h, "
          f"{hist['buckets']} buckets of {hist['bucket_s']} s, queries {hist['query_s']:.2f} s, "
          f"render_history {hist['render_s']:.2f} s, {hist['bytes'] / 1024:.0f} KiB")
    if args.chromium:
        for name in ("report-run-bench.html", "report-history-bench.html"):
            seconds = chromium_load(out / name)
            print(f"chromium load + screenshot of {name}: "
                  + ("no chromium" if seconds is None else f"{seconds:.2f} s"))
    print(f"pages: {out / 'report-run-bench.html'}, {out / 'report-history-bench.html'}")


if __name__ == "__main__":
    main()
