"""The selected row and the scroll position of the full-screen views (pure).

Once moved, the selection is a row's identity (:func:`row_key`: the pid or tid,
the cgroup's path), so it follows the same process when a refresh reorders the
rows; when that row is gone the selection stays at its place in the list.  Until
then, and after Home, it is the first row, whichever that is (a fresh view, as
top's).  ``top`` is the first row on screen, kept so that the selected row shows.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

from .frame import Row

__all__ = ["MOVES", "Cursor", "move", "place", "row_key"]

# key name -> the move it makes: rows (or pages, "page") up or down, to an end
MOVES = {"up": (-1, "row"), "down": (1, "row"), "pgup": (-1, "page"), "pgdn": (1, "page"),
         "home": (-1, "end"), "end": (1, "end")}


class Cursor(NamedTuple):
    """The selected row (``key``, at position ``row`` of the rows), the first row
    shown (``top``), and whether the selection follows its row (``pinned``)."""

    key: Hashable | None = None
    row: int = 0
    top: int = 0
    pinned: bool = False


def row_key(row: Row, level: str) -> Hashable:
    """A row's identity across refreshes: its cgroup path per cgroup, else its id."""
    return row.cgroup if level == "cgroup" else row.pid


def _at(index: int, keys: Sequence[Hashable], top: int, page: int, pinned: bool
        ) -> Cursor:
    """The cursor at ``index`` (clamped), ``top`` moved just enough to show it."""
    if not keys:
        return Cursor(pinned=pinned)
    index = min(max(index, 0), len(keys) - 1)
    page = max(page, 1)
    top = min(max(top, index - page + 1), index)
    top = max(min(top, len(keys) - page), 0)
    return Cursor(keys[index], index, top, pinned)


def place(cursor: Cursor, keys: Sequence[Hashable], page: int) -> Cursor:
    """The cursor over new rows (their ``keys``, in display order): pinned, on the
    row it had if still there, else at the same place; ``page``: rows on screen."""
    index = cursor.row
    if cursor.pinned and cursor.key in keys:
        index = keys.index(cursor.key)
    return _at(index, keys, cursor.top, page, cursor.pinned)


def move(cursor: Cursor, keys: Sequence[Hashable], page: int, how: str) -> Cursor:
    """The cursor after the move ``how`` (a :data:`MOVES` name): pinned to its new
    row, except Home (the first row, whichever it is)."""
    current = place(cursor, keys, page)
    step, unit = MOVES[how]
    if unit == "end":
        return _at(0 if step < 0 else len(keys) - 1, keys, current.top, page, step > 0)
    size = max(page, 1) if unit == "page" else 1
    top = current.top + step * size if unit == "page" else current.top
    return _at(current.row + step * size, keys, top, page, True)
