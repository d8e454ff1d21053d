"""Tables shared by the reports: totals rows and the top-N tables per kind of wait."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from . import page
from .fmt import count, esc, human_duration, value
from .kinds import COLUMNS, Column, Kind, measured, total
from .svg import mini_bar

NOT_MEASURED = '<span class="m" title="not measured: delay accounting off">n/a</span>'


def totals_headers() -> list[tuple[str, str]]:
    """(title, tooltip) of the value columns."""
    return [(c.title, c.help) for c in COLUMNS]


def cell(column: Column, values: Mapping[str, Any], delayacct: bool | None) -> str:
    """One value cell: human units; "n/a" when not measured."""
    if column.needs_delayacct and delayacct is False:
        return NOT_MEASURED
    return esc(value(total(values, column.fields), column.unit))


def totals_row(name_html: str, counts: Sequence[int | None], elapsed_us: int | None,
               values: Mapping[str, Any], delayacct: bool | None) -> list[str]:
    """A row: the name (HTML), counts, summed elapsed time (us), then the columns."""
    return [name_html, *(count(n or 0) for n in counts), esc(value(elapsed_us, "us")),
            *(cell(c, values, delayacct) for c in COLUMNS)]


class WaitRow(NamedTuple):
    """A row of a top-N table: a name, muted detail, the wait (s), a derived figure."""

    name: str
    sub: str
    wait_s: float | None
    extra: str


def wait_table(kind: Kind, rows: Sequence[WaitRow], delayacct: bool | None, what: str,
               extra: tuple[str, str]) -> str:
    """A titled table of the rows that waited (wait > 0), with bars on one scale;
    says so instead when the kind is not measured, not available, or nobody waited."""
    head = f'<div><h3><span class="sw" style="background:{kind.colour}"></span>' \
           f"{esc(kind.label)}</h3>"
    if not measured(kind, delayacct):
        return head + page.para("Not measured: delay accounting was off.") + "</div>"
    if all(r.wait_s is None for r in rows):
        return head + page.para("Not available from this kernel's records.") + "</div>"
    waited = [r for r in rows if r.wait_s]
    if not waited:
        return head + page.para(f"Zero for every {what} ({kind.help}).") + "</div>"
    top = max(r.wait_s or 0.0 for r in waited)
    body = [[page.name_cell(r.name, r.sub), esc(human_duration(r.wait_s or 0.0)), esc(r.extra),
             mini_bar((r.wait_s or 0.0) / top, kind.colour,
                      f"{r.name}: {human_duration(r.wait_s or 0.0)}")] for r in waited]
    headers = [(what, what), (kind.label, kind.help), extra, ("", "on one scale")]
    return head + page.table(headers, body, bar=3) + "</div>"
