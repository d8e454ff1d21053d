"""The report of a time range of taskstatsd's exit journal: exits and delay time per
bucket (a minute, or longer for long ranges), top commands and cgroups by each
kind of wait, and totals.

A bucket holds the delays of the live processes' samples taken in it and of the
tasks that exited in it and were never sampled (their delays count when they
exit, whenever they waited); every task counts once.  The page says so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import delayacct as delayacct_mod
from . import page
from .fmt import count, esc, human_duration, local_time, short_duration
from .kinds import KINDS, OFF_NOTE, WAITS, Kind, measured, seconds
from .svg import Series, columns
from .tables import WaitRow, totals_headers, totals_row, wait_table

# what the report asks Journal.aggregate for: per bucket, times; per group and in all, also
# what the totals table shows
BUCKET_FIELDS = tuple(f for k in KINDS for f in k.fields)
GROUP_FIELDS = (*BUCKET_FIELDS, "ac_etime", "read_bytes", "write_bytes", "nvcsw", "nivcsw",
                "hiwater_rss")
BUCKETS_S = (60, 300, 600, 900, 1800, 3600, 10800, 21600, 43200, 86400)
MAX_BUCKETS = 1440  # a day of minutes
_TICK_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
           604800)
TOP = 10
Row = Mapping[str, Any]


def choose_bucket(span_s: float) -> int:
    """The shortest bucket, in seconds (a minute or more), that cuts ``span_s`` into
    at most MAX_BUCKETS."""
    for bucket in BUCKETS_S:
        if span_s / bucket <= MAX_BUCKETS:
            return bucket
    return 86400 * -(-int(span_s) // (86400 * MAX_BUCKETS))


@dataclass(frozen=True)
class HistoryReport:
    """What the history report shows: ``Journal.aggregate`` rows (implausible delays
    left out, counted in ``implausible``) per bucket of ``bucket_s`` (BUCKET_FIELDS),
    per command and per cgroup, and in all (GROUP_FIELDS); ``delayacct``: the state
    when the report was made;
    ``whole_range``: draw since..until (else only the span that has exits)."""

    since_ns: int
    until_ns: int
    bucket_s: int
    buckets: tuple[Row, ...]
    by_comm: tuple[Row, ...]
    by_cgroup: tuple[Row, ...]
    totals: Row
    delayacct: bool | None
    filters: tuple[tuple[str, str], ...] = ()
    whole_range: bool = True


def _per(bucket_s: int) -> str:
    names = {60: "minute", 3600: "hour", 86400: "day"}
    if bucket_s in names:
        return f"per {names[bucket_s]}"
    if bucket_s % 3600 == 0:
        return f"per {bucket_s // 3600} hours"
    return f"per {bucket_s // 60} minutes" if bucket_s % 60 == 0 else f"per {bucket_s} s"


def render_history(report: HistoryReport) -> str:
    """The report as one self-contained HTML document."""
    title = (f"taskstats history: {local_time(report.since_ns)} to "
             f"{local_time(report.until_ns)}")
    body = [_header(report, title)]
    if not report.totals.get("exits"):
        body.append(page.note("No exits were journaled in this range (with these filters)."))
    else:
        per = _per(report.bucket_s)
        body += [page.section("exits", f"Exits {per}", _exits_chart(report)),
                 page.section("delays", f"Delay time {per}, by kind", _delay_chart(report)),
                 page.section("commands", "Top commands by wait",
                              _tops(report, report.by_comm, "ac_comm", "command")),
                 page.section("cgroups", "Top cgroups by wait",
                              _tops(report, report.by_cgroup, "cgroup", "cgroup")),
                 page.section("totals", "Totals", _totals(report))]
    return page.page(title, "".join(body))


def _header(report: HistoryReport, title: str) -> str:
    tot, state = report.totals, report.delayacct
    ended = sum(b.get("processes") or 0 for b in report.buckets)
    figures = [("exits", count(tot.get("exits") or 0), "task exits journaled (threads too)"),
               ("processes ended", count(ended), "exits that ended a process"),
               ("commands", count(len(report.by_comm)), "distinct command names"),
               ("cgroups", count(len(report.by_cgroup)), "distinct cgroups")]
    for kind in KINDS[:4]:
        text = ("not measured" if not measured(kind, state) else
                human_duration(seconds(kind, tot) or 0.0))
        figures.append((kind.label, text, kind.help))
    filters = "; ".join(f"{k} {v}" for k, v in report.filters)
    html = [f"<h1>{esc(title)}</h1>",
            page.para(f"taskstatsd's exit journal{', ' + filters if filters else ''}. "
                      "Times are local."),
            page.nav([("exits", "Exits"), ("delays", "Delays"), ("commands", "Commands"),
                      ("cgroups", "Cgroups"), ("totals", "Totals")]), page.cards(figures)]
    if tot.get("implausible"):
        html.append(page.note(_implausible_text(tot["implausible"])))
    if state is False:
        html.append(page.note(f"{OFF_NOTE}. That is the state now; exits journaled while it "
                              "was on do have them."))
    elif state:
        html.append(page.para(f"Delay accounting is on now; {delayacct_mod.LATE_NOTE}, and "
                              "so do exits journaled while it was off."))
    return "".join(html)


def _range(report: HistoryReport) -> tuple[int, int]:
    """First bucket index and the number of buckets drawn."""
    width = report.bucket_s * 1_000_000_000
    first, last = report.since_ns // width, (report.until_ns - 1) // width
    if not report.whole_range and report.buckets:
        indexes = [b["bucket_ns"] // width for b in report.buckets]
        first, last = min(indexes), max(indexes)
    return first, max(last - first + 1, 1)


def _grid(report: HistoryReport) -> tuple[list[Row | None], int]:
    """One slot per bucket drawn (None: no exits) and the first bucket's start, ns."""
    width = report.bucket_s * 1_000_000_000
    first, n = _range(report)
    slots: list[Row | None] = [None] * n
    for b in report.buckets:
        i = b["bucket_ns"] // width - first
        if 0 <= i < n:
            slots[i] = b
    return slots, first * width


