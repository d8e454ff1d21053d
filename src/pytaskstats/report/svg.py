"""Charts as inline SVG text.  Horizontal positions are percentages of the chart's
width, so a chart fits any window without a script; heights are pixels.  Every
mark carries a <title> (the browser's tooltip).

``ticks`` are (fraction of the axis 0..1, label); every other label is hidden in a
narrow window (CSS class ``odd``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .fmt import esc, nice_ceiling, pct

ROW = 16  # px per timeline row
BAR_ROW = 24  # px per stacked bar row
FAILED = "#c62828"
CRITICAL = "#111111"


class Span(NamedTuple):
    """A timeline row: a label indented by ``depth``; a bar from ``start`` to ``end``
    (fractions of the axis); ``failed`` draws a red outline; ``critical``: on the
    critical path (a black outline, a bold label, joined to the next such row)."""

    label: str
    sub: str
    depth: int
    start: float
    end: float
    fill: str
    failed: bool
    title: str
    critical: bool = False


class Bar(NamedTuple):
    """A stacked bar row: (colour, value, tooltip) parts, scaled by the chart."""

    label: str
    sub: str
    parts: Sequence[tuple[str, float, str]]
    text: str
    title: str


class Series(NamedTuple):
    """One series of a column chart: a value per column."""

    label: str
    colour: str
    values: Sequence[float]


def _num(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")


def _ticks(ticks: Sequence[tuple[float, str]], top: int, bottom: int, text_y: int) -> str:
    out = []
    for i, (frac, text) in enumerate(ticks):
        x = pct(frac * 100)
        anchor = "start" if frac < 0.02 else "end" if frac > 0.98 else "middle"
        odd = ' class="odd"' if i % 2 else ""
        out.append(f'<line class="gl" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}"/>'
                   f'<text x="{x}" y="{text_y}" text-anchor="{anchor}"{odd}>{esc(text)}</text>')
    return "".join(out)


def mini_bar(frac: float, colour: str, tip: str) -> str:
    """A small bar filling ``frac`` (0..1) of a table cell."""
    return (f'<svg width="100%" height="10" role="img" aria-label="{esc(tip)}">'
            f'<rect width="{pct(frac * 100)}" height="10" rx="2" fill="{esc(colour)}">'
            f"<title>{esc(tip)}</title></rect></svg>")


def timeline(spans: Sequence[Span], ticks: Sequence[tuple[float, str]], *,
             label_pct: float = 28, aria: str = "timeline") -> str:
    """One row per span: label pane left, bars right, time ticks on top."""
    top = 22
    height = top + len(spans) * ROW + 4
    labels, bars, links = [], [], []
    last: tuple[int, float] | None = None  # the previous critical row and its bar's start
    for i, s in enumerate(spans):
        y = top + i * ROW
        indent = 4 + min(s.depth, 8) * 7
        bold = ' font-weight="bold"' if s.critical else ""
        labels.append(f'<text x="{indent}" y="{y + 12}"{bold}>{esc(s.label)} '
                      f'<tspan class="m">{esc(s.sub)}</tspan><title>{esc(s.title)}</title>'
                      "</text>")
        x, w = s.start * 100, max(s.end - s.start, 0.0) * 100
        edge = f' stroke="{FAILED}" stroke-width="1.5"' if s.failed else ""
        if s.critical:
            edge = f' stroke="{CRITICAL}" stroke-width="2" data-critical="1"'
            if last is not None:
                links.append(f'<line class="cpl" x1="{pct(x)}" x2="{pct(x)}" '
                             f'y1="{top + last[0] * ROW + 13}" y2="{y + 3}" '
                             f'stroke="{CRITICAL}" stroke-width="1.5" stroke-dasharray="3 2"/>')
            last = (i, x)
        tick = (f'<line x1="{pct(x)}" x2="{pct(x)}" y1="{y + 3}" y2="{y + 13}" '
                f'stroke="{esc(s.fill)}" stroke-width="2"/>' if w < 0.3 else "")
        bars.append(f'<g><title>{esc(s.title)}</title><rect class="b" x="{pct(x)}" '
                    f'y="{y + 3}" width="{pct(w)}" height="10" rx="2" fill="{esc(s.fill)}"'
                    f"{edge}/>{tick}</g>")
    stripes = (f'<defs><pattern id="tl-stripes" width="8" height="{2 * ROW}" y="{top}" '
               f'patternUnits="userSpaceOnUse"><rect y="{ROW}" width="8" height="{ROW}" '
               'fill="#f3f5f8"/></pattern></defs>'
               f'<rect y="{top}" width="100%" height="{len(spans) * ROW}" '
               'fill="url(#tl-stripes)"/>')
    return (f'<svg class="tl" width="100%" height="{height}" role="img" '
            f'aria-label="{esc(aria)}">{stripes}'
            f'<svg width="{pct(label_pct - 0.5)}" height="{height}">{"".join(labels)}</svg>'
            f'<svg x="{pct(label_pct)}" width="{pct(100 - label_pct)}" height="{height}">'
            f"{_ticks(ticks, top - 4, height, 12)}{''.join(bars)}{''.join(links)}</svg></svg>")


def stacked_rows(bars: Sequence[Bar], scale: float, *, label_pct: float = 24,
                 value_pct: float = 15, aria: str = "stacked bars") -> str:
    """Horizontal stacked bars; a bar of total ``scale`` fills the bar pane."""
    height = len(bars) * BAR_ROW + 2
    bar_pct = 100 - label_pct - value_pct
    labels, rects, values = [], [], []
    for i, bar in enumerate(bars):
        y = i * BAR_ROW
        labels.append(f'<text x="4" y="{y + 16}">{esc(bar.label)} <tspan class="m">'
                      f"{esc(bar.sub)}</tspan><title>{esc(bar.title)}</title></text>")
        x = 0.0
        for colour, amount, tip in bar.parts:
            w = 100 * amount / scale if scale > 0 else 0.0
            if w > 0:
                rects.append(f'<rect x="{pct(x)}" y="{y + 5}" width="{pct(w)}" height="14" '
                             f'fill="{esc(colour)}"><title>{esc(tip)}</title></rect>')
            x += w
        values.append(f'<text x="100%" dx="-4" y="{y + 16}" text-anchor="end">'
                      f"{esc(bar.text)}<title>{esc(bar.title)}</title></text>")
    return (f'<svg class="sr" width="100%" height="{height}" role="img" '
            f'aria-label="{esc(aria)}">'
            f'<svg width="{pct(label_pct - 0.5)}" height="{height}">{"".join(labels)}</svg>'
            f'<svg x="{pct(label_pct)}" width="{pct(bar_pct)}" height="{height}">'
            f'<line class="gl" x1="0" x2="0" y1="0" y2="{height}"/>{"".join(rects)}</svg>'
            f'<svg x="{pct(label_pct + bar_pct)}" width="{pct(value_pct)}" height="{height}">'
            f'{"".join(values)}</svg></svg>')


def columns(series: Sequence[Series], titles: Sequence[str],
            ticks: Sequence[tuple[float, str]], y_text: Callable[[float], str], *,
            stacked: bool = True, height: int = 190, aria: str = "column chart") -> str:
    """A column per title: series stacked (or overlaid, later ones in front); y axis
    from 0 to a round maximum with labels on its grid lines; a tooltip per column."""
    n = max(len(titles), 1)
    tops = [sum(s.values[i] for s in series) if stacked else
            max((s.values[i] for s in series), default=0.0) for i in range(len(titles))]
    peak = max(tops, default=0.0)
    step = nice_ceiling(peak / 4)
    lines = max(1, math.ceil(peak / step - 1e-9))
    top = step * lines
    plot_top, plot_h = 8, height - 30
    gap = 0.12 if n <= 120 else 0.0
    paths = []
    base = [0.0] * len(titles)
    for s in series:
        d = []
        for i, amount in enumerate(s.values):
            h = 1000 * amount / top
            if h > 0:
                y = 1000 - base[i] - h
                d.append(f"M{_num(i + gap / 2)} {_num(y)}h{_num(1 - gap)}v{_num(h)}"
                         f"h-{_num(1 - gap)}z")
            if stacked:
                base[i] += h
        paths.append(f'<path fill="{esc(s.colour)}" d="{"".join(d)}"><title>{esc(s.label)}'
                     "</title></path>")
    hover = "".join(f'<rect class="hov" x="{i}" width="1" height="1000"><title>{esc(t)}'
                    "</title></rect>" for i, t in enumerate(titles))
    grid, labels = [], []
    for k in range(lines + 1):
        y = plot_top + plot_h * (1 - k / lines)
        grid.append(f'<line class="gl" x1="0" x2="100%" y1="{_num(y)}" y2="{_num(y)}"/>')
        if k:
            labels.append(f'<text x="3" y="{_num(y + 11)}" class="yl">'
                          f"{esc(y_text(step * k))}</text>")
    return (f'<svg width="100%" height="{height}" role="img" aria-label="{esc(aria)}">'
            f'{"".join(grid)}'
            f'<svg y="{plot_top}" width="100%" height="{plot_h}" viewBox="0 0 {n} 1000" '
            f'preserveAspectRatio="none" shape-rendering="crispEdges">'
            f'{"".join(paths)}{hover}</svg>{"".join(labels)}'
            f"{_ticks(ticks, plot_top + plot_h, plot_top + plot_h + 4, height - 8)}</svg>")
