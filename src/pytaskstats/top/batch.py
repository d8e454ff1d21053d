"""Batch mode (``-b -n N -d SECS``): a text table, or one JSON object a line, per refresh.

A baseline sample is taken first, so every printed refresh has rates over a full
interval; ``-n 3 -d 1`` prints three refreshes in about three seconds.  SIGPIPE
gets its default action back, so ``| head`` ends the command quietly.  With
``--replay``, the journal's intervals are printed one after the other, at once.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import TextIO

from .model import Frame, Model
from .render import Info, frame_json, text_block
from .replay import Replay
from .sampler import Sampler
from .view import ViewState, view

__all__ = ["run_batch", "run_replay_batch", "wait"]

DRAIN_EVERY_S = 0.5  # how often a wait empties the exit listener
LEGEND = (  # under the first text refresh: the column names are abbreviations
    "S: task state (R running, S sleeping, D disk wait, Z zombie, T stopped, I idle), X "
    "exited; CPU% running, CPUW% waiting for a CPU, IOW% for block I/O, MEMW% for "
    "memory (swap-in + reclaim + thrashing + compaction + write-protect copy), IRQ% in "
    "IRQs: percent of one CPU over the interval;\nRD/s WR/s storage bytes read/written "
    "per second; CSW/s context switches per second; RSS resident bytes now, PEAK its peak "
    "(taskstats hiwater_rss), THR threads; * the sort column;\nheader: CPU busy % of all "
    "CPUs; disk total (the tasks' storage IO) and actual (/proc/vmstat pgpgin/pgpgout) "
    "bytes/s; PSI% some/full stalled over the interval")


def wait(sampler: Sampler, until: float) -> None:
    """Sleep until monotonic time ``until``, draining the exit listener meanwhile."""
    while (left := until - time.monotonic()) > 0:
        time.sleep(min(left, DRAIN_EVERY_S))
        sampler.drain()


def info(sampler: Sampler) -> Info:
    """The header facts the sampler knows."""
    return Info(sampler.client.backend, sampler.exits_note, sampler.scope_note)


def write_refresh(frame: Frame, state: ViewState, meta: Info, *, json_lines: bool,
                  out: TextIO, legend: bool = False) -> None:
    """One refresh, as text (with ``legend`` under the table; a blank line after it)
    or one JSON line."""
    rows = view(frame, state)
    if json_lines:
        out.write(json.dumps(frame_json(frame, rows, meta, state), separators=(",", ":")))
        out.write("\n")
    else:
        out.write(text_block(frame, rows, meta, state) + (LEGEND + "\n" if legend else "")
                  + "\n")
    out.flush()


def run_batch(sampler: Sampler, model: Model, state: ViewState, *, iterations: int,
              json_lines: bool, out: TextIO | None = None) -> int:
    """Print ``iterations`` refreshes (0: until interrupted); return 0."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    stream = out or sys.stdout
    sampler.thread_states = state.level == "thread"
    model.update(sampler.sample())
    due = time.monotonic()
    done = 0
    while iterations <= 0 or done < iterations:
        due = max(due + state.interval, time.monotonic())
        wait(sampler, due)
        frame = model.update(sampler.sample())
        write_refresh(frame, state, info(sampler), json_lines=json_lines, out=stream,
                      legend=not done)
        done += 1
    return 0


def run_replay_batch(replay: Replay, state: ViewState, *, iterations: int, json_lines: bool,
                     out: TextIO | None = None) -> int:
    """Print the replayed intervals from the one on display on (at most ``iterations``,
    0: up to the end of the range) at once, as the live refreshes are printed; 0."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    stream = out or sys.stdout
    done = 0
    while replay.frame is not None and (iterations <= 0 or done < iterations):
        write_refresh(replay.frame, state, replay.info(), json_lines=json_lines, out=stream,
                      legend=not done)
        done += 1
        if 0 < iterations <= done or replay.step(1):
            return 0
    return 0
