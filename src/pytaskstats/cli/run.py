"""``taskstats run -- CMD ARGS...``: account a command and every descendant.

An exit listener is registered on every CPU before the command starts, and this
process becomes a child subreaper, so every descendant process and thread,
however short-lived and even orphaned, is seen at its exit: nothing is polled.
The command's exit status is passed through (128+N when killed by signal N).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import delayacct, report
from ..listener import DEFAULT_MAX_WAIT_S, Listener, coalesce_wait
from ..plausible import LeftOut, checked_records
from ..records import ExitRecord, Lost
from ..report.critical import Link, critical_path, path_json, path_totals
from ..report.trace import build_trace
from ..summary import ProcessSummary, process_tree, summarize, totals
from ..textfmt import delayacct_json, human_bytes, human_duration, shown, wait_status
from .args import output_file_arg, printable, same_file, stdout_clash, trace_file_arg
from .common import cannot_write, open_client, print_json

PR_SET_CHILD_SUBREAPER = 36
NOT_FOUND, CANNOT_EXECUTE = 127, 126  # the shell's statuses


class CannotRun(Exception):
    """The command could not be started; ``status`` is the shell's (126 or 127)."""

    def __init__(self, command: str, err: OSError | ValueError) -> None:
        found = not isinstance(err, FileNotFoundError)
        self.status = CANNOT_EXECUTE if found else NOT_FOUND
        what = "cannot execute" if found else "command not found"
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        super().__init__(f"{command}: {what} ({why})")


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("run", help="run a command and account it and all its descendants",
                       description="Run CMD and report the accounting of it and every "
                       "descendant process and thread, including short-lived and orphaned "
                       "ones, from the kernel's exit records.")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--wait-all", action="store_true",
                   help="also wait for descendants that outlive the command")
    p.add_argument("--report", metavar="FILE.html", type=output_file_arg,
                   help="also write a self-contained HTML report (timeline, where the time "
                   "went, top waits, totals)")
    p.add_argument("--trace", metavar="FILE.json", type=trace_file_arg,
                   help="also write the run as a Chrome trace event file (open it in "
                   "Perfetto UI, chrome://tracing or speedscope): a track per process under "
                   "its parent, its accounting on its slice, counters, the critical path")
    p.add_argument("--critical-path", action="store_true",
                   help="also show the chain of processes that bounds the wall time (each "
                   "process and the child it waited on last) and what each link spent its "
                   "time on; in --json as critical_path")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=run)


@dataclass
class RunResult:
    """What a run produced: the command's status and the tree's exit records.

    ``exit_s[i]`` is when ``records[i]`` arrived, in seconds after the command was
    started (monotonic clock; ``started_ns`` is that moment in CLOCK_REALTIME ns); late
    by up to the listener's coalescing window unless its ``max_wait`` is 0, and through
    taskstatsd by up to its own (a quarter of its max_wait_ms), except the command's own
    records: at most ``wall_s``.
    """

    command: list[str]
    returncode: int
    wall_s: float
    records: list[ExitRecord] = field(default_factory=list)
    lost: int = 0
    still_running: list[tuple[int, str]] = field(default_factory=list)
    exit_s: list[float] = field(default_factory=list)
    started_ns: int = 0


def _subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _children() -> list[tuple[int, str]]:
    """Our live children (orphans re-parented to us), with their comm."""
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    out.append((pid, f.read().strip()))
            except OSError:
                continue
    return out


