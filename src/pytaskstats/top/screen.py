"""The full-screen view: curses from the standard library, 80x24 and up, over SSH.

Layout: four header lines (source and pace, delay accounting, exits, view), the
column header, the rows, and a key line at the bottom.  ``curses.wrapper`` sets
the terminal up and restores it on any exit, exceptions included.  Sampling goes
on while the display is paused, so no exit or delta is lost.
"""

from __future__ import annotations

import contextlib
import curses
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .. import delayacct
from ..errors import TaskstatsError
from . import actions
from .batch import DRAIN_EVERY_S, info
from .cursor import MOVES, Cursor, move, place, row_key
from .model import Frame, Model, Row
from .render import WIDE_AT, Info, header_lines, last_column_at, row_cells, table_header
from .sampler import Sampler
from .view import SORT_KEYS, SORTS, ViewState, parse_filters, view

__all__ = ["ACTION_KEYS", "KEYS", "Display", "Screen", "apply_key", "help_lines",
           "run_screen"]

FIRST_REFRESH_S = 0.5  # the first rates come this soon, then every interval
MIN_SIZE = (8, 40)  # lines, columns
HEADER_LINES = 6  # five header lines and the column header

# help label -> what it does; the sort keys come from view.SORTS
KEYS: dict[str, str] = {
    "q": "quit", "h ?": "this help",
    "space": "pause the display", "t": "per thread / per process",
    "g": "per cgroup / per process", "f": "filter user= comm= cgroup=",
    "a": "only active rows / all", "R": "reverse the sort",
    "< >": "sort: the column left/right", "+ -": "longer / shorter interval",
    "V F5": "tree: child under parent", "C": "full command line / comm",
    "Up Down": "select a row", "PgUp PgDn": "a page up / down",
    "Home End": "the first / last row", "k F9": "signal the selected process",
    "N F7 F8": "renice it (F7 -1, F8 +1)", "D": "delay accounting on (root)",
}
KEY_LINE = ("q quit h help  sort: " + " ".join(s.key for s in SORTS.values())
            + " R  t threads g cgroups V tree f filter  space pause  k kill N nice")
# curses key codes -> our key names (one character keys stand for themselves)
SPECIAL = {curses.KEY_LEFT: "<", curses.KEY_RIGHT: ">", curses.KEY_UP: "up",
           curses.KEY_DOWN: "down", curses.KEY_PPAGE: "pgup", curses.KEY_NPAGE: "pgdn",
           curses.KEY_HOME: "home", curses.KEY_END: "end", curses.KEY_F5: "F5",
           curses.KEY_F7: "F7", curses.KEY_F8: "F8", curses.KEY_F9: "F9"}
ACTION_KEYS = ("k", "F9", "N", "F7", "F8")  # signal, renice: the live view only


COLUMNS_HELP = (
    "% of the interval: CPU% running, CPUW% waiting for a CPU, IOW% for block IO,",
    "MEMW% for memory (swap-in, reclaim, thrashing, compaction, wp copy), IRQ%",
    "interrupts; RD/s WR/s storage bytes, CSW/s context switches per second; from",
    f"{WIDE_AT} columns RSS, PEAK resident bytes, THR threads.  S: state, X exited.",
)


def help_lines(keys: Mapping[str, str] = KEYS, title: str = "taskstats top keys"
               ) -> list[str]:
    """The help screen: sort keys, other ``keys`` two a line, what the columns mean
    (fits 80x24)."""
    sorts = [f"{s.key} {s.label}" for s in SORTS.values()]
    cells = [f"  {label:<9} {text:<27}" for label, text in keys.items()]
    pairs = ["".join(cells[i:i + 2]).rstrip() for i in range(0, len(cells), 2)]
    return [f"{title} (any key returns)",
            "sort: " + "  ".join(sorts[:7]),
            "      " + "  ".join(sorts[7:]) + "  (again: reverse)",
            *pairs, "", *COLUMNS_HELP]


def apply_key(state: ViewState, key: str) -> ViewState | None:
    """The view after a key that only changes the view; None for other keys."""
    if key in SORT_KEYS:
        return state.with_sort(SORT_KEYS[key])
    steps = {"<": state.step_sort(-1), ">": state.step_sort(1),
             "+": state.step_interval(1), "-": state.step_interval(-1)}
    if key in steps:
        return steps[key]
    toggles = {" ": replace(state, paused=not state.paused),
               "t": state.next_level("thread"), "g": state.next_level("cgroup"),
               "a": replace(state, active_only=not state.active_only),
               "R": replace(state, reverse=not state.reverse),
               "V": replace(state, tree=not state.tree),
               "F5": replace(state, tree=not state.tree),
               "C": replace(state, full_command=not state.full_command)}
    return toggles.get(key)


