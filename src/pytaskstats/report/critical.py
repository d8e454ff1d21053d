"""The critical path of a run: the chain of processes that bounds its wall time.

Definition.  The path starts at the root process that ended last (a process whose
parent is not in the run: the command, or an orphan that outlived it under
``--wait-all``).  Within a process P, walk back in time from P's exit: the child P
waited on last is the child that exited last before P did (children: ``ppid`` is P's
tgid and they started within P's life; "before" allows ``slack_s``, since exit times
are arrival times of exit records read from several per-CPU sockets); then the child
that exited last before that one started, and so on, until no child ended before the
last one picked started.  Those children are on the path, in time order (P could not
go on before each had exited: a shell, make or a script waits that way), and each is
walked the same way.  Children that ran meanwhile, in parallel, are not.

The path is listed depth first in time order: P, then its first picked child and that
child's own path, then its next picked child...  Each link's ``after`` is the index of
the link it follows: its parent for the first picked child, else the previous picked
sibling (whose exit let it start).  ``own_s`` is the part of the link's life not
covered by its picked children (for a leaf, its whole life).  Its accounting (running,
waiting for a CPU, for block IO, for memory) is the process's own, summed over its
threads, in seconds; None where the kernel did not measure it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..summary import ProcessSummary
from .kinds import CPU, IO, MEMORY, RUNNING, seconds

# Ends are when exit records arrived (the listener drains per-CPU sockets when it is
# scheduled: on a loaded machine tens of ms late, differently per record) and starts
# are arrival minus ac_etime, so both carry that jitter; seen: a child 2.7 ms "before"
# its parent began, in a make -j2 on a loaded 2-CPU machine.
SLACK_S = 0.02  # s: "exited before" allows this much
START_SLACK_S = 0.02  # s: "started within its parent's life" allows this much


class Process(Protocol):
    """A process of a run and its lifetime, in seconds on the run's clock (what
    :class:`pytaskstats.report.run.Process` holds)."""

    @property
    def summary(self) -> ProcessSummary: ...
    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float: ...


@dataclass(frozen=True)
class Link:
    """One process on the critical path (see the module's definition); ``depth``:
    generations below the path's root; ``after``: the index of the link it follows
    (None for the root)."""

    process: Process
    depth: int
    after: int | None
    own_s: float
    running_s: float | None
    cpu_wait_s: float | None
    io_wait_s: float | None
    memory_wait_s: float | None

    @property
    def life_s(self) -> float:
        """The process's lifetime on the run's clock, in seconds."""
        return self.process.end_s - self.process.start_s


def _root(procs: Sequence[Process]) -> Process | None:
    tgids = {p.summary.tgid for p in procs}
    roots = [p for p in procs if p.summary.ppid not in tgids] or list(procs)
    return max(roots, key=lambda p: (p.end_s, -p.start_s), default=None)


def _children(procs: Sequence[Process]) -> dict[int, list[Process]]:
    out: dict[int, list[Process]] = {}
    for p in procs:
        if p.summary.ppid is not None:
            out.setdefault(p.summary.ppid, []).append(p)
    return out


def _waited(parent: Process, kids: Sequence[Process], seen: set[int],
            slack_s: float) -> list[Process]:
    """The children ``parent`` waited on, one after another, in time order."""
    cands = sorted((c for c in kids if c is not parent and id(c) not in seen
                    and c.start_s >= parent.start_s - START_SLACK_S),
                   key=lambda c: (-c.end_s, c.start_s))
    picked: list[Process] = []
    until = parent.end_s + slack_s
    for c in cands:  # latest end first
        if c.end_s <= until and (not picked or c.end_s <= picked[-1].end_s):
            picked.append(c)
            until = c.start_s + slack_s
    return picked[::-1]


def _link(p: Process, depth: int, after: int | None, picked: Sequence[Process]) -> Link:
    life = max(p.end_s - p.start_s, 0.0)
    covered = sum(max(min(c.end_s, p.end_s) - max(c.start_s, p.start_s), 0.0) for c in picked)
    v = p.summary.values
    return Link(p, depth, after, min(max(life - covered, 0.0), life), seconds(RUNNING, v),
                seconds(CPU, v), seconds(IO, v), seconds(MEMORY, v))


def critical_path(procs: Sequence[Process], *, slack_s: float = SLACK_S) -> list[Link]:
    """The critical path of ``procs`` (a run's processes), root first; [] for none.
    O(n log n) in the number of processes."""
    root = _root(procs)
    if root is None:
        return []
    kids = _children(procs)
    seen: set[int] = {id(root)}
    links: list[Link] = []
    stack: list[tuple[Process, int, int | None]] = [(root, 0, None)]
    while stack:
        p, depth, after = stack.pop()
        picked = _waited(p, kids.get(p.summary.tgid, ()), seen, slack_s)
        seen.update(id(c) for c in picked)
        here = len(links)
        links.append(_link(p, depth, after, picked))
        # depth first in time order: the first picked child follows p, the next one the
        # previous picked child (its index is known once that child's subtree is listed)
        stack.extend((c, depth + 1, None) for c in reversed(picked))
        if picked:
            stack[-1] = (picked[0], depth + 1, here)
    return _chain_siblings(links)


def _chain_siblings(links: list[Link]) -> list[Link]:
    """Set ``after`` of each later picked child to its previous picked sibling."""
    last_at_depth: dict[int, int] = {}
    out = []
    for i, link in enumerate(links):
        for d in [d for d in last_at_depth if d > link.depth]:
            del last_at_depth[d]
        after = link.after
        if after is None and link.depth > 0:
            after = last_at_depth.get(link.depth)
        out.append(Link(link.process, link.depth, after, link.own_s, link.running_s,
                        link.cpu_wait_s, link.io_wait_s, link.memory_wait_s))
        last_at_depth[link.depth] = i
    return out


def path_totals(links: Sequence[Link]) -> dict[str, float | None]:
    """Sums over the links: running, CPU wait, IO wait, memory wait (s; None when no
    link has the value), and the path's wall time (the first link's life)."""
    out: dict[str, float | None] = {"wall_s": links[0].life_s if links else 0.0}
    for key in ("running_s", "cpu_wait_s", "io_wait_s", "memory_wait_s"):
        values = [getattr(link, key) for link in links if getattr(link, key) is not None]
        out[key] = sum(values) if values else None
    return out


def path_json(links: Sequence[Link]) -> dict[str, object]:
    """The path as JSON: seconds, rounded to the us; each link's pid, comm, start and
    end on the run's clock."""
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 6)
    return {
        "totals": {k: r(v) for k, v in path_totals(links).items()},
        "links": [{"tgid": link.process.summary.tgid, "ppid": link.process.summary.ppid,
                   "comm": link.process.summary.comm, "depth": link.depth,
                   "after": link.after,
                   "start_s": r(link.process.start_s), "end_s": r(link.process.end_s),
                   "life_s": r(link.life_s), "own_s": r(link.own_s),
                   "running_s": r(link.running_s), "cpu_wait_s": r(link.cpu_wait_s),
                   "io_wait_s": r(link.io_wait_s), "memory_wait_s": r(link.memory_wait_s)}
                  for link in links],
    }


__all__ = ["SLACK_S", "Link", "critical_path", "path_json", "path_totals"]
