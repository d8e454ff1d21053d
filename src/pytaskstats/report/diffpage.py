"""The HTML page of ``taskstats diff --report``: two runs side by side.

The whole run's figures for A and B with the change, then per command name (most
important first, see :mod:`.compare`) a pair of stacked bars (A above B: CPU and
each wait, one scale for all) and a table of every field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from . import page
from .compare import FIELDS, LABELS, TIME_FIELDS, UNITS, Change, Job
from .fmt import esc, human_bytes, human_duration
from .kinds import CPU, IO, MEMORY, RUNNING
from .svg import Bar, stacked_rows

MAX_COMMANDS = 30  # command names drawn and listed; the rest are in the totals
_BAR_KINDS = ((RUNNING, "cpu"), (CPU, "cpu_wait"), (IO, "io_wait"), (MEMORY, "memory_wait"))


def _value(x: float | None, field: str) -> str:
    if x is None:
        return "n/a"
    unit = UNITS[field]
    if unit == "s":
        return human_duration(x)
    return human_bytes(x) if unit == "B" else f"{x:.0f}"


def _pct(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "new" if math.isinf(p) else f"{p:+.1f}%"


def _delta(change: Change, field: str) -> str:
    d = change.delta(field)
    if d is None:
        return "n/a"
    sign = "+" if d > 0 else "-" if d < 0 else ""
    return f"{sign}{_value(abs(d), field)} ({_pct(change.percent(field))})"


def _bars(change: Change, a: str, b: str) -> list[Bar]:
    out = []
    for side, values in ((a, change.a), (b, change.b)):
        parts = [(k.colour, values.get(f) or 0.0, f"{change.comm} in {side}: {k.label} "
                  f"{_value(values.get(f), f)}") for k, f in _BAR_KINDS]
        whole = sum(p[1] for p in parts)
        out.append(Bar(change.comm if side == a else "", side, parts, human_duration(whole),
                       f"{change.comm} in {side}: " + ", ".join(p[2].split(": ", 1)[1]
                                                               for p in parts)))
    return out


def _table(changes: Sequence[Change]) -> str:
    headers = [("command", "command name (comm); all: the whole run")]
    for f in FIELDS:
        headers += [(f"{LABELS[f]} A", f"{LABELS[f]} in run A"),
                    (f"{LABELS[f]} B", f"{LABELS[f]} in run B"),
                    ("change", f"{LABELS[f]}: B - A (percent of A)")]
    rows = [[page.name_cell(c.comm), *(cell for f in FIELDS for cell in (
        esc(_value(c.a.get(f), f)), esc(_value(c.b.get(f), f)), esc(_delta(c, f))))]
            for c in changes]
    return page.table(headers, rows)


def render_diff(a: Job, b: Job, whole: Change, changes: Sequence[Change]) -> str:
    """The page as one self-contained HTML document."""
    def cmd(job: Job) -> str:
        status = "?" if job.exit_status is None else job.exit_status
        return f"{' '.join(job.command) or '?'} (exit status {status})"
    title = f"taskstats diff: {a.label} vs {b.label}"
    cards = [(f"{LABELS[f]} A / B", f"{_value(whole.a.get(f), f)} / {_value(whole.b.get(f), f)}",
              f"change {_delta(whole, f)}") for f in FIELDS]
    head = [f"<h1>{esc(title)}</h1>",
            page.para(f"A: {a.label}: {cmd(a)}; B: {b.label}: {cmd(b)}"),
            page.nav([("whole", "Whole run"), ("commands", "Per command name"),
                      ("table", "Table")]),
            page.cards(cards)]
    shown = list(changes[:MAX_COMMANDS])
    bars = [bar for c in shown for bar in _bars(c, "A", "B")]
    scale = max((sum(p[1] for p in bar.parts) for bar in bars), default=0.0)
    body = [page.section("whole", "Whole run", page.table(
        [("field", "what is compared"), ("A", "run A"), ("B", "run B"),
         ("change", "B - A (percent of A)")],
        [[esc(LABELS[f]), esc(_value(whole.a.get(f), f)), esc(_value(whole.b.get(f), f)),
          esc(_delta(whole, f))] for f in FIELDS])),
        page.section("commands", "Per command name", "".join([
            page.para("Time summed over each name's processes, A above B; most changed "
                      f"first (largest change in seconds of {', '.join(TIME_FIELDS)})."),
            page.legend([(k.colour, k.label) for k, _ in _BAR_KINDS]),
            page.figure(stacked_rows(bars, scale, aria="A and B per command name"),
                        f"{len(shown)} of {len(changes)} command names; bars share one "
                        "scale.")])),
        page.section("table", "Table", _table([whole, *shown]))]
    return page.page(title, "".join(head + body))


__all__ = ["render_diff"]