def _ticks(start_ns: int, n: int, bucket_s: int) -> list[tuple[float, str]]:
    span = n * bucket_s
    step = next((s for s in _TICK_S if span / s <= 6), _TICK_S[-1])
    offset = time.localtime(start_ns / 1e9).tm_gmtoff
    start_s = start_ns / 1e9
    first = -(-(start_s + offset) // step) * step - offset
    fmt = "%m-%d %H:%M" if span > 86400 or step >= 86400 else "%H:%M"
    out = []
    t = first
    while t <= start_s + span:
        out.append(((t - start_s) / span, time.strftime(fmt, time.localtime(t))))
        t += step
    return out


def _slot_title(start_ns: int, bucket_s: int, text: str) -> str:
    end = start_ns + bucket_s * 1_000_000_000
    return f"{local_time(start_ns)} to {local_time(end, date=False)}: {text}"


def _exits_chart(report: HistoryReport) -> str:
    slots, start = _grid(report)
    step = report.bucket_s * 1_000_000_000
    exits = [float(s["exits"]) if s else 0.0 for s in slots]
    titles = [_slot_title(start + i * step, report.bucket_s,
                          f"{int(exits[i])} exits, of which {(s or {}).get('processes') or 0} "
                          "ended a process") for i, s in enumerate(slots)]
    chart = columns([Series("exits", "#4e79a7", exits)], titles,
                    _ticks(start, len(slots), report.bucket_s), lambda v: f"{v:g}",
                    aria="exits over time")
    return page.figure(chart, f"Task exits (threads included) {_per(report.bucket_s)}. "
                       "Hover a column for its numbers.")


def _delay_chart(report: HistoryReport) -> str:
    slots, start = _grid(report)
    step = report.bucket_s * 1_000_000_000
    kinds = [k for k in WAITS if measured(k, report.delayacct)]
    series = [Series(k.label, k.colour, [seconds(k, s) or 0.0 if s else 0.0 for s in slots])
              for k in kinds]
    titles = [_slot_title(start + i * step, report.bucket_s, ", ".join(
        f"{k.label} {human_duration(s.values[i])}" for k, s in zip(kinds, series, strict=True)))
        for i in range(len(slots))]
    chart = columns(series, titles, _ticks(start, len(slots), report.bucket_s),
                    short_duration, aria="delay time over time")
    html = [page.legend([(k.colour, f"{k.label} {human_duration(seconds(k, report.totals) or 0)}")
                         for k in kinds])]
    if report.delayacct is False:
        html.append(page.note(OFF_NOTE))
    html.append(page.figure(chart, "Seconds of delay in each interval: live processes' "
                            "samples, and tasks that exited unsampled (their delays "
                            "count when they exit)."))
    return "".join(html)


def _wait_rows(rows: Sequence[Row], key: str, kind: Kind) -> list[WaitRow]:
    ranked = sorted(rows, key=lambda r: -(seconds(kind, r) or 0.0))[:TOP]
    out = []
    for r in ranked:
        wait, exits = seconds(kind, r), r.get("exits") or 0
        mean = human_duration((wait or 0.0) / exits) if exits else "-"
        out.append(WaitRow(str(r.get(key) or "(unknown)"), f"{count(exits)} exits", wait,
                           mean))
    return out


def _tops(report: HistoryReport, rows: Sequence[Row], key: str, what: str) -> str:
    cells = [wait_table(kind, _wait_rows(rows, key, kind), report.delayacct, what,
                        ("per exit", "mean wait per exit")) for kind in WAITS]
    intro = page.para(f"The {TOP} {what}s whose exited tasks waited longest, per kind.")
    return intro + f'<div class="grid2">{"".join(cells)}</div>'


def _totals(report: HistoryReport) -> str:
    state = report.delayacct
    ranked = sorted(report.by_comm, key=lambda r: -sum(seconds(k, r) or 0.0 for k in KINDS))
    headers = [("command", "command name (comm)"), ("exits", "task exits"),
               ("elapsed", "sum of the tasks' elapsed times"), *totals_headers()]
    rows = [totals_row(page.name_cell(str(r.get("ac_comm") or "?")), [r.get("exits")],
                       r.get("ac_etime"), r, state) for r in ranked[:30]]
    tot = report.totals
    html = [page.para("Per command name, most time first (30 at most); times summed over "
                      "exited tasks, peak RSS the largest.")]
    html.append(page.table(headers, rows, total=totals_row(
        "all", [tot.get("exits")], tot.get("ac_etime"), tot, state)))
    if tot.get("implausible"):
        html.append(page.note(_implausible_text(tot["implausible"])))
    return "".join(html)


def _implausible_text(n: int) -> str:
    return (f"Left out of every figure: delays of {n} exit{'s' if n > 1 else ''} that were "
            "longer than the task lived, which cannot be (a kernel accounting error).")
