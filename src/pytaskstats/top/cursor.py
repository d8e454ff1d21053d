"""The selected row and the scroll position of the full-screen views (pure).

The selection is a row's identity (:func:`row_key`: the pid or tid, the cgroup's
path), so it follows the same process when a refresh reorders the rows; when that
row is gone the selection stays at its place in the list.  ``top`` is the first
row on screen, kept so that the selected row is visible.
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
    """The selected row (``key``, at position ``row`` of the rows) and the first row
    shown (``top``)."""

    key: Hashable | None = None
    row: int = 0
    top: int = 0


def row_key(row: Row, level: str) -> Hashable:
    """A row's identity across refreshes: its cgroup path per cgroup, else its id."""
    return row.cgroup if level == "cgroup" else row.pid


def _at(index: int, keys: Sequence[Hashable], top: int, page: int) -> Cursor:
    """The cursor at ``index`` (clamped), ``top`` moved just enough to show it."""
    if not keys:
        return Cursor()
    index = min(max(index, 0), len(keys) - 1)
    page = max(page, 1)
    top = min(max(top, index - page + 1), index)
    top = max(min(top, len(keys) - page), 0)
    return Cursor(keys[index], index, top)


def place(cursor: Cursor, keys: Sequence[Hashable], page: int) -> Cursor:
    """The cursor over new rows (their ``keys``, in display order): on the row it
    had if still there, else at the same place; ``page``: rows on screen."""
    try:
        index = keys.index(cursor.key) if cursor.key is not None else cursor.row
    except ValueError:
        index = cursor.row
    return _at(index, keys, cursor.top, page)


def move(cursor: Cursor, keys: Sequence[Hashable], page: int, how: str) -> Cursor:
    """The cursor after the move ``how`` (a :data:`MOVES` name)."""
    current = place(cursor, keys, page)
    step, unit = MOVES[how]
    if unit == "end":
        return _at(0 if step < 0 else len(keys) - 1, keys, current.top, page)
    size = max(page, 1) if unit == "page" else 1
    top = current.top + step * size if unit == "page" else current.top
    return _at(current.row + step * size, keys, top, page)
