"""The report of one ``taskstats run``: where the time went, a timeline of every
process nested by parent, the top processes by each kind of wait, and totals.

A process's end is when its last exit record arrived and its start is its
leader's exit minus ``ac_etime`` (us precision), both in seconds after the
command was started.  Large runs stay light: the timeline draws at most
``max_rows`` processes (the longest-lived and their parents, said on the page);
every other chart and table counts every process.

A task cannot wait longer than it lived, yet kernels report such delays (seen on
6.18: a ``blkio_delay_total`` equal to the uptime after fsync).  Such values are
left out of every figure, and the page lists them with the kernel's numbers.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from ..plausible import LeftOut, checked_records
from ..records import ExitRecord
from ..summary import ProcessSummary, summarize, totals
from ..textfmt import wait_status
from . import page, pathpage
from .critical import critical_path
from .fmt import clock, count, esc, human_bytes, human_duration, local_time, nice_step, share
from .kinds import KINDS, OFF_NOTE, RUNNING, WAITS, Kind, measured, seconds
from .svg import Bar, Series, Span, columns, stacked_rows, timeline
from .tables import WaitRow, totals_headers, totals_row, wait_table

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7",
           "#9c755f")
OTHER = "#a3acb6"
MAX_ROWS = 400  # timeline rows
MAX_COMMANDS = 20  # bars per command name; the rest become one "other" bar
TOP = 10  # processes per wait kind
BINS = 200  # columns of the activity chart
TIMES = "\u00d7"  # multiplication sign: "x12" processes of a name


Impossible = LeftOut  # a delay longer than its task lived (left out)


@dataclass(frozen=True)
class Process:
    """A process of the run and its lifetime, in seconds after the command started."""

    summary: ProcessSummary
    start_s: float
    end_s: float


@dataclass(frozen=True)
class RunReport:
    """Everything the run report shows.  ``delayacct`` is the delay accounting state
    during the run (None: no such sysctl); ``started_ns`` CLOCK_REALTIME ns;
    ``impossible``: delays left out of ``processes``; ``exit_status`` None when no
    command ran (the journal's exits: ``history --trace``)."""

    command: tuple[str, ...]
    exit_status: int | None
    wall_s: float
    processes: tuple[Process, ...]
    delayacct: bool | None
    started_ns: int | None = None
    lost: int = 0
    still_running: tuple[tuple[int, str], ...] = ()
    impossible: tuple[Impossible, ...] = ()


def plausible(records: Iterable[ExitRecord]) -> tuple[list[ExitRecord], list[Impossible]]:
    """``records`` with each delay longer than its task lived left out, and the values
    so left out (the one rule: :mod:`pytaskstats.plausible`)."""
    return checked_records(records)


def _exits(records: Sequence[ExitRecord], exit_s: Sequence[float]
           ) -> dict[int, tuple[float | None, float]]:
    """Per tgid: when its leader's record arrived (None if none did) and its last."""
    out: dict[int, tuple[float | None, float]] = {}
    for rec, t in zip(records, exit_s, strict=True):
        tgid = rec.tgid if rec.tgid is not None else rec.pid
        leader, last = out.get(tgid, (None, t))
        out[tgid] = (t if rec.pid == tgid else leader, max(last, t))
    return out


def build_run(command: Sequence[str], exit_status: int | None, wall_s: float,
              records: Sequence[ExitRecord], exit_s: Sequence[float], *,
              delayacct: bool | None, started_ns: int | None = None, lost: int = 0,
              still_running: Iterable[tuple[int, str]] = (),
              procs: Sequence[ProcessSummary] | None = None) -> RunReport:
    """The report's data from a run's exit records and their arrival times
    (``exit_s[i]``: seconds after the command started that ``records[i]`` came);
    ``procs`` is ``summarize(records)`` if already computed.  Impossible delays are
    left out (see :func:`plausible`)."""
    clean, impossible = plausible(records)
    summaries = summarize(clean) if procs is None or impossible else procs
    exits = _exits(records, exit_s)
    processes = []
    for p in summaries:
        leader, last = exits.get(p.tgid, (None, wall_s))
        start = (last if leader is None else leader) - (p.etime_us or 0) / 1e6
        processes.append(Process(p, start, max(last, start)))
    return RunReport(tuple(command), exit_status, wall_s, tuple(processes), delayacct,
                     started_ns, lost, tuple(still_running), tuple(impossible))


# ---------------------------------------------------------------- the page


def render_run(report: RunReport, *, max_rows: int = MAX_ROWS) -> str:
    """The report as one self-contained HTML document."""
    groups = _by_comm([p.summary for p in report.processes])
    tot = totals_of([v for _, v in groups])
    path = critical_path(report.processes)
    body = [_header(report, tot),
            page.section("breakdown", "Where the time went", _breakdown(report, tot, groups)),
            page.section("timeline", "Timeline", _timeline(
                report, max_rows, {id(link.process) for link in path})),
            page.section("critical", "Critical path", pathpage.section(path, report.delayacct)),
            page.section("waits", "Top processes by wait", _top_waits(report)),
            page.section("totals", "Totals", _totals(report, tot, groups))]
    return page.page(f"taskstats run: {' '.join(report.command)}", "".join(body))


def _header(report: RunReport, tot: dict[str, int | None]) -> str:
    state = report.delayacct
    when = f"started {local_time(report.started_ns)}, " if report.started_ns else ""
    status = "none" if report.exit_status is None else str(report.exit_status)
    sub = (f"{when}wall time {human_duration(report.wall_s)}, exit status "
           f"{status}, {count(tot['processes'] or 0)} processes, "
           f"{count(tot['threads'] or 0)} threads")
    figures = [("exit status", status, "the command's exit status (none: no command ran)"),
               ("wall time", human_duration(report.wall_s), "from start to exit of the command"),
               ("processes", f"{count(tot['processes'] or 0)}",
                f"{count(tot['threads'] or 0)} threads")]
    for kind in KINDS[:4]:
        figures.append((kind.label, _kind_text(kind, tot, state), kind.help))
    figures.append(("peak RSS", _kb(tot.get("hiwater_rss")), "the largest process's peak"))
    figures.append(("read / written", f"{_bytes(tot.get('read_bytes'))} / "
                    f"{_bytes(tot.get('write_bytes'))}", "bytes read from and written to "
                    "storage (read_bytes / write_bytes)"))
    html = [f"<h1>taskstats run: <code>{esc(' '.join(report.command))}</code></h1>",
            page.para(sub), page.nav([("breakdown", "Where the time went"),
                                      ("timeline", "Timeline"), ("critical", "Critical path"),
                                      ("waits", "Top waits"),
                                      ("totals", "Totals")]), page.cards(figures)]
    if state is False:
        html.append(page.note(OFF_NOTE))
    if report.lost:
        html.append(page.note(f"{report.lost} exit records were lost (listener overrun): "
                              "the processes they belonged to are missing and totals are "
                              "incomplete."))
    if report.impossible:
        html.append(page.note(_impossible_text(report.impossible)))
    if report.still_running:
        names = ", ".join(f"{c} ({p})" for p, c in report.still_running[:10])
        html.append(page.note(f"Still running when the report was made, not accounted: "
                              f"{names}. `taskstats run --wait-all` waits for them."))
    return "".join(html)


def _impossible_text(items: Sequence[Impossible]) -> str:
    listed = "; ".join(f"{i.comm} (pid {i.pid}): {i.field} {human_duration(i.value_ns / 1e9)} "
                       f"in a life of {human_duration(i.etime_us / 1e6)}" for i in items[:3])
    more = f"; and {len(items) - 3} more" if len(items) > 3 else ""
    return (f"Left out of every figure: {len(items)} delay value{'s' if len(items) > 1 else ''} "
            f"longer than the task lived, which cannot be (a kernel accounting error): "
            f"{listed}{more}.")


def _kind_text(kind: Kind, values: dict[str, int | None], state: bool | None) -> str:
    if not measured(kind, state):
        return "not measured"
    amount = seconds(kind, values)
    return "not available" if amount is None else human_duration(amount)


def _kb(value: int | None) -> str:
    return "-" if value is None else human_bytes(value * 1024)


def _bytes(value: int | None) -> str:
    return "-" if value is None else human_bytes(value)


# ---------------------------------------------------------------- breakdown


def _by_comm(procs: Sequence[ProcessSummary]) -> list[tuple[str, dict[str, int | None]]]:
    """(command name, totals) per command name, most time (all kinds) first."""
    grouped: dict[str, list[ProcessSummary]] = {}
    for p in procs:
        grouped.setdefault(p.comm, []).append(p)
    out = []
    for comm, members in grouped.items():
        values = totals(members)
        values["etime_sum"] = sum(p.etime_us or 0 for p in members)
        out.append((comm, values))
    out.sort(key=lambda item: (-_time(item[1]), item[0]))
    return out


def _time(values: dict[str, int | None]) -> float:
    return sum(seconds(kind, values) or 0.0 for kind in KINDS)


def _parts(values: dict[str, int | None], kinds: Sequence[Kind], name: str
           ) -> list[tuple[str, float, str]]:
    out = []
    for kind in kinds:
        amount = seconds(kind, values) or 0.0
        out.append((kind.colour, amount, f"{name}: {kind.label} {human_duration(amount)}"))
    return out


def _bar(name: str, sub: str, values: dict[str, int | None], kinds: Sequence[Kind]) -> Bar:
    parts = _parts(values, kinds, name)
    whole = sum(amount for _, amount, _ in parts)
    title = f"{name} ({sub}): " + ", ".join(
        f"{kind.label} {human_duration(a)} ({share(a, whole)})"
        for kind, (_, a, _) in zip(kinds, parts, strict=True))
    return Bar(name, sub, parts, human_duration(whole), title)


def _breakdown(report: RunReport, tot: dict[str, int | None],
               groups: list[tuple[str, dict[str, int | None]]]) -> str:
    state = report.delayacct
    kinds = [k for k in KINDS if measured(k, state) and seconds(k, tot) is not None]
    whole = sum(seconds(k, tot) or 0.0 for k in kinds)
    html = [page.para("Time summed over every process and thread of the run; processes "
                      "running in parallel make it larger than the wall time.")]
    html.append(page.legend([(k.colour, f"{k.label} {human_duration(seconds(k, tot) or 0)} "
                              f"({share(seconds(k, tot) or 0, whole)})") for k in kinds]))
    if state is False:
        html.append(page.note(OFF_NOTE))
    missing = [k.label for k in KINDS if measured(k, state) and seconds(k, tot) is None]
    if missing:
        html.append(page.note(f"Not available from this kernel's records: "
                              f"{', '.join(missing)}."))
    html.append(page.figure(stacked_rows([_bar("all processes", "", tot, kinds)], whole,
                                         aria="time overall"), "All processes together."))
    shown = groups[:MAX_COMMANDS]
    bars = [_bar(comm, f"{TIMES}{v['processes']}", v, kinds) for comm, v in shown]
    rest = groups[MAX_COMMANDS:]
    if rest:
        other = totals_of([v for _, v in rest])
        bars.append(_bar(f"{len(rest)} other commands", f"{TIMES}{other['processes']}", other,
                         kinds))
    scale = max((sum(a for _, a, _ in b.parts) for b in bars), default=0.0)
    html.append("<h3>Per command name</h3>")
    html.append(page.figure(stacked_rows(bars, scale, aria="time per command name"),
                            f"{TIMES}N: how many processes had that name. Bars share one "
                            "scale."))
    return "".join(html)


def totals_of(groups: Sequence[dict[str, int | None]]) -> dict[str, int | None]:
    """Sums of group totals (peaks: the largest): ``summary.totals`` of all of them."""
    out: dict[str, int | None] = {"processes": 0, "threads": 0}
    for values in groups:
        for name, v in values.items():
            if v is None:
                out.setdefault(name, None)
            elif name == "hiwater_rss":
                out[name] = max(out.get(name) or 0, v)
            else:
                out[name] = (out.get(name) or 0) + v
    return out


# ---------------------------------------------------------------- timeline


def _weight(p: Process) -> tuple[float, float]:
    return (_time(p.summary.values), p.end_s - p.start_s)


def shown(procs: Sequence[Process], limit: int) -> list[Process]:
    """At most ``limit`` processes: those with the most time (CPU and waits; then the
    longest-lived), each with its ancestors, while they fit."""
    if len(procs) <= limit:
        return list(procs)
    by_tgid = {p.summary.tgid: p for p in procs}
    keep: dict[int, Process] = {}
    for p in heapq.nlargest(4 * limit, procs, key=_weight):
        chain: list[Process] = []
        node: Process | None = p
        while node is not None and node.summary.tgid not in keep and len(chain) <= limit:
            chain.append(node)
            node = by_tgid.get(node.summary.ppid or 0)
        if len(keep) + len(chain) <= limit:
            keep.update((n.summary.tgid, n) for n in chain)
        if len(keep) >= limit:
            break
    return list(keep.values())


def tree_order(procs: Sequence[Process]) -> list[tuple[Process, int]]:
    """Processes depth-first by parent (children by start time), with their depth.
    A process whose parent is not among ``procs`` is a root."""
    tgids = {p.summary.tgid for p in procs}
    children: dict[int | None, list[Process]] = {}
    for p in procs:
        parent = p.summary.ppid if p.summary.ppid in tgids else None
        children.setdefault(parent, []).append(p)
    for kids in children.values():
        kids.sort(key=lambda p: (p.start_s, p.summary.tgid))
    out: list[tuple[Process, int]] = []
    seen: set[int] = set()
    roots = children.get(None, []) + sorted(procs, key=lambda p: (p.start_s, p.summary.tgid))
    for root in roots:  # the second list catches parent cycles (pid reuse)
        stack = [(root, 0)]
        while stack:
            p, depth = stack.pop()
            if id(p) in seen:  # by instance: a reused tgid is another process
                continue
            seen.add(id(p))
            out.append((p, depth))
            stack.extend((c, depth + 1) for c in reversed(children.get(p.summary.tgid, [])))
    return out


def _axis(t0: float, t1: float) -> list[tuple[float, str]]:
    span = t1 - t0
    step = nice_step(span, 6)
    first = -(-t0 // step) * step
    n = int((t1 - first) / step + 1e-9)
    return [((first + i * step - t0) / span, clock(first + i * step, step))
            for i in range(n + 1)]


def _spread(intervals: Iterable[tuple[float, float, float]], bins: int) -> list[float]:
    """Per bin, the average sum of ``rate`` over the intervals (bin units) covering it."""
    steps = [0.0] * (bins + 1)
    parts = [0.0] * bins
    for lo, hi, rate in intervals:
        a, b = min(max(lo, 0.0), bins), min(max(hi, 0.0), bins)
        if b <= a:
            continue
        ia, ib = min(int(a), bins - 1), int(b)
        if ia == ib or (ib == bins and ia == bins - 1):
            parts[ia] += (b - a) * rate
            continue
        parts[ia] += (ia + 1 - a) * rate
        if ib < bins:
            parts[ib] += (b - ib) * rate
        steps[ia + 1] += rate
        steps[ib] -= rate
    out, level = [], 0.0
    for i in range(bins):
        level += steps[i]
        out.append(level + parts[i])
    return out


def _activity(procs: Sequence[Process], t0: float, t1: float) -> str:
    width = (t1 - t0) / BINS
    spans = [((p.start_s - t0) / width, (p.end_s - t0) / width, p) for p in procs]
    alive = _spread(((a, b, 1.0) for a, b, _ in spans), BINS)
    busy = _spread(((a, b, (seconds(RUNNING, p.summary.values) or 0.0) / (b - a) / width)
                    for a, b, p in spans if b > a), BINS)
    titles = [f"{clock(t0 + i * width, width)} to {clock(t0 + (i + 1) * width, width)}: "
              f"{alive[i]:.1f} processes alive, {busy[i]:.1f} CPUs busy (estimated)"
              for i in range(BINS)]
    chart = columns([Series("processes alive", "#c4d3e6", alive),
                     Series("CPUs busy (estimated)", RUNNING.colour, busy)], titles,
                    _axis(t0, t1), lambda v: f"{v:g}", stacked=False, height=150,
                    aria="processes alive and CPUs busy over time")
    return (page.legend([("#c4d3e6", "processes alive"),
                         (RUNNING.colour, "CPUs busy (estimated)")])
            + page.figure(chart, f"Averages over {BINS} intervals of {clock(width, width)}. "
                          "CPUs busy spreads each process's CPU time evenly over its "
                          "lifetime."))


def _colours(rows: Sequence[tuple[Process, int]]) -> dict[str, str]:
    weight: dict[str, float] = {}
    for p, _ in rows:
        weight[p.summary.comm] = weight.get(p.summary.comm, 0.0) + p.end_s - p.start_s
    top = sorted(weight, key=lambda c: (-weight[c], c))[:len(PALETTE)]
    return dict(zip(top, PALETTE, strict=False))


def _span(p: Process, depth: int, axis: tuple[float, float], fill: str,
          state: bool | None, *, critical: bool) -> Span:
    t0, span = axis
    s = p.summary
    waits = ", ".join(f"{k.label} {_kind_text(k, s.values, state)}" for k in WAITS)
    title = (f"{s.comm} (pid {s.tgid}, parent {s.ppid}, {s.threads} thread"
             f"{'s' if s.threads != 1 else ''}): started at {clock(p.start_s, 0.001)}, "
             f"lived {human_duration(p.end_s - p.start_s)}, exit {wait_status(s.exitcode)}; "
             f"CPU {_kind_text(RUNNING, s.values, state)}, {waits}")
    return Span(s.comm, str(s.tgid), depth, (p.start_s - t0) / span, (p.end_s - t0) / span,
                fill, bool(s.exitcode), title + ("; on the critical path" if critical else ""),
                critical)


def _timeline(report: RunReport, max_rows: int, critical: set[int]) -> str:
    procs = report.processes
    if not procs:
        return page.para("No exit records: nothing to draw.")
    t0 = min(0.0, *(p.start_s for p in procs))
    t1 = max(report.wall_s, t0 + 1e-3, *(p.end_s for p in procs))
    path = [p for p in procs if id(p) in critical]  # always drawn, within max_rows
    keep = shown(procs, max(max_rows - len(path), 0))
    kept = {id(p) for p in keep}
    keep += [p for p in path if id(p) not in kept]
    rows = tree_order(keep)
    colours = _colours(rows)
    spans = [_span(p, d, (t0, t1 - t0), colours.get(p.summary.comm, OTHER), report.delayacct,
                   critical=id(p) in critical) for p, d in rows]
    html = ["<h3>Activity</h3>", _activity(procs, t0, t1), "<h3>Processes</h3>"]
    if len(rows) < len(procs):
        html.append(page.note(f"Showing {count(len(rows))} of {count(len(procs))} processes: "
                              "those with the most CPU and wait time, and their parents. Every "
                              "process is counted in the other charts and tables."))
    html.append(page.legend([(c, n) for n, c in colours.items()] + [(OTHER, "other")],
                            outline="exited with an error or a signal"))
    if critical:
        html.append(page.para("Black outline, bold name, dashed joins: the critical path "
                              "(see below)."))
    html.append(page.figure(
        timeline(spans, _axis(t0, t1), aria="process timeline"),
        "One row per process, under its parent; bars from start to exit, in time since the "
        "command started. Hover a bar for its accounting."))
    return "".join(html)


# ---------------------------------------------------------------- waits and totals


def _wait_of(kind: Kind, process: Process) -> float:
    return seconds(kind, process.summary.values) or 0.0


def _top_waits(report: RunReport) -> str:
    html = [page.para(f"The {TOP} processes that waited longest for each resource; share: "
                      "of the process's elapsed time (threads add up, so it can pass 100%).")]
    cells = []
    for kind in WAITS:
        ranked = heapq.nlargest(TOP, report.processes, key=partial(_wait_of, kind))
        rows = []
        for p in ranked:
            wait = seconds(kind, p.summary.values)
            rows.append(WaitRow(p.summary.comm, str(p.summary.tgid), wait,
                                share(wait or 0.0, (p.summary.etime_us or 0) / 1e6)))
        cells.append(wait_table(kind, rows, report.delayacct, "process",
                                ("share", "of the process's elapsed time")))
    html.append(f'<div class="grid2">{"".join(cells)}</div>')
    return "".join(html)


def _totals(report: RunReport, tot: dict[str, int | None],
            groups: list[tuple[str, dict[str, int | None]]]) -> str:
    state = report.delayacct
    headers = [("command", "command name (comm)"), ("processes", "processes"),
               ("threads", "threads"), ("elapsed", "sum of the processes' elapsed times"),
               *totals_headers()]
    shown = groups[:50]
    rows = [totals_row(page.name_cell(comm), [v["processes"], v["threads"]],
                       v.get("etime_sum"), v, state) for comm, v in shown]
    total_row = totals_row("all processes", [tot["processes"], tot["threads"]],
                           tot.get("etime_sum"), tot, state)
    html = [page.para("Per command name, most time first; times summed over processes, peak "
                      "RSS the largest of them.")]
    if len(groups) > len(shown):
        html.append(page.para(f"{len(groups) - len(shown)} more command names are in the "
                              "total only."))
    html.append(page.table(headers, rows, total=total_row))
    if report.impossible:  # under the table too: its sums are the ones that left them out
        html.append(page.note(_impossible_text(report.impossible)))
    return "".join(html)


__all__ = ["Impossible", "Process", "RunReport", "build_run", "plausible", "render_run", "shown",
           "totals_of", "tree_order"]