def _reap_orphans() -> bool:
    """Reap exited children without waiting; False once we have none."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def execute(command: list[str], listener: Listener, *, wait_all: bool) -> RunResult:
    """Run ``command`` under ``listener``; collect exit records until it (and, with
    ``wait_all``, every orphan) has exited."""
    _subreaper()
    result = RunResult(command, 0, 0.0)
    arrived: dict[int, float] = {}  # id(record) -> exit_s

    def collect(events: list[ExitRecord | Lost]) -> None:
        now = time.monotonic() - start
        for event in events:
            if isinstance(event, Lost):
                result.lost += event.records
            else:
                result.records.append(event)
                arrived[id(event)] = now

    result.started_ns = time.time_ns()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(command)
    except (OSError, ValueError) as err:
        raise CannotRun(command[0], err) from err
    pidfd = os.pidfd_open(proc.pid)
    try:
        last_end, last_size = -math.inf, 0
        while True:
            ready, _, _ = select.select([*listener.fds, pidfd], [], [])
            if pidfd in ready:
                break
            # exits come fast: one wake-up serves a batch (nothing waits for it live)
            wait = coalesce_wait(listener.max_wait, time.monotonic() - last_end, last_size)
            if wait:
                select.select([pidfd], [], [], wait)
            events = listener.drain()
            collect(events)
            last_end, last_size = time.monotonic(), len(events)
    finally:
        os.close(pidfd)
    collect(listener.drain())
    result.returncode = proc.wait()
    result.wall_s = time.monotonic() - start
    while wait_all and _reap_orphans():
        collect(listener.poll(0.05))
    collect(listener.drain())
    if listener.source == "daemon":  # forwarded records may trail waitpid: wait, bounded
        deadline = time.monotonic() + 2.0
        while (not any(r.pid == proc.pid for r in result.records)
               and time.monotonic() < deadline):
            collect(listener.poll(0.05))
        collect(listener.poll(0.1))
    result.still_running = _children()
    result.records = process_tree(result.records, proc.pid, os.getpid())
    # the command's own exit is known to the waitpid: its records (the process, its
    # threads) cannot have ended later, however late taskstatsd forwarded them (it holds
    # an exit back up to a quarter of its max_wait_ms when exits come fast)
    result.exit_s = [min(arrived[id(rec)], result.wall_s) if rec.tgid == proc.pid
                     else arrived[id(rec)] for rec in result.records]
    return result


def exit_status(returncode: int) -> int:
    """The shell's convention: 128+N for a command killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def _cell(value: int | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "us":
        return human_duration(value / 1e6)
    if kind == "ns":
        return human_duration(value / 1e9)
    if kind == "KB":
        return human_bytes(value * 1024)
    if kind == "B":
        return human_bytes(value)
    return str(value)


COLUMNS = (  # header, width, value key, unit
    ("WALL", 9, "etime", "us"), ("USER", 9, "ac_utime", "us"), ("SYS", 9, "ac_stime", "us"),
    ("CPUWAIT", 9, "cpu_delay_total", "ns"), ("IOWAIT", 9, "blkio_delay_total", "ns"),
    ("MEMWAIT", 9, "memory_delay_total", "ns"), ("READ", 8, "read_bytes", "B"),
    ("WRITE", 8, "write_bytes", "B"), ("CTXSW", 7, "ctxsw", ""),
    ("PEAKRSS", 9, "hiwater_rss", "KB"))
_NOT_MEASURED = ("blkio_delay_total", "memory_delay_total")
LEGEND = (
    "THR threads; WALL lifetime (TOTAL: from the start to the last exit); USER/SYS CPU "
    "time; CPUWAIT waiting for a CPU; IOWAIT waiting for block I/O;\n"
    "MEMWAIT waiting for memory (swap-in + reclaim + thrashing + compaction + "
    "write-protect copy); READ/WRITE storage bytes; CTXSW context switches; PEAKRSS "
    "peak resident memory (TOTAL: the largest)")


def _row_values(values: dict[str, int | None], etime: int | None) -> dict[str, int | None]:
    nv, niv = values.get("nvcsw"), values.get("nivcsw")
    ctx = None if nv is None or niv is None else nv + niv
    return {**values, "etime": etime, "ctxsw": ctx}


def _cells(values: dict[str, int | None], state: bool | None) -> str:
    out = []
    for _, width, key, unit in COLUMNS:
        text = "n/a" if state is False and key in _NOT_MEASURED else _cell(values[key], unit)
        out.append(f"{text:>{width}}")
    return " ".join(out)


