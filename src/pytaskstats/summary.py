"""Pure aggregation of exit records: a command's process tree, per-process sums, totals.

Per-process values are sums over the process's thread records (each thread
reports its own counters), except ``ac_etime`` (the leader's) and
``hiwater_rss`` (a process-wide peak: the maximum).  Sums keep the kernel's
field names and units; ``memory_delay_total`` (ns) is the derived sum of the
memory delay kinds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .records import ExitRecord, TaskStats

MEMORY_KINDS = ("swapin", "freepages", "thrashing", "compact", "wpcopy")
SUMMED = ("ac_utime", "ac_stime", "cpu_delay_total", "blkio_delay_total",
          "swapin_delay_total", "freepages_delay_total", "thrashing_delay_total",
          "compact_delay_total", "wpcopy_delay_total", "irq_delay_total", "read_bytes",
          "write_bytes", "read_char", "write_char", "nvcsw", "nivcsw", "ac_minflt",
          "ac_majflt")


@dataclass
class ProcessSummary:
    """One process of a run: identity, lifetime and summed accounting.

    ``values`` maps kernel field names (and ``memory_delay_total``) to sums in
    kernel units, or None when no thread record carried the field.
    """

    tgid: int
    ppid: int | None
    comm: str
    threads: int
    btime: int | None  # begin, seconds since the epoch
    etime_us: int | None  # the leader's elapsed time
    exitcode: int | None
    values: dict[str, int | None] = field(default_factory=dict)


def process_tree(records: Iterable[ExitRecord], root: int, reaper: int) -> list[ExitRecord]:
    """The records of ``root`` and its descendants.

    A process belongs to the tree if its parent chain, as the exit records give
    it, reaches ``root``, or ``reaper`` (orphans re-parented to a subreaper).
    """
    recs = list(records)
    parent = {_tgid(r): r.task.ac_ppid for r in recs}
    memo: dict[int, bool] = {root: True, reaper: True}

    def inside(tgid: int, depth: int = 0) -> bool:
        if tgid in memo:
            return memo[tgid]
        ppid = parent.get(tgid)
        result = ppid is not None and depth < 4096 and inside(ppid, depth + 1)
        memo[tgid] = result
        return result

    return [r for r in recs if inside(_tgid(r))]


def _tgid(rec: ExitRecord) -> int:
    return rec.tgid if rec.tgid is not None else rec.pid


def _add(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else a + b


def summarize(records: Iterable[ExitRecord]) -> list[ProcessSummary]:
    """Group exit records by process; order by begin time, then tgid."""
    threads: dict[int, list[TaskStats]] = {}
    for rec in records:
        threads.setdefault(_tgid(rec), []).append(rec.task)
    out = [_process(tgid, tasks) for tgid, tasks in threads.items()]
    out.sort(key=lambda p: (p.btime or 0, p.etime_us or 0, p.tgid))
    return out


def _process(tgid: int, tasks: list[TaskStats]) -> ProcessSummary:
    leader = next((t for t in tasks if t.ac_pid == tgid), tasks[0])
    values: dict[str, int | None] = dict.fromkeys(SUMMED)
    for task in tasks:
        for name in SUMMED:
            values[name] = _add(values[name], getattr(task, name))
    rss = [t.hiwater_rss for t in tasks if t.hiwater_rss is not None]
    values["hiwater_rss"] = max(rss) if rss else None
    mem: int | None = None
    for kind in MEMORY_KINDS:
        mem = _add(mem, values[f"{kind}_delay_total"])
    values["memory_delay_total"] = mem
    return ProcessSummary(tgid=tgid, ppid=leader.ac_ppid, comm=leader.ac_comm or "?",
                          threads=len(tasks), btime=leader.ac_btime64 or leader.ac_btime,
                          etime_us=leader.ac_etime, exitcode=leader.ac_exitcode, values=values)


def totals(processes: Iterable[ProcessSummary]) -> dict[str, int | None]:
    """Sums over processes (``hiwater_rss``: the largest), plus process/thread counts."""
    out: dict[str, int | None] = {"processes": 0, "threads": 0}
    for proc in processes:
        out["processes"] = (out["processes"] or 0) + 1
        out["threads"] = (out["threads"] or 0) + proc.threads
        for name, value in proc.values.items():
            if name == "hiwater_rss":
                out[name] = max(out.get(name) or 0, value or 0) if value is not None else (
                    out.get(name))
            else:
                out[name] = _add(out.get(name), value)
    return out
