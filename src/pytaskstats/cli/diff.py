"""``taskstats diff A.json B.json``: what changed between two runs of the same job.

Each file is what ``taskstats run --json`` printed or a trace ``taskstats run
--trace`` wrote.  Exit status: 0 compared (no regression); 3 a regression above
``--fail-above`` (CI fails the job); 1 a runtime error (a file unreadable, not a
run, or the ``--on`` field not measured in both); 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import stat
import sys
from typing import Any

from .. import report
from ..report.compare import (
    FIELDS,
    LABELS,
    Change,
    Job,
    NotARun,
    change_json,
    compare,
    load,
    pruned,
    regression,
    show,
)
from ..report.diffpage import render_diff
from ..textfmt import shown
from .args import count_arg, output_file_arg, printable, same_file, stdout_clash
from .common import cannot_write, print_json

REGRESSION = 3  # exit status: a regression above --fail-above


def percent_arg(text: str) -> float:
    """A percentage: a finite number >= 0 ("10" or "10%")."""
    try:
        value = float(text.removesuffix("%"))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a percentage, a number from 0 up (e.g. 10 for 10%)")
    return value


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("diff", help="compare two runs (run --json outputs or traces)",
                       description="Compare two runs of the same job per command name: "
                       "processes, wall, CPU, each wait, IO, with the change in percent, "
                       "most changed first (largest change in seconds of wall, CPU or a "
                       "wait). Exit status: 0 compared, 3 a regression above --fail-above, "
                       "1 an error (unreadable file, not a run), 2 usage.")
    p.add_argument("a", metavar="A.json", help="the baseline: 'taskstats run --json' output "
                   "or a 'taskstats run --trace' file; '-' reads it from stdin")
    p.add_argument("b", metavar="B.json", help="the run compared with it ('-': stdin)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.add_argument("--report", metavar="FILE.html", type=output_file_arg,
                   help="also write an HTML page with the two runs side by side")
    p.add_argument("--fail-above", metavar="PCT", type=percent_arg,
                   help="exit 3 when the whole run's FIELD (see --on) grew by more than PCT "
                   "percent from A to B")
    p.add_argument("--on", metavar="FIELD", choices=FIELDS,
                   help=f"the field --fail-above checks: {', '.join(FIELDS)} (default wall: "
                   "the run's wall time)")
    p.add_argument("--limit", metavar="N", type=count_arg, default=20,
                   help="command names shown in the text (default 20; --json has all)")
    p.set_defaults(func=run)


MAX_INPUT = 1 << 30  # bytes: a file larger than this is refused (parsing takes ~5x in memory)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a run holds")


def _too_large(path: str) -> NotARun:
    return NotARun(f"{path}: larger than {MAX_INPUT >> 20} MiB, more than a run's output; "
                   "give a 'taskstats run --json' output or a 'taskstats run --trace' file")


def _not_json(path: str, why: str) -> NotARun:
    return NotARun(f"{path}: not JSON ({why}); give a 'taskstats run --json' output or "
                   "a 'taskstats run --trace' file")


def read_job(path: str) -> Job:
    """A run from a file; NotARun (with the path and what is wrong) otherwise.

    Only a regular file of at most :data:`MAX_INPUT` bytes is read (a FIFO, a device or
    a directory is refused without blocking); NaN, Infinity and nesting deeper than the
    parser's recursion limit are refused, so any input ends in bounded time and memory.
    """
    label = "stdin" if path == "-" else printable(path)  # undecodable bytes as \xNN
    text = _stdin_text() if path == "-" else _file_text(path, label)
    if len(text) > MAX_INPUT:
        raise _too_large(label)
    return _parse(text, label)


def _stdin_text() -> str:
    """``-``: standard input, up to MAX_INPUT + 1 bytes (what a pipe gives)."""
    try:
        return sys.stdin.buffer.read(MAX_INPUT + 1).decode("utf-8")
    except OSError as err:
        raise NotARun(f"cannot read stdin: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise _not_json("stdin", str(err)) from err


def _file_text(path: str, label: str) -> str:
    """A regular file's text, at most MAX_INPUT + 1 characters; never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise NotARun(f"cannot read {label}: {err.strerror}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise NotARun(f"cannot read {label}: {kind}; give a 'taskstats run --json' "
                          "output or a 'taskstats run --trace' file")
        if info.st_size > MAX_INPUT:
            raise _too_large(label)
        with os.fdopen(os.dup(fd), encoding="utf-8") as f:
            text = f.read(MAX_INPUT + 1)  # bounded though the file grows meanwhile
    except OSError as err:
        raise NotARun(f"cannot read {label}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise _not_json(label, str(err)) from err
    finally:
        os.close(fd)
    return text


def _parse(text: str, label: str) -> Job:
    """The run in ``text`` (read from ``label``)."""
    try:  # the keys load() does not read are dropped as they are parsed (memory)
        doc = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=pruned)
    except (ValueError, RecursionError) as err:
        if isinstance(err, json.JSONDecodeError) and err.msg == "Extra data":
            raise NotARun(f"{label}: one JSON document per line ({err.msg} at line "
                          f"{err.lineno}: the output of 'history --json' or 'listen --json'?); "
                          "give a 'taskstats run --json' output or a 'taskstats run --trace' "
                          "file") from err
        raise _not_json(label, "nested too deeply" if isinstance(err, RecursionError)
                        else str(err)) from err
    return load(doc, label)


