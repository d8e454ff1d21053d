"""The run report's "Critical path" section: each link's time as a stacked bar
(running, waiting for a CPU, IO, memory, and the rest of its life: sleeping or
waiting for its children) and a table (see :mod:`.critical` for the definition)."""

from __future__ import annotations

from collections.abc import Sequence

from . import page
from .critical import Link, path_totals
from .fmt import human_duration, share
from .kinds import CPU, IO, MEMORY, OFF_NOTE, RUNNING, Kind, measured
from .svg import Bar, stacked_rows

OTHER_COLOUR = "#c4d3e6"
OTHER_LABEL = "sleeping or waiting for children"
_KINDS: tuple[tuple[Kind, str], ...] = ((RUNNING, "running_s"), (CPU, "cpu_wait_s"),
                                        (IO, "io_wait_s"), (MEMORY, "memory_wait_s"))


def _text(amount: float | None, kind: Kind, state: bool | None) -> str:
    if not measured(kind, state):
        return "n/a"
    return "-" if amount is None else human_duration(amount)


def _bar(link: Link, state: bool | None) -> Bar:
    s = link.process.summary
    name = f"{s.comm} {s.tgid}"
    parts = []
    for kind, key in _KINDS:
        if not measured(kind, state):
            continue
        amount = getattr(link, key)
        parts.append((kind.colour, amount or 0.0,
                      f"{name}: {kind.label} {human_duration(amount or 0.0)}"))
    rest = max(link.life_s - sum(a for _, a, _ in parts), 0.0)
    parts.append((OTHER_COLOUR, rest, f"{name}: {OTHER_LABEL} {human_duration(rest)}"))
    title = (f"{name}: lived {human_duration(link.life_s)}, on the path alone "
             f"{human_duration(link.own_s)} ({share(link.own_s, link.life_s)}); "
             + ", ".join(tip.split(': ', 1)[1] for _, _, tip in parts))
    return Bar(name, f"parent {s.ppid}", parts, human_duration(link.life_s), title)


def section(links: Sequence[Link], state: bool | None) -> str:
    """The section's body."""
    if not links:
        return page.para("No exit records: no critical path.")
    tot = path_totals(links)
    html = [page.para(
        "The chain of processes that bounds the wall time: from the process that ended "
        "last, the child it waited on last (the child that exited last before it did), "
        "recursively. Drawn on the timeline with a black outline and dashed joins. Each "
        "bar is one link's life; threads add up, so a bar can pass its life."),
        page.legend([(k.colour, k.label) for k, _ in _KINDS if measured(k, state)]
                    + [(OTHER_COLOUR, OTHER_LABEL)])]
    if state is False:
        html.append(page.note(OFF_NOTE))
    scale = max(max(link.life_s, sum(p[1] for p in _bar(link, state).parts[:-1]))
                for link in links)
    html.append(page.figure(stacked_rows([_bar(link, state) for link in links], scale,
                                         aria="critical path"),
                            f"{len(links)} processes, wall {human_duration(tot['wall_s'] or 0)}"
                            "; bars share one scale."))
    headers = [("step", "position on the path"), ("process", "command name and pid"),
               ("life", "from start to exit"), ("alone", "time on the path not in the next "
                                                "link (before it started and after it ended)"),
               *((k.label, k.help) for k, _ in _KINDS)]
    rows = [[str(i + 1), page.name_cell(link.process.summary.comm,
                                        str(link.process.summary.tgid)),
             human_duration(link.life_s), human_duration(link.own_s),
             *(_text(getattr(link, key), k, state) for k, key in _KINDS)]
            for i, link in enumerate(links)]
    total = ["path", "", human_duration(tot["wall_s"] or 0.0),
             human_duration(sum(link.own_s for link in links)),
             *(_text(tot[key], k, state) for k, key in _KINDS)]
    html.append(page.table(headers, rows, total=total))
    return "".join(html)


__all__ = ["section"]
