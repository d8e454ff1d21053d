"""``taskstats top``: live per-process CPU, waits and IO rates, full screen or batch.

Every refresh lists the tasks in /proc, queries them all with one pipelined bulk
query and shows, per process (or thread, or cgroup), CPU%, CPU-wait%, IO-wait%,
memory-wait%, IRQ%, storage read/write bytes/s and context switches/s over the
interval.  Exited processes stay for ``--retain`` seconds, from the exit listener
(root) or taskstatsd.  ``-b`` prints refreshes as text, ``--json`` as JSON lines.
``--replay`` shows taskstatsd's journal instead, interval by interval, in the same view.
"""

from __future__ import annotations

import argparse
import curses
import os
import sys
import time
from typing import Any

from ..top.batch import run_batch, run_replay_batch
from ..top.model import Model
from ..top.replay import Journal, Replay, daemon_source
from ..top.replayscreen import run_replay_screen
from ..top.sampler import Sampler
from ..top.screen import run_screen
from ..top.view import SORTS, Filters, ViewState
from .args import (
    WHEN_FORMS,
    cgroup_dir_arg,
    count_arg,
    printable,
    seconds_arg,
    user_arg,
    when_arg,
    when_text_arg,
)
from .common import open_client

MIN_DELAY_S = 0.1
MAX_DELAY_S = 86400.0  # a refresh a day
MAX_RETAIN_S = 7 * 86400.0
REPLAY_SINCE_S = 3 * 3600  # --replay without --since: 3 hours back


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "top", help="live per-process CPU, waits and IO rates (full screen, or -b batch)",
        description="A live view of per-process CPU%, CPU/IO/memory/IRQ wait% and IO and "
        "context switch rates, from one bulk taskstats query per refresh.  Press h in "
        "the full-screen view for its keys.")
    p.add_argument("-b", "--batch", action="store_true",
                   help="print refreshes (text, or JSON lines with --json) instead of the "
                   "full-screen view")
    p.add_argument("-n", "--iterations", type=count_arg, default=0, metavar="N",
                   help="stop after N refreshes (default 0: never)")
    p.add_argument("-d", "--delay", type=seconds_arg(MIN_DELAY_S, MAX_DELAY_S), default=None,
                   metavar="SECS",
                   help="refresh interval in seconds (default 2, at least 0.1)")
    p.add_argument("--json", action="store_true",
                   help="batch mode, one JSON object per refresh")
    p.add_argument("-s", "--sort", choices=list(SORTS), default="cpu", metavar="NAME",
                   help=f"sort order: {', '.join(SORTS)} (default cpu)")
    p.add_argument("-r", "--reverse", action="store_true", help="reverse the sort order")
    level = p.add_mutually_exclusive_group()
    level.add_argument("-H", "--threads", action="store_true", help="a row per thread")
    level.add_argument("-g", "--group-cgroups", action="store_true",
                       help="a row per cgroup (containers, services)")
    p.add_argument("-u", "--user", type=user_arg,
                   help="only this user's tasks (name or uid)")
    p.add_argument("-c", "--command", help="only commands containing TEXT (any case)",
                   metavar="TEXT")
    p.add_argument("--cgroup", metavar="PATH", type=cgroup_dir_arg,
                   help="only this cgroup and those below it (/system.slice, or "
                   "/sys/fs/cgroup/system.slice)")
    p.add_argument("-o", "--only-active", action="store_true",
                   help="only rows with activity in the interval")
    p.add_argument("--tree", action="store_true",
                   help="per process, each under its parent (key V in the full screen)")
    p.add_argument("--full-command", action="store_true",
                   help="the command line instead of the command name (key C)")
    p.add_argument("-P", "--limit", type=count_arg, default=0, metavar="N",
                   help="at most N rows per refresh (default: all, or what fits)")
    p.add_argument("--retain", type=seconds_arg(0, MAX_RETAIN_S), default=None,
                   metavar="SECS", help="how long exited processes stay listed (default 10)")
    p.add_argument("--no-exits", action="store_true",
                   help="do not listen for exits (no exited rows, no exit counts)")
    replay = p.add_argument_group(
        "replay", "browse taskstatsd's journal (its samples of live processes and its "
        "exits) interval by interval, in the same view: keys t next, T previous, "
        f"j jump to a time (-d, --retain and --no-exits are the live view's).  Times: "
        f"{WHEN_FORMS}")
    replay.add_argument("--replay", action="store_true",
                        help="replay the journal instead of the live machine")
    replay.add_argument("--since", metavar="WHEN", type=when_text_arg,
                        help="from this time (default: 3h before --at, or before now)")
    replay.add_argument("--until", metavar="WHEN", type=when_text_arg,
                        help="up to this time (default: now)")
    replay.add_argument("--at", metavar="WHEN", type=when_text_arg,
                        help="start at the interval holding this time (default: the "
                        "first of the range)")
    p.set_defaults(func=run)


