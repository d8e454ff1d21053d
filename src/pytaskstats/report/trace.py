"""A run as a trace in the Chrome trace event format (the JSON object form that
Perfetto UI, chrome://tracing and speedscope open).

A pure function from a :class:`RunReport` (and its critical path) to a dict:

- one track per process: the trace's ``pid`` and ``tid`` are its tgid (a tgid the
  run reused gets ``tgid + k * 2**22``, above any real pid; ``args.pid`` keeps the
  real one), named by ``process_name`` (indented by depth: "make 100", "  cc 101")
  and ``thread_name`` metadata, ordered by ``process_sort_index`` in tree order
  (depth first, children by start), so each process sits under its parent;
- a complete slice (``ph`` "X", category "process") per process from its start to
  its exit, with its accounting as ``args``: seconds of CPU and of each wait, IO
  bytes, threads, the exit status (and the command line, for the root);
- counter tracks (``ph`` "C") "processes alive" and "CPUs busy" (each process's CPU
  time spread evenly over its life, as the HTML report estimates it) on a track of
  their own (pid ``COUNTERS_PID``), a value at every start and exit;
- the critical path as flow events (``ph`` "s" then "f", ``bp`` "e", one ``id`` per
  link): from the link it follows (its parent, or the sibling whose exit let it start)
  to its start; its slices carry ``args.critical_path`` (1 for the root, then 2, 3...).

Times are microseconds from the earliest start (``otherData.time_origin_s`` is that
moment in seconds after the command started; ``otherData.started_ns`` the command's
start in CLOCK_REALTIME ns).  ``otherData`` also holds the command, its exit status
and wall time (what ``taskstats diff`` reads back).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..textfmt import wait_status
from .critical import Link
from .critical import Process as Timed
from .kinds import MEMORY, RUNNING
from .run import Process, RunReport, tree_order

FORMAT = "pytaskstats trace 1"
COUNTERS_PID = 1 << 30  # the counters' own track: no real pid is this large
REUSE = 1 << 22  # pid_max's ceiling: a reused tgid's k-th instance is tgid + k * REUSE
CATEGORY = "process"
FLOW = "critical path"


def _us(seconds_: float) -> float:
    return round(seconds_ * 1e6, 3)


def _s(value: int | None, scale: float) -> float | None:
    return None if value is None else round(value * scale, 6)


def _sum(values: dict[str, int | None], names: tuple[str, ...]) -> int | None:
    present = [x for n in names if (x := values.get(n)) is not None]
    return sum(present) if present else None


def _args(p: Process, state: bool | None) -> dict[str, Any]:
    s = p.summary
    v = s.values
    off = state is False  # delay accounting off: these waits are not measured
    user, sys_ = v.get("ac_utime"), v.get("ac_stime")
    return {"pid": s.tgid, "ppid": s.ppid, "comm": s.comm, "threads": s.threads,
            "exit": wait_status(s.exitcode), "ac_exitcode": s.exitcode,
            "cpu_s": _s(_sum(v, RUNNING.fields), 1e-6), "user_s": _s(user, 1e-6),
            "sys_s": _s(sys_, 1e-6), "cpu_wait_s": _s(v.get("cpu_delay_total"), 1e-9),
            "io_wait_s": None if off else _s(v.get("blkio_delay_total"), 1e-9),
            "memory_wait_s": None if off else _s(_sum(v, MEMORY.fields), 1e-9),
            "irq_s": None if off else _s(v.get("irq_delay_total"), 1e-9),
            "read_bytes": v.get("read_bytes"), "write_bytes": v.get("write_bytes"),
            "peak_rss_kb": v.get("hiwater_rss")}


def _counters(procs: Sequence[Process], t0: float) -> list[dict[str, Any]]:
    """A "processes alive" and a "CPUs busy" value at each distinct start/exit time."""
    steps: list[tuple[float, float, float]] = []
    for p in procs:
        life = p.end_s - p.start_s
        cpu = _sum(p.summary.values, RUNNING.fields) or 0
        rate = cpu * 1e-6 / life if life > 0 else 0.0
        steps.append((_us(p.start_s - t0), 1.0, rate))
        steps.append((_us(p.end_s - t0), -1.0, -rate))
    steps.sort()
    out: list[dict[str, Any]] = []
    alive = busy = 0.0
    for i, (ts, d_alive, d_busy) in enumerate(steps):
        alive += d_alive
        busy += d_busy
        if i + 1 < len(steps) and steps[i + 1][0] == ts:
            continue  # one value per distinct time
        out.append({"ph": "C", "name": "processes alive", "pid": COUNTERS_PID, "tid": 0,
                    "ts": ts, "args": {"processes": round(alive)}})
        out.append({"ph": "C", "name": "CPUs busy", "pid": COUNTERS_PID, "tid": 0,
                    "ts": ts, "args": {"CPUs": round(max(busy, 0.0), 3)}})
    return out


def _key(p: Timed) -> tuple[int, float, float]:
    """A process's identity across copies of a report (a tgid can be reused)."""
    return (p.summary.tgid, p.start_s, p.end_s)


