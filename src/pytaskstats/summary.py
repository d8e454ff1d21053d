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
    A pid can be reused while the run goes on, so a parent is the instance of that
    pid that was alive when its child exited (``ac_ppid`` is the parent at exit),
    not merely a record with that pid (see :class:`Instances`); ``root`` is the first
    leader record with its pid.
    """
    recs = list(records)
    where = Instances(recs)
    mine = where.leaders.get(root, [])  # the first: a reuse starts after ours exits
    memo: dict[int, bool] = {mine[0]: True} if mine else {}

    def inside(i: int, depth: int = 0) -> bool:
        if i in memo:
            return memo[i]
        ppid = recs[i].task.ac_ppid
        if _tgid(recs[i]) == root and where.instance(i) in memo:
            result = memo[where.instance(i)]
        elif ppid == reaper or ppid is None or depth >= 4096:
            result = ppid == reaper
        else:
            parent = where.parent(i, ppid)
            result = ppid == root if parent is None else inside(parent, depth + 1)
        memo[i] = result
        return result

    return [r for i, r in enumerate(recs) if inside(i)]


class Instances:
    """Which process instance each record of a list of exit records belongs to.

    Records arrive in exit order on each CPU's socket, interleaved across CPUs, and
    a pid may be reused within a run.  The leader record (``ac_pid == tgid``) of an
    instance spans [begin, begin + elapsed] (begin in whole seconds, so one second
    of slack).  A record's instance, or its parent's, is a leader record of that id
    whose span fits (born before, alive at the record's exit); among those the first
    that arrived after the record (a parent and a leader outlive their children and
    threads), else the last before it.
    """

    def __init__(self, recs: list[ExitRecord]) -> None:
        self.recs = recs
        self.leaders: dict[int, list[int]] = {}
        for i, rec in enumerate(recs):
            if rec.task.ac_pid is not None and rec.task.ac_pid == _tgid(rec):
                self.leaders.setdefault(_tgid(rec), []).append(i)

    def parent(self, i: int, ppid: int) -> int | None:
        """The index of the leader record of record ``i``'s parent, if any."""
        return self._pick(i, ppid, child=True)

    def instance(self, i: int) -> int:
        """The index of the leader record of record ``i``'s own process (``i`` itself
        for a leader, or when no leader record was seen)."""
        found = self._pick(i, _tgid(self.recs[i]), child=False)
        return i if found is None else found

    def _pick(self, i: int, ident: int, *, child: bool) -> int | None:
        rec = self.recs[i].task
        if not child and rec.ac_pid == ident:
            return i
        cands = [j for j in self.leaders.get(ident, []) if j != i]
        fits = [j for j in cands if _fits(self.recs[j].task, rec)] or cands
        after = [j for j in fits if j > i]
        if after:
            return after[0]
        return fits[-1] if fits else None


def _span(task: TaskStats) -> tuple[float, float] | None:
    begin = task.ac_btime64 or task.ac_btime
    if not begin or task.ac_etime is None:
        return None
    return float(begin), begin + task.ac_etime / 1e6


def _fits(outer: TaskStats, inner: TaskStats) -> bool:
    """Whether ``outer`` was born before ``inner`` and alive when it exited (1 s slack:
    begin times are whole seconds)."""
    a, b = _span(outer), _span(inner)
    if a is None or b is None:
        return True
    return a[0] <= b[0] + 1 and a[1] + 1 >= b[1]


def _tgid(rec: ExitRecord) -> int:
    return rec.tgid if rec.tgid is not None else rec.pid


def _add(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else a + b


def summarize(records: Iterable[ExitRecord]) -> list[ProcessSummary]:
    """Group exit records by process instance (a reused pid is another process);
    order by begin time, then tgid."""
    recs = list(records)
    where = Instances(recs)
    threads: dict[int, list[TaskStats]] = {}
    for i, rec in enumerate(recs):
        threads.setdefault(where.instance(i), []).append(rec.task)
    out = [_process(_tgid(recs[key]), tasks) for key, tasks in threads.items()]
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