def no_terminal() -> bool:
    """True (said on stderr) when the full screen has no terminal, or one that curses
    cannot drive (TERM unknown to terminfo, or unable to place the cursor: dumb)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("taskstats top: not a terminal: use -b (and --json) for batch output",
              file=sys.stderr)
        return True
    problem = terminal_problem()
    if problem:
        print(f"taskstats top: {problem}: set TERM to your terminal's type (e.g. "
              "xterm-256color), or use -b for batch output", file=sys.stderr)
    return bool(problem)


def terminal_problem(term: str | None = None) -> str:
    """Why the full screen cannot run on terminal type ``term`` (default $TERM) on
    stdout; "" when it can."""
    name = os.environ.get("TERM", "") if term is None else term
    if not name:
        return "TERM is not set"
    try:
        curses.setupterm(name, sys.stdout.fileno())
    except curses.error:
        return f"terminal type '{printable(name)}' (TERM) is unknown to terminfo"
    if not curses.tigetstr("cup"):
        return f"terminal type '{printable(name)}' (TERM) cannot place the cursor"
    return ""


def view_state(args: argparse.Namespace) -> ViewState:
    """The initial view from the options."""
    level = "thread" if args.threads else "cgroup" if args.group_cgroups else "process"
    return ViewState(sort=args.sort, reverse=args.reverse, level=level,
                     filters=Filters(args.user, args.command, args.cgroup),
                     interval=args.delay, active_only=args.only_active,
                     limit=args.limit, tree=args.tree, full_command=args.full_command)


def run(args: argparse.Namespace) -> int:
    """Run the view; 0 on quit, 2 when the full screen has no terminal."""
    batch = args.batch or args.json
    live_only = [name for name, given in (("-d", args.delay is not None),
                                          ("--retain", args.retain is not None),
                                          ("--no-exits", args.no_exits),
                                          ("-H", args.threads)) if given]
    if args.replay and live_only:
        print(f"taskstats top: {', '.join(live_only)}: only in the live view (the journal "
              "keeps processes at its own interval) (see 'taskstats top --help')",
              file=sys.stderr)
        return 2
    args.delay = 2.0 if args.delay is None else args.delay
    args.retain = 10.0 if args.retain is None else args.retain
    state = view_state(args)
    if args.replay or args.since or args.until or args.at:
        return run_replay(args, state, batch=batch)
    if not batch and no_terminal():
        return 2
    with open_client(args) as client:
        sampler = Sampler(client, listen=not args.no_exits)
        try:
            model = Model(retain_s=args.retain)
            if batch:
                return run_batch(sampler, model, state, iterations=args.iterations,
                                 json_lines=args.json)
            first = model.update(sampler.sample())  # errors print before curses starts
            return run_screen(sampler, model, state, first, iterations=args.iterations)
        finally:
            sampler.close()


def replay_range(args: argparse.Namespace, now_ns: int) -> tuple[int, int, int | None]:
    """(since, until, at) in CLOCK_REALTIME ns from the options; ValueError with
    the usage error."""
    if not args.replay:
        raise ValueError("--since, --until and --at need --replay")
    at = when_arg(args.at, now_ns) if args.at else None
    until = (when_arg(args.until, now_ns) if args.until
             else max(now_ns, at + 1) if at is not None else now_ns)
    since = (when_arg(args.since, now_ns) if args.since
             else (until if at is None else at) - REPLAY_SINCE_S * 1_000_000_000)
    if until <= since:
        raise ValueError("--until must be later than --since")
    if at is not None and not since <= at <= until:
        raise ValueError("--at must be between --since and --until")
    return since, until, at


def parse_time(text: str) -> int:
    """A time typed in the replay (as --at), ValueError when it is none."""
    try:
        return when_arg(text)
    except argparse.ArgumentTypeError as err:
        raise ValueError(str(err)) from None


def run_replay(args: argparse.Namespace, state: ViewState, *, batch: bool) -> int:
    """``--replay``: taskstatsd's journal whatever the backend; 2 on bad options, 1
    without taskstatsd or samples in the range."""
    try:
        since, until, at = replay_range(args, time.time_ns())
    except ValueError as err:
        print(f"taskstats top: {err} (see 'taskstats top --help')", file=sys.stderr)
        return 2
    if not batch and no_terminal():
        return 2
    with open_client(args, backend="daemon") as client:
        replay = Replay(Journal(daemon_source(client), since, until), client.backend)
        if not replay.start(at):
            print(f"taskstats top: no samples journaled from {_local(since)} to "
                  f"{_local(until)} (a range before the journal began, or taskstatsd not "
                  "sampling: see sample_interval_s in its status)",
                  file=sys.stderr)
            return 1
        if batch:
            return run_replay_batch(replay, state, iterations=args.iterations,
                                    json_lines=args.json)
        return run_replay_screen(replay, state, parse_time)


def _local(t_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_ns / 1e9))