def _key_name(key: str | int) -> str:
    if isinstance(key, str):
        return key
    return SPECIAL.get(key, "")


class Display:
    """What the live and the replay screens share: the window, the view state, the
    frame on display, the selected row, the message on the key line; drawing,
    moving the selection, prompts, help."""

    key_line = KEY_LINE

    def __init__(self, win: Any, state: ViewState, frame: Frame) -> None:
        self.win, self.state, self.frame = win, state, frame
        self.message = ""
        self.cursor = Cursor()
        self.rows: list[Row] = []  # as last drawn, in display order
        self.page = 1  # rows that fit on screen
        self._level = state.level  # of the rows the cursor is over

    def header_info(self) -> Info:
        """What the header says about the source."""
        raise NotImplementedError

    def help_text(self) -> list[str]:
        """The lines of the help screen."""
        return help_lines()

    def _read(self) -> str | None:
        try:
            key = self.win.get_wch()
        except curses.error:
            return None  # timed out
        if key == curses.KEY_RESIZE:
            curses.update_lines_cols()
            return "\x00resize"
        return _key_name(key) or None

    def navigate(self, key: str) -> bool:
        """Move the selection for a move key (:data:`.cursor.MOVES`); False for others."""
        if key not in MOVES:
            return False
        keys = [row_key(r, self.state.level) for r in self.rows]
        self.cursor = move(self.cursor, keys, self.page, key)
        return True

    def selected(self) -> Row | None:
        """The selected row as last drawn (None when there are no rows)."""
        if not self.rows:
            return None
        return self.rows[min(self.cursor.row, len(self.rows) - 1)]

    def _filter(self) -> None:
        text = self._prompt(f"filter [{self.state.filters.describe()}]: ")
        if text is None:
            return
        try:
            self.state = replace(self.state, filters=parse_filters(text))
        except ValueError as err:
            self.message = str(err)

    def _prompt(self, label: str) -> str | None:
        """A line typed on the bottom row: Enter takes it, Esc cancels."""
        text = ""
        self.win.timeout(-1)
        while True:
            self._put(self.win.getmaxyx()[0] - 1, label + text, curses.A_BOLD, clear=True)
            try:
                key = self.win.get_wch()
            except curses.error:
                continue
            if key in ("\n", "\r", curses.KEY_ENTER):
                return text
            if key == "\x1b":
                return None
            if key in (curses.KEY_BACKSPACE, "\x7f", "\b"):
                text = text[:-1]
            elif isinstance(key, str) and key.isprintable():
                text += key

    def _confirm(self, question: str) -> bool:
        """A yes/no question on the bottom row: y answers yes, any other key no."""
        self.win.timeout(-1)
        self._put(self.win.getmaxyx()[0] - 1, question + " [y/N] ", curses.A_BOLD,
                  clear=True)
        while True:
            try:
                return self.win.get_wch() in ("y", "Y")
            except curses.error:
                continue

    def _help(self) -> None:
        self.win.erase()
        for y, line in enumerate(self.help_text()[:self.win.getmaxyx()[0]]):
            self._put(y, line)
        self.win.timeout(-1)
        with contextlib.suppress(curses.error):
            self.win.get_wch()

    def draw(self) -> None:
        """Paint header, column header, the rows from the cursor's top (the
        selected one highlighted) and the key line."""
        self.win.erase()
        lines, cols = self.win.getmaxyx()
        if lines < MIN_SIZE[0] or cols < MIN_SIZE[1]:
            self._put(0, f"terminal too small ({cols}x{lines}); q quits")
            self.win.refresh()
            return
        head = header_lines(self.frame, self.header_info(), self.state)
        for y, line in enumerate(head):
            self._put(y, line, curses.A_BOLD if y == 0 else curses.A_NORMAL)
        wide = cols >= WIDE_AT
        self._put(len(head), table_header(self.state, wide), curses.A_REVERSE, clear=True)
        off = self.frame.delayacct is False
        width = max(cols - 1 - last_column_at(wide), 4)
        self.rows = view(self.frame, self.state)
        self.page = max(lines - HEADER_LINES - 1, 1)
        if self.state.level != self._level:  # other rows, other ids: from the top
            self.cursor, self._level = Cursor(), self.state.level
        keys = [row_key(r, self.state.level) for r in self.rows]
        self.cursor = place(self.cursor, keys, self.page)
        shown = self.rows[self.cursor.top:self.cursor.top + self.page]
        for y, row in enumerate(shown, HEADER_LINES):
            attr = curses.A_DIM if row.exited else 0
            if y - HEADER_LINES + self.cursor.top == self.cursor.row:
                attr = curses.A_REVERSE
            self._put(y, row_cells(row, off, width, wide=wide, full=self.state.full_command),
                      attr, clear=attr == curses.A_REVERSE)
        self._put(lines - 1, self.message or self.key_line)
        self.win.refresh()

    def _put(self, y: int, text: str, attr: int = 0, *, clear: bool = False) -> None:
        cols = self.win.getmaxyx()[1]
        line = text.ljust(cols - 1) if clear else text
        try:
            self.win.addnstr(y, 0, line, cols - 1, attr)
            if not clear:
                self.win.clrtoeol()
        except curses.error:
            pass  # a line past the bottom of a shrinking window


