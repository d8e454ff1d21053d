"""``taskstats get PID`` / ``--tgid TGID``: one whole record, with units."""

from __future__ import annotations

import argparse
from typing import Any

from .. import delayacct
from ..textfmt import delayacct_json, format_record, record_json, shown
from .args import id_arg
from .common import note_backend, open_client, print_json, warn_delayacct


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("get", help="print the record of a task or thread group",
                       description="Print every field of a task's (or thread group's) "
                       "taskstats record, with units.")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("pid", nargs="?", type=id_arg, help="task (thread) id")
    target.add_argument("--tgid", type=id_arg,
                        help="thread group (process) id: summed threads")
    p.add_argument("--json", action="store_true", help="one JSON object, kernel field names")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Query and print."""
    state = delayacct.status()
    with open_client(args, quiet=True) as client:
        if args.tgid is not None:
            stats, title = client.tgid(args.tgid), f"tgid {args.tgid} (thread group)"
        else:
            stats, title = client.pid(args.pid), f"pid {args.pid} ({{comm}})"
    note_backend(client, args.backend)
    if args.json:
        print_json({"record": record_json(stats, state), "delayacct": delayacct_json(state)})
        return 0
    warn_delayacct(state)
    print(format_record(stats, title.replace("{comm}", shown(stats.ac_comm or "?")), state))
    return 0