def format_change(change: Change, title: str) -> list[str]:
    """A block: the title, then one line per field present in either run."""
    lines = [title]
    for f in FIELDS:
        a, b = change.a.get(f), change.b.get(f)
        if not a and not b:
            continue
        pct = change.percent(f)
        ptext = ("n/a" if pct is None else "new" if pct == float("inf") else f"{pct:+.1f}%")
        delta = change.delta(f)
        dtext = "n/a" if delta is None else f"{'+' if delta >= 0 else '-'}{show(abs(delta), f)}"
        lines.append(f"    {LABELS[f]:<12} {show(a, f):>12} -> {show(b, f):>12}  "
                     f"{dtext:>12} {ptext:>8}")
    return lines


def format_text(a: Job, b: Job, whole: Change, changes: list[Change], limit: int) -> str:
    """The comparison as text: the whole run, then the most changed command names."""
    def who(job: Job) -> str:
        status = "?" if job.exit_status is None else job.exit_status
        return shown(f"{job.label} ({' '.join(job.command) or '?'}, exit {status})")
    lines = [f"A: {who(a)}", f"B: {who(b)}"]
    lines += format_change(whole, "whole run (wall: the run's wall time)")
    for c in changes[:limit]:
        procs = f"x{c.a.get('processes') or 0:.0f} -> x{c.b.get('processes') or 0:.0f}"
        lines += format_change(c, f"{shown(c.comm)} ({procs}; wall: summed lifetimes)")
    if len(changes) > limit:
        lines.append(f"... and {len(changes) - limit} more command names (--limit N, --json)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Compare; print; write the page; check --fail-above."""
    if args.on is not None and args.fail_above is None:
        print("taskstats diff: --on FIELD goes with --fail-above PCT", file=sys.stderr)
        return 2
    if args.a == args.b == "-":
        print("taskstats diff: one run only can come on stdin ('-'): give the other as a "
              "file", file=sys.stderr)
        return 2
    clash = stdout_clash("--report", args.report)
    if clash:
        print(f"taskstats diff: {clash}", file=sys.stderr)
        return 2
    if args.report and any(same_file(args.report, run) for run in (args.a, args.b)):
        print(f"taskstats diff: --report {printable(args.report)} is a run compared: it "
              "would be overwritten; give another file, e.g. diff.html", file=sys.stderr)
        return 2
    try:
        a, b = read_job(args.a), read_job(args.b)
    except NotARun as err:
        print(f"taskstats diff: {err}", file=sys.stderr)
        return 1
    whole, changes = compare(a, b)
    why: str | None = None
    if args.fail_above is not None:
        try:
            why = regression(whole, args.on or "wall", args.fail_above)
        except ValueError as err:
            print(f"taskstats diff: {err}", file=sys.stderr)
            return 1
    if args.json:
        print_json({"a": {"file": a.label, "command": list(a.command),
                          "exit_status": a.exit_status},
                    "b": {"file": b.label, "command": list(b.command),
                          "exit_status": b.exit_status},
                    "whole": change_json(whole), "commands": [change_json(c) for c in changes],
                    "regression": why})
    else:
        print(format_text(a, b, whole, changes, args.limit))
    if args.report:
        try:
            report.save(args.report, render_diff(a, b, whole, changes))
        except OSError as err:
            print(f"taskstats diff: {cannot_write(args.report, err)}", file=sys.stderr)
            return 1
        print(f"taskstats diff: report written to {printable(args.report)}", file=sys.stderr)
    if why:
        print(f"taskstats diff: regression: {why}", file=sys.stderr)
        return REGRESSION
    return 0