class Screen(Display):
    """The interactive loop of the live view over one curses window."""

    def __init__(self, win: Any, sampler: Sampler, model: Model, state: ViewState,
                 frame: Frame) -> None:
        super().__init__(win, state, frame)
        self.sampler, self.model = sampler, model
        self.latest = frame  # the newest frame (the one on display is kept while paused)
        self.refreshes = 0

    def header_info(self) -> Info:
        """The sampler's facts."""
        return info(self.sampler)

    def run(self, iterations: int) -> int:
        """Refresh, draw and read keys until ``q`` (or ``iterations`` refreshes)."""
        due = time.monotonic() + min(self.state.interval, FIRST_REFRESH_S)
        self.draw()
        while True:
            now = time.monotonic()
            if now >= due:
                self.refresh()
                if 0 < iterations <= self.refreshes:
                    return 0
                due = max(due + self.state.interval, now)
                self.draw()
            self.win.timeout(max(1, int(min(due - now, DRAIN_EVERY_S) * 1000)))
            key = self._read()
            self.sampler.drain()
            if key is None:
                continue
            if key == "q":
                return 0
            self.on_key(key)
            self.draw()

    def refresh(self) -> None:
        """Take a sample; show it unless paused."""
        self.sampler.thread_states = self.state.level == "thread"
        self.latest = self.model.update(self.sampler.sample())
        self.refreshes += 1
        if not self.state.paused:
            self.frame = self.latest

    def on_key(self, key: str) -> None:
        """Apply a key: view changes, moves, or filter / actions / delay accounting /
        help."""
        self.message = ""
        new = apply_key(self.state, key)
        if self.navigate(key):
            return
        if key in ACTION_KEYS:
            self._act(key)
        elif new is not None:
            self.state = new
            if not new.paused:
                self.frame = self.latest
        elif key == "f":
            self._filter()
        elif key == "D":
            self._delayacct_on()
        elif key in ("h", "?"):
            self._help()

    def _act(self, key: str) -> None:
        """Signal (k, F9) or renice (N, F7, F8) the selected row, after a prompt and
        a confirmation."""
        row = self.selected()
        why = actions.refusal(row, self.state.level)
        if why is not None or row is None:
            self.message = why or "no row selected"
            return
        if key in ("k", "F9"):
            self._signal(row)
        else:
            self._renice(row, {"F7": -1, "F8": 1}.get(key, 0))

    def _signal(self, row: Row) -> None:
        text = self._prompt(f"signal to {row.tgid} ({row.command}) [TERM]: ")
        if text is None:
            return
        try:
            sig = actions.parse_signal(text)
        except ValueError as err:
            self.message = str(err)
            return
        if self._confirm(f"send {sig.name} to {row.tgid} ({row.command})?"):
            self.message = actions.send_signal(row, sig, self.sampler.proc)

    def _renice(self, row: Row, step: int) -> None:
        now = row.nice if row.nice is not None else 0
        text = self._prompt(f"nice for {row.pid} ({row.command}), now {now} "
                            f"[{now + step}]: ")
        if text is None:
            return
        try:
            nice = actions.parse_nice(text or str(now + step))
        except ValueError as err:
            self.message = str(err)
            return
        what = "thread" if self.state.level == "thread" else "every thread of"
        if self._confirm(f"renice {what} {row.pid} ({row.command}) to {nice}?"):
            self.message = actions.renice(row, self.state.level, nice, self.sampler.proc)

    def _delayacct_on(self) -> None:
        try:
            delayacct.set_enabled(True)
        except TaskstatsError as err:
            self.message = str(err)
            return
        self.message = f"delay accounting switched on; {delayacct.LATE_NOTE}"


def run_screen(sampler: Sampler, model: Model, state: ViewState, frame: Frame, *,
               iterations: int = 0) -> int:
    """Run the full-screen view until ``q``; return 0."""
    def main(win: Any) -> int:
        with contextlib.suppress(curses.error):
            curses.curs_set(0)  # some terminals cannot hide the cursor
        win.keypad(True)
        return Screen(win, sampler, model, state, frame).run(iterations)

    for name in ("LINES", "COLUMNS"):  # ncurses would prefer them to the tty's size,
        os.environ.pop(name, None)  # and never follow a resize
    return int(curses.wrapper(main))