def format_text(result: RunResult, procs: list[ProcessSummary], state: bool | None) -> str:
    """The per-process table and the totals line."""
    head = " ".join(f"{h:>{w}}" for h, w, _, _ in COLUMNS)
    lines = [f"{'PID':>7} {'PPID':>7} {'THR':>4} {'COMMAND':<16} {head} STATUS"]
    for p in procs:
        status = wait_status(p.exitcode)
        lines.append(f"{p.tgid:>7} {p.ppid or 0:>7} {p.threads:>4} {shown(p.comm[:16]):<16} "
                     f"{_cells(_row_values(p.values, p.etime_us), state)} {status}")
    tot, left_out = plausible_totals(result.records, procs)
    wall_us = int(max(result.wall_s, *result.exit_s) * 1e6)  # rows may outlive the command
    nprocs = tot["processes"] or 0
    label = f"in {nprocs} process{'es' if nprocs != 1 else ''}"  # THR threads in N processes
    lines.append(f"{'TOTAL':>7} {'':>7} {tot['threads'] or 0:>4} {label:<16} "
                 f"{_cells(_row_values(tot, wall_us), state)} {exit_status(result.returncode)}")
    if left_out:
        lines.append(left_out_note(left_out))
    return "\n".join(lines)


def plausible_totals(records: list[ExitRecord], procs: list[ProcessSummary] | None = None
                     ) -> tuple[dict[str, int | None], list[LeftOut]]:
    """The TOTAL row's sums, each delay longer than its task lived left out (the rows
    keep the kernel's values), and what was left out; ``procs``, the rows of
    ``records``, are summed as they are when nothing is left out."""
    clean, left_out = checked_records(records)
    if procs is not None and not left_out:
        return totals(procs), left_out
    return totals(summarize(clean)), left_out


def left_out_note(left_out: list[LeftOut]) -> str:
    """The line under the table that lists delays left out of TOTAL."""
    listed = "; ".join(f"{shown(i.comm)} (pid {i.pid}) {i.field} "
                       f"{human_duration(i.value_ns / 1e9)} in a life of "
                       f"{human_duration(i.etime_us / 1e6)}" for i in left_out[:3])
    more = f"; and {len(left_out) - 3} more" if len(left_out) > 3 else ""
    return (f"note: {len(left_out)} delay value{'s' if len(left_out) > 1 else ''} longer than "
            f"the task lived (a kernel accounting error) left out of TOTAL: {listed}{more}")


def format_json(result: RunResult, procs: list[ProcessSummary], state: bool | None
                ) -> dict[str, Any]:
    """The run as JSON: kernel field names and units; derived values named apart."""
    def values(v: dict[str, int | None]) -> dict[str, int | None]:
        return {k: (None if state is False and k in _NOT_MEASURED + tuple(
            f"{m}_delay_total" for m in ("swapin", "freepages", "thrashing", "compact",
                                         "wpcopy", "irq")) else x) for k, x in v.items()}
    tot, left_out = plausible_totals(result.records, procs)
    return {
        "command": result.command, "exit_status": exit_status(result.returncode),
        "wall_s": round(result.wall_s, 6), "delayacct": delayacct_json(state),
        "lost": result.lost, "still_running": [{"pid": p, "comm": c}
                                               for p, c in result.still_running],
        "processes": [{"tgid": p.tgid, "ppid": p.ppid, "comm": p.comm, "threads": p.threads,
                       "ac_btime": p.btime, "ac_etime": p.etime_us,
                       "ac_exitcode": p.exitcode, **values(p.values)} for p in procs],
        "totals": values(tot),
        "implausible": [{"pid": i.pid, "comm": i.comm, "field": i.field, "value_ns": i.value_ns,
                         "ac_etime": i.etime_us} for i in left_out],
    }


