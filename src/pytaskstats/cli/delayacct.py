"""``taskstats delayacct [status|on|off]``: show or switch kernel delay accounting."""

from __future__ import annotations

import argparse
from typing import Any

from .. import delayacct


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("delayacct", help="show or switch delay accounting",
                       description="Show or switch kernel.task_delayacct. Switching needs "
                       "root; only tasks started afterwards get non-CPU delays.")
    p.add_argument("action", nargs="?", choices=("status", "on", "off"), default="status")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the state, or switch it and print the new state."""
    if args.action != "status":
        delayacct.set_enabled(args.action == "on")
    state = delayacct.status()
    if state is None:
        print("delay accounting: not available (no kernel.task_delayacct sysctl)")
        return 1
    if state:
        print(f"delay accounting: on ({delayacct.LATE_NOTE})")
    else:
        print(delayacct.OFF_NOTE)
    return 0
