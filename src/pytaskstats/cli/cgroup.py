"""``taskstats cgroup PATH``: task state counts of a cgroup (the kernel's cgroupstats)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import note_backend, open_client, print_json


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("cgroup", help="count a cgroup's tasks by state",
                       description="Count the tasks of a cgroup directory by state "
                       "(sleeping, running, stopped, uninterruptible, io wait): the kernel "
                       "counts cgroup v1 directories; a cgroup2 directory is counted from "
                       "/proc (by taskstatsd with the daemon backend; no io wait there).")
    p.add_argument("path", help="cgroup directory, e.g. /sys/fs/cgroup/cpu/mygroup or "
                   "/sys/fs/cgroup/mygroup (cgroup2)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Query and print."""
    with open_client(args, quiet=True) as client:
        stats = client.cgroup(args.path)
    note_backend(client, args.backend)
    if args.json:
        print_json({"path": args.path, **stats._asdict()})
    else:
        print(f"{args.path}: sleeping {stats.nr_sleeping}, running {stats.nr_running}, "
              f"stopped {stats.nr_stopped}, uninterruptible {stats.nr_uninterruptible}, "
              f"io_wait {stats.nr_io_wait}")
    return 0
