"""Entry point of the ``taskstats`` command: dispatch to one module per subcommand."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from ..errors import TaskstatsError
from . import cgroup, delayacct, exporter, get, getdelays, history, listen, run, status, top

COMMANDS: tuple[ModuleType, ...] = (get, getdelays, listen, run, cgroup, delayacct, status,
                                     history, top, exporter)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand's options."""
    parser = argparse.ArgumentParser(
        prog="taskstats", description="Linux per-task accounting and delays (taskstats).")
    parser.add_argument("--backend", choices=("auto", "kernel", "daemon"), default="auto",
                        help="where records come from (default: the kernel if permitted, "
                        "else taskstatsd)")
    parser.add_argument("--socket", metavar="PATH", default=None,
                        help="taskstatsd's socket (default: $TASKSTATS_SOCKET or "
                        "/run/taskstats/taskstatsd.sock)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 error, 2 usage)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["getdelays"]:
        return getdelays.main(args_list[1:])
    args = build_parser().parse_args(args_list)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        code = int(args.func(args))
    except TaskstatsError as err:
        print(f"taskstats: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