def _meta(name: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"ph": "M", "name": name, "pid": pid, "tid": tid, "args": args}


def build_trace(report: RunReport, path: Sequence[Link] = ()) -> dict[str, Any]:
    """The trace of ``report`` (module doc), with ``path`` as flow events."""
    procs = report.processes
    t0 = min(0.0, *(p.start_s for p in procs)) if procs else 0.0
    rows = tree_order(procs)
    on_path = {_key(link.process): i for i, link in enumerate(path)}
    ident: dict[tuple[int, float, float], int] = {}  # process -> trace pid
    used: dict[int, int] = {}
    events: list[dict[str, Any]] = [
        _meta("process_name", COUNTERS_PID, 0, {"name": "taskstats run: counters"}),
        _meta("process_sort_index", COUNTERS_PID, 0, {"sort_index": -1})]
    root = rows[0][0] if rows else None
    for order, (p, depth) in enumerate(rows):
        tgid = p.summary.tgid
        k = used.get(tgid, 0)
        used[tgid] = k + 1
        pid = ident[_key(p)] = tgid + k * REUSE
        label = f"{'  ' * min(depth, 32)}{p.summary.comm} {tgid}"
        events += [_meta("process_name", pid, pid, {"name": label}),
                   _meta("process_sort_index", pid, pid, {"sort_index": order}),
                   _meta("thread_name", pid, pid, {"name": p.summary.comm})]
        args = _args(p, report.delayacct)
        if p is root and report.command:
            args["command"] = " ".join(report.command)
        if _key(p) in on_path:
            args["critical_path"] = on_path[_key(p)] + 1
        start = _us(p.start_s - t0)
        events.append({"ph": "X", "name": p.summary.comm, "cat": CATEGORY, "pid": pid,
                       "tid": pid, "ts": start,
                       "dur": max(_us(p.end_s - t0) - start, 0.0), "args": args})
    for i, link in enumerate(path):
        if link.after is None:
            continue
        prev, child = path[link.after].process, link.process
        if _key(prev) not in ident or _key(child) not in ident:
            continue
        lo, hi = _us(prev.start_s - t0), _us(prev.end_s - t0)
        at = _us(child.start_s - t0)
        since = min(max(min(at, hi), lo), hi)  # in prev's slice: its child's start, or its end
        events.append({"ph": "s", "name": FLOW, "cat": "critical_path", "id": i,
                       "pid": ident[_key(prev)], "tid": ident[_key(prev)], "ts": since})
        events.append({"ph": "f", "bp": "e", "name": FLOW, "cat": "critical_path", "id": i,
                       "pid": ident[_key(child)], "tid": ident[_key(child)],
                       "ts": min(max(at, since), _us(child.end_s - t0))})
    events += _counters(procs, t0)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"format": FORMAT, "command": list(report.command),
                          "exit_status": report.exit_status,
                          "wall_s": round(report.wall_s, 6),
                          "started_ns": report.started_ns, "time_origin_s": round(t0, 6),
                          "delayacct": report.delayacct, "lost": report.lost}}


__all__ = ["CATEGORY", "COUNTERS_PID", "FORMAT", "build_trace"]
