"""What the user looks at: view state, the named sort orders, filters, cgroup groups.

Pure functions over a :class:`~.model.Frame`; the screen and batch mode share them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from .model import METRICS, Frame, Row

__all__ = ["LEVELS", "SORTS", "Filters", "SortOrder", "ViewState", "parse_filters", "view"]

LEVELS = ("process", "thread", "cgroup")  # rows per process, per thread, per cgroup
INTERVALS = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)  # the +/- steps, seconds


class SortOrder(NamedTuple):
    """A way to order rows: its name (-s NAME, JSON), screen key, column header and
    natural direction; ``value`` None sorts last either way."""

    name: str
    key: str
    label: str
    descending: bool
    value: Callable[[Row], float | str | int | None]


def _metric(position: int) -> Callable[[Row], float | None]:
    return lambda row: row.values[position]


_METRIC_SORTS = (("cpu", "c"), ("cpuwait", "w"), ("iowait", "i"), ("memwait", "m"),
                 ("irq", "x"), ("read", "r"), ("write", "o"), ("ctxsw", "s"))
SORTS: dict[str, SortOrder] = {s.name: s for s in (
    SortOrder("pid", "p", "PID", False, lambda r: r.pid),
    SortOrder("user", "u", "USER", False, lambda r: r.user),
    *(SortOrder(name, key, m.label, True, _metric(i))
      for i, ((name, key), m) in enumerate(zip(_METRIC_SORTS, METRICS, strict=True))),
    SortOrder("rss", "M", "RSS", True, lambda r: r.rss),
    SortOrder("command", "n", "COMMAND", False, lambda r: r.command.lower()),
)}
SORT_KEYS = {s.key: s.name for s in SORTS.values()}


def sort_rows(rows: Iterable[Row], name: str, reverse: bool = False) -> list[Row]:
    """Rows in the order ``name`` (its natural direction, flipped by ``reverse``);
    rows without a value last; ties by pid."""
    order = SORTS[name]
    known: list[tuple[float | str | int, Row]] = []
    unknown: list[Row] = []
    for row in sorted(rows, key=lambda r: r.pid):
        value = order.value(row)
        if value is None:
            unknown.append(row)
        else:
            known.append((value, row))
    known.sort(key=lambda pair: pair[0], reverse=order.descending != reverse)
    return [row for _, row in known] + unknown


@dataclass(frozen=True)
class Filters:
    """Row filters: ``user`` (name or uid), ``command`` (substring, any case) and
    ``cgroup`` (that cgroup and those below it)."""

    user: str | None = None
    command: str | None = None
    cgroup: str | None = None

    def match(self, row: Row) -> bool:
        """Whether ``row`` passes every filter that is set."""
        if self.user is not None and self.user not in (row.user, str(row.uid)):
            return False
        if self.command is not None and self.command.lower() not in row.command.lower():
            return False
        return self.cgroup is None or _below(row.cgroup, self.cgroup)

    def describe(self) -> str:
        """``user=alice comm=nginx`` or "none"."""
        parts = [f"{k}={v}" for k, v in (("user", self.user), ("comm", self.command),
                                           ("cgroup", self.cgroup)) if v is not None]
        return " ".join(parts) or "none"


def _below(path: str | None, top: str) -> bool:
    if path is None:
        return False
    top = top.rstrip("/") or "/"
    return top in ("/", path) or path.startswith(top + "/")


_FILTER_KEYS = {"user": "user", "u": "user", "comm": "command", "command": "command",
                "c": "command", "cgroup": "cgroup", "g": "cgroup"}


def parse_filters(text: str) -> Filters:
    """``user=U comm=TEXT cgroup=PATH`` (any subset; a bare word is a command
    filter; empty text clears).  Raises ValueError on an unknown key."""
    values: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if not sep:
            key, value = "comm", word
        if key not in _FILTER_KEYS:
            raise ValueError(f"unknown filter {key!r}: use user=, comm= or cgroup=")
        values[_FILTER_KEYS[key]] = value
    return Filters(**values)


@dataclass(frozen=True)
class ViewState:
    """Everything the user chose: rows per ``level``, sort, filters, pace."""

    sort: str = "cpu"
    reverse: bool = False
    level: str = "process"
    filters: Filters = Filters()
    interval: float = 2.0
    paused: bool = False
    active_only: bool = False
    limit: int = 0  # rows at most (0: all)
    tree: bool = False  # processes under their parents (per process only)
    full_command: bool = False  # the command line instead of the comm

    def with_sort(self, name: str) -> ViewState:
        """Sort by ``name``; choosing the current order again flips it."""
        if name == self.sort:
            return replace(self, reverse=not self.reverse)
        return replace(self, sort=name, reverse=False)

    def step_sort(self, step: int) -> ViewState:
        """The previous (-1) or next (+1) column's order."""
        names = list(SORTS)
        return replace(self, sort=names[(names.index(self.sort) + step) % len(names)],
                       reverse=False)

    def step_interval(self, step: int) -> ViewState:
        """The next shorter (-1) or longer (+1) refresh interval."""
        if step > 0:
            longer = [i for i in INTERVALS if i > self.interval]
            return replace(self, interval=longer[0] if longer else self.interval)
        shorter = [i for i in INTERVALS if i < self.interval]
        return replace(self, interval=shorter[-1] if shorter else self.interval)

    def next_level(self, level: str) -> ViewState:
        """Switch to ``level``, or back to processes if already there."""
        return replace(self, level="process" if self.level == level else level)

    def describe_sort(self) -> str:
        """``IOW% desc``."""
        order = SORTS[self.sort]
        down = order.descending != self.reverse
        return f"{order.label} {'desc' if down else 'asc'}"


