"""The critical path of a run: the chain of processes that bounds its wall time.

Definition.  The path starts at the root process that ended last (a process whose
parent is not in the run: the command, or an orphan that outlived it under
``--wait-all``).  From a process P the next link is the child of P that exited last
before P exited: among P's children (``ppid`` == P's tgid, started within P's life)
that ended no later than P's end plus ``slack_s`` (exit times are arrival times of
exit records, read from several per-CPU sockets, so a child may appear a little after
its parent), the one with the latest end; ties: the one that started first.  Repeat
until a process has no such child.  Every shell, make or script waits for its
children that way, so P could not end before that child did.

Each link's ``own_s`` is the part of the wall time the path spends in that process
rather than in the next link: its life before the next link started plus after it
ended (the whole life for the last link).  Its accounting (running, waiting for a
CPU, for block IO, for memory) is the process's own, summed over its threads, in
seconds; None where the kernel did not measure it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..summary import ProcessSummary
from .kinds import CPU, IO, MEMORY, RUNNING, seconds

SLACK_S = 0.005  # s: a child's exit record may arrive this much after its parent's
START_SLACK_S = 0.001  # s: starts are derived (arrival - elapsed), rounded to us


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
    """One process on the critical path (see the module's definition)."""

    process: Process
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


def critical_path(procs: Sequence[Process], *, slack_s: float = SLACK_S) -> list[Link]:
    """The critical path of ``procs`` (a run's processes), root first; [] for none.
    O(n) in the number of processes."""
    root = _root(procs)
    if root is None:
        return []
    kids = _children(procs)
    chain: list[Process] = []
    seen: set[int] = set()
    node: Process | None = root
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        chain.append(node)
        parent = node
        cands = [c for c in kids.get(parent.summary.tgid, ()) if c is not parent
                 and c.start_s >= parent.start_s - START_SLACK_S
                 and c.end_s <= parent.end_s + slack_s and id(c) not in seen]
        node = max(cands, key=lambda c: (c.end_s, -c.start_s), default=None)
    links = []
    for i, p in enumerate(chain):
        life = p.end_s - p.start_s
        if i + 1 < len(chain):
            nxt = chain[i + 1]
            own = (max(nxt.start_s - p.start_s, 0.0) + max(p.end_s - nxt.end_s, 0.0))
        else:
            own = life
        v = p.summary.values
        links.append(Link(p, min(max(own, 0.0), max(life, 0.0)), seconds(RUNNING, v),
                          seconds(CPU, v), seconds(IO, v), seconds(MEMORY, v)))
    return links


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
                   "comm": link.process.summary.comm,
                   "start_s": r(link.process.start_s), "end_s": r(link.process.end_s),
                   "life_s": r(link.life_s), "own_s": r(link.own_s),
                   "running_s": r(link.running_s), "cpu_wait_s": r(link.cpu_wait_s),
                   "io_wait_s": r(link.io_wait_s), "memory_wait_s": r(link.memory_wait_s)}
                  for link in links],
    }


__all__ = ["SLACK_S", "Link", "critical_path", "path_json", "path_totals"]
