"""Entry point of the ``taskstats`` command: dispatch to one module per subcommand.

Exit status: 0 ok, 1 runtime error (a line on stderr: what happened, what to do),
2 usage error (one line: what is wrong, what is accepted); ``run`` passes its
command's status through (126 cannot execute, 127 not found).  No input ends in a
traceback: anything unexpected is reported as a bug, in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from .. import __version__
from ..client import BACKENDS
from ..errors import BUG_HINT, TaskstatsError
from . import (
    cgroup,
    completion,
    delayacct,
    diff,
    exporter,
    get,
    getdelays,
    history,
    listen,
    manpage,
    run,
    status,
    top,
)
from .args import Parser, join_dash_values, socket_arg

COMMANDS: tuple[ModuleType, ...] = (get, getdelays, listen, run, diff, cgroup, delayacct,
                                     status, history, top, exporter, manpage, completion)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand's options."""
    parser = Parser(
        prog="taskstats", description="Linux per-task accounting and delays (taskstats).")
    parser.add_argument("--version", action="version", version=f"taskstats {__version__}")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="where records come from: auto (default: the kernel with "
                        "CAP_NET_ADMIN, else taskstatsd if it answers, else /proc), kernel, "
                        "daemon (taskstatsd) or procfs (/proc: no delays but CPU wait, no "
                        "exits)")
    parser.add_argument("--socket", metavar="PATH", default=None, type=socket_arg,
                        help="taskstatsd's socket (default: $TASKSTATS_SOCKET or "
                        "/run/taskstats/taskstatsd.sock)")
    parser.set_defaults(build_parser=build_parser)  # for the man pages and completions
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 error, 2 usage)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["getdelays"]:  # a closed stdout ends it as the C tool: SIGPIPE
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        return guarded(lambda: getdelays.main(args_list[1:]))
    try:
        args = build_parser().parse_args(join_dash_values(args_list, "history", ("--sort",)))
    except SystemExit as stop:  # --help, --version, usage errors (already printed)
        return stop.code if isinstance(stop.code, int) else 2
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return guarded(lambda: int(args.func(args)))


# a write to stdout (a file, /dev/full) that fails: errors of the output, not the command
_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: what it still buffers would fail again at exit."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def guarded(command: Callable[[], int]) -> int:
    """Run ``command``; every error becomes a line on stderr and status 1 (130 on
    Ctrl-C), never a traceback (unless $TASKSTATS_DEBUG is set, for bugs)."""
    try:
        return command()
    except TaskstatsError as err:
        print(f"taskstats: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        if err.filename is None and err.errno in _WRITE_ERRORS:
            print(f"taskstats: cannot write the output: {err.strerror}: free space on its "
                  "device, or send it elsewhere", file=sys.stderr)
            _quiet_stdout()
            return 1
        where = f"{err.filename}: " if err.filename else ""
        print(f"taskstats: {where}{err.strerror or err}", file=sys.stderr)
    except Exception as err:  # the promise: no traceback, ever
        if os.environ.get("TASKSTATS_DEBUG"):
            raise
        print(f"taskstats: internal error ({type(err).__name__}: {err}); {BUG_HINT} "
              "(TASKSTATS_DEBUG=1 shows the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