def active(row: Row) -> bool:
    """Exited, or any rate above zero."""
    return row.exited or any(v for v in row.values)


def group_by_cgroup(rows: Iterable[Row]) -> list[Row]:
    """One row per cgroup summing its live processes (their values share the
    interval, so percentages and rates add up); ``pid`` counts processes."""
    groups: dict[str | None, list[Row]] = {}
    for row in rows:
        if not row.exited:
            groups.setdefault(row.cgroup, []).append(row)
    return [_cgroup_row(path, members) for path, members in groups.items()]


def _cgroup_row(path: str | None, members: Sequence[Row]) -> Row:
    values = tuple(
        None if all(v is None for v in column) else sum(v or 0.0 for v in column)
        for column in zip(*(m.values for m in members), strict=True))
    totals = tuple(sum(column) for column in zip(*(m.totals for m in members), strict=True))
    users = {m.user for m in members}
    return Row(pid=len(members), tgid=0, uid=None,
               user=users.pop() if len(users) == 1 else "*", command=path or "?",
               cgroup=path, threads=sum(m.threads for m in members), exited=False,
               seconds=members[0].seconds, totals=totals, values=values)


def as_tree(rows: Sequence[Row]) -> list[Row]:
    """``rows`` (in sort order) as a forest: each live process right after its live
    parent (when shown), children in their sort order, ``depth`` set; the others
    (roots, exited rows, and any cycle) at depth 0 in their own order."""
    live = {r.pid for r in rows if not r.exited}
    children: dict[int, list[Row]] = {}
    roots = []
    for row in rows:
        if not row.exited and row.ppid in live and row.ppid != row.pid:
            children.setdefault(row.ppid, []).append(row)
        else:
            roots.append(row)
    out: list[Row] = []
    seen: set[int] = set()
    for top in [*roots, *(r for kids in children.values() for r in kids)]:
        stack = [(top, 0)]
        while stack:
            row, depth = stack.pop()
            if id(row) in seen:
                continue
            seen.add(id(row))
            out.append(replace(row, depth=depth) if depth else row)
            if not row.exited:
                stack += [(kid, depth + 1) for kid in reversed(children.get(row.pid, ()))]
    return out


def view(frame: Frame, state: ViewState) -> list[Row]:
    """The rows to show: the level's rows, filtered, grouped, sorted (as a tree, per
    process when ``state.tree``) and limited."""
    level = "thread" if state.level == "thread" else "process"
    rows: Iterable[Row] = (r for r in frame.rows(level) if state.filters.match(r))
    if state.active_only:
        rows = (r for r in rows if active(r))
    if state.level == "cgroup":
        rows = group_by_cgroup(rows)
    out = sort_rows(rows, state.sort, state.reverse)
    if state.tree and state.level == "process":
        out = as_tree(out)
    return out[:state.limit] if state.limit > 0 else out