def run(args: argparse.Namespace) -> int:
    """Run the command and print its accounting; return its exit status."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("taskstats run: give a command: taskstats run -- CMD ARGS...", file=sys.stderr)
        return 2
    clash = stdout_clash("--report", args.report) or stdout_clash("--trace", args.trace)
    if clash:
        print(f"taskstats run: {clash}", file=sys.stderr)
        return 2
    if args.report and args.trace and same_file(args.report, args.trace):
        print(f"taskstats run: --report and --trace both name {printable(args.trace)}: one "
              "would overwrite the other; give two files", file=sys.stderr)
        return 2
    state = delayacct.status()
    # a timeline (report, trace, critical path) dates each exit by its arrival: holding
    # exits back to batch them would shift it by up to the window
    timed = bool(args.report or args.trace or args.critical_path)
    previous = signal.signal(signal.SIGINT, lambda *_: None)  # the command gets Ctrl-C
    try:
        with (open_client(args, exits=True) as client,
              client.listen(per_cpu=True, max_wait=0.0 if timed else DEFAULT_MAX_WAIT_S)
              as listener):
            result = execute(command, listener, wait_all=args.wait_all)
    except CannotRun as err:
        print(f"taskstats run: {err}", file=sys.stderr)
        return err.status
    finally:
        signal.signal(signal.SIGINT, previous)
    procs = summarize(result.records)
    data = report_data(result, procs, state) if timed else None
    path = critical_path(data.processes) if data is not None and (
        args.trace or args.critical_path) else []
    if args.json:
        doc = format_json(result, procs, state)
        if args.critical_path:
            doc["critical_path"] = path_json(path)
        print_json(doc)
    else:
        _print_text(result, procs, state)
        if args.critical_path:
            print(format_path(path, state), file=sys.stderr)
    ok = True
    if data is not None and args.report:
        ok = _save(args.report, "the report", lambda: report.render_run(data))
    if data is not None and args.trace:
        ok = _save(args.trace, "the trace", lambda: trace_text(data, path)) and ok
    status = exit_status(result.returncode)
    return status if ok else status or 1


def report_data(result: RunResult, procs: list[ProcessSummary], state: bool | None
                ) -> report.RunReport:
    """The run as the report, the trace and the critical path see it."""
    return report.build_run(result.command, exit_status(result.returncode), result.wall_s,
                            result.records, result.exit_s, delayacct=state,
                            started_ns=result.started_ns, lost=result.lost,
                            still_running=result.still_running, procs=procs)


def trace_text(data: report.RunReport, path: list[Link]) -> str:
    """The trace file's text: compact JSON, one line."""
    return json.dumps(build_trace(data, path), separators=(",", ":")) + "\n"


def _save(path: str, what: str, text: Callable[[], str]) -> bool:
    """Write a file atomically; say where (or why not) on stderr."""
    try:
        report.save(path, text())
    except OSError as err:
        print(f"taskstats run: {what}: {cannot_write(path, err)}", file=sys.stderr)
        return False
    print(f"taskstats run: {what.removeprefix('the ')} written to {printable(path)}",
          file=sys.stderr)
    return True


def format_path(links: list[Link], state: bool | None) -> str:
    """The critical path as text: a line per link, indented by its step."""
    if not links:
        return "critical path: none (no exit records)"
    tot = path_totals(links)

    def sec(value: float | None, needs_delayacct: bool = False) -> str:
        if needs_delayacct and state is False:
            return "n/a"
        return "-" if value is None else human_duration(value)
    lines = [f"critical path: {len(links)} process{'es' if len(links) != 1 else ''}, wall "
             f"{sec(tot['wall_s'])}: running {sec(tot['running_s'])}, CPU wait "
             f"{sec(tot['cpu_wait_s'])}, IO wait {sec(tot['io_wait_s'], True)}, memory wait "
             f"{sec(tot['memory_wait_s'], True)}"]
    for link in links:
        s = link.process.summary
        lines.append(f"  {'  ' * min(link.depth, 20)}{shown(s.comm)} (pid {s.tgid}) at "
                     f"{link.process.start_s:.3f}s, lived {sec(link.life_s)} (alone "
                     f"{sec(link.own_s)}): running {sec(link.running_s)}, CPU wait "
                     f"{sec(link.cpu_wait_s)}, IO wait {sec(link.io_wait_s, True)}, memory "
                     f"wait {sec(link.memory_wait_s, True)}")
    return "\n".join(lines)


def _print_text(result: RunResult, procs: list[ProcessSummary], state: bool | None) -> None:
    err = sys.stderr
    print(f"\ntaskstats run: {shown(' '.join(result.command))}: exit status "
          f"{exit_status(result.returncode)}, wall {human_duration(result.wall_s)}", file=err)
    if state is False:
        print(f"note: {delayacct.OFF_NOTE}", file=err)
    print(format_text(result, procs, state), file=err)
    print(LEGEND, file=err)
    if result.lost:
        print(f"warning: {result.lost} exit records were lost (listener overrun): totals "
              "are incomplete", file=err)
    for pid, comm in result.still_running:
        print(f"still running (not accounted): pid {pid} ({shown(comm)}); use --wait-all",
              file=err)
