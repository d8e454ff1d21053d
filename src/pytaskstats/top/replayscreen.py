"""The full-screen replay of taskstatsd's journal: the live screen's view, keys and
drawing (:class:`~.screen.Display`) over a :class:`~.replay.Replay` instead of
the sampler.  Keys as atop's: ``t`` the next interval, ``T`` the previous one,
``j`` jump to a time; ``H`` rows per thread (``t`` of the live view).  Nothing
moves unless a key is pressed.  The selection and scrolling are the live view's;
its actions (signal, renice) are refused: a replayed pid may name another process.
"""

from __future__ import annotations

import contextlib
import curses
import os
from collections.abc import Callable
from typing import Any

from .render import Info
from .replay import Replay
from .screen import ACTION_KEYS, KEYS, Display, apply_key, help_lines
from .view import SORTS, ViewState

__all__ = ["REPLAY_KEYS", "ReplayScreen", "run_replay_screen"]

LIVE_ONLY = (" ", "+", "-", "D")  # pause, refresh interval, delay accounting
LIVE_ONLY_LABELS = ("space", "+ -", "D", "t", "k F9", "N F7 F8")
REPLAY_KEYS: dict[str, str] = {
    "t": "next interval", "T": "previous interval",
    "j": "jump to a time (as --at)", "H": "per thread / per process",
    **{k: v for k, v in KEYS.items() if k not in LIVE_ONLY_LABELS},
}
REPLAY_KEY_LINE = ("q quit h help  t/T next/prev  j jump  sort: "
                   + " ".join(s.key for s in SORTS.values())
                   + " R  H threads g cgroups V tree f filter")
JUMP_PROMPT = "jump to (2026-12-06T03:14, 30m, yesterday; Esc cancels): "


class ReplayScreen(Display):
    """The interactive loop of the replay; ``parse_time``: text -> CLOCK_REALTIME
    ns, ValueError with the message when it is not a time."""

    key_line = REPLAY_KEY_LINE

    def __init__(self, win: Any, replay: Replay, state: ViewState,
                 parse_time: Callable[[str], int]) -> None:
        if replay.frame is None:
            raise ValueError("the replay shows no interval yet: start() it first")
        super().__init__(win, state, replay.frame)
        self.replay, self.parse_time = replay, parse_time

    def header_info(self) -> Info:
        """The replayed interval's facts."""
        return self.replay.info()

    def help_text(self) -> list[str]:
        """The replay's keys."""
        return help_lines(REPLAY_KEYS, "taskstats top --replay keys")

    def run(self) -> int:
        """Draw and read keys until ``q``; return 0."""
        self.draw()
        while True:
            self.win.timeout(-1)
            key = self._read()
            if key is None:
                continue
            if key == "q":
                return 0
            self.on_key(key)
            self.draw()

    def on_key(self, key: str) -> None:
        """Apply a key: move in the journal, change the view, filter, help."""
        self.message = ""
        if key in ("t", "T"):
            self.message = self.replay.step(1 if key == "t" else -1)
        elif key == "j":
            self._jump()
        elif key == "H":
            self.state = self.state.next_level("thread")
        elif self.navigate(key):
            pass
        elif key in LIVE_ONLY:
            self.message = f"{'space' if key == ' ' else key}: only in the live view"
        elif key in ACTION_KEYS:
            self.message = (f"{key}: signals and renice only in the live view (a replayed "
                            "row is history: its pid may be another process now)")
        elif (new := apply_key(self.state, key)) is not None:
            self.state = new
        elif key == "f":
            self._filter()
        elif key in ("h", "?"):
            self._help()
        if self.replay.frame is not None:
            self.frame = self.replay.frame

    def _jump(self) -> None:
        text = self._prompt(JUMP_PROMPT)
        if text is None or not text.strip():
            return
        try:
            when = self.parse_time(text)
        except ValueError as err:
            self.message = str(err)
            return
        self.message = self.replay.jump(when)


def run_replay_screen(replay: Replay, state: ViewState,
                      parse_time: Callable[[str], int]) -> int:
    """Run the full-screen replay until ``q``; return 0."""
    def main(win: Any) -> int:
        with contextlib.suppress(curses.error):
            curses.curs_set(0)
        win.keypad(True)
        return ReplayScreen(win, replay, state, parse_time).run()

    for name in ("LINES", "COLUMNS"):  # as run_screen: follow the tty's size
        os.environ.pop(name, None)
    return int(curses.wrapper(main))
