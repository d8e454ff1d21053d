"""Cgroup attribution of short-lived tasks: read at exit (the old way) vs at birth.

Run as root: ``python benchmarks/cgroup_birth.py [--tasks 20000]``.

Creates a cgroup in the cgroup2 hierarchy, starts a shell in it that runs
``/bin/true`` ``--tasks`` times one after the other, and listens with an exit
listener (one socket per CPU) and a proc connector socket whose events feed
:class:`pytaskstats.birthcgroups.BirthCgroups` (``BirthWatch``: drained before
each exit is attributed; taskstatsd drains before each batch).  For every exit
record of the storm (a task whose parent is the shell), both ways answer at the
same moment: "at exit" reads ``/proc/TGID/cgroup`` when the record is handled
(what taskstatsd did before), "at birth" is ``BirthWatch.at_exit``.  Prints the
share of the storm's exits each attributes to the benchmark's cgroup, the records
and connector events lost, and how many processes the map held at most.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from _bench import require_root

from pytaskstats.birthcgroups import BirthWatch
from pytaskstats.listener import Listener
from pytaskstats.procfs import cgroup_path
from pytaskstats.records import ExitRecord, Lost

STORM = 'echo $$ > "$1/cgroup.procs" || exit 1; i=0; while [ $i -lt "$2" ]; do ' \
        '/bin/true; i=$((i + 1)); done'
DRAIN_S = 5.0  # after the shell exits, wait this long at most for the last records


def cgroup2_root() -> Path:
    """Where the cgroup2 hierarchy is mounted (from /proc/self/mountinfo)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup2":
            return Path(fields[4])
    sys.exit("cgroup_birth.py: no cgroup2 hierarchy mounted")


class Tally:
    """The storm's exits and how each way attributed them."""

    def __init__(self, shell: int, path: str) -> None:
        self.shell, self.path = shell, path
        self.exits = self.at_exit = self.at_birth = self.lost = self.overruns = 0
        self.peak = 0

    def record(self, rec: ExitRecord, watch: BirthWatch) -> None:
        mine = rec.task.ac_ppid == self.shell and rec.pid != self.shell
        old = cgroup_path(rec.tgid or rec.pid) if mine else None  # first: same moment
        new = watch.at_exit(rec)
        if mine:
            self.exits += 1
            self.at_exit += old == self.path
            self.at_birth += new == self.path


def storm(tasks: int, group: Path) -> Tally:
    watch = BirthWatch()
    births = watch.births
    with Listener(per_cpu=True) as listener:
        shell = subprocess.Popen(["sh", "-c", STORM, "sh", str(group), str(tasks)])
        tally = Tally(shell.pid, "/" + str(group.relative_to(cgroup2_root())))
        deadline = None
        while tally.exits < tasks and (deadline is None or time.monotonic() < deadline):
            select.select([*listener.fds, watch.sock.fileno()], [], [], 0.1)
            for event in listener.drain():
                if isinstance(event, Lost):
                    tally.lost += event.records
                else:
                    tally.record(event, watch)
                    tally.peak = max(tally.peak, len(births))
            if deadline is None and shell.poll() is not None:
                deadline = time.monotonic() + DRAIN_S
        if shell.wait() != 0:
            sys.exit(f"cgroup_birth.py: the storm shell failed (status {shell.returncode})")
    tally.overruns = watch.overruns
    watch.close()
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="runs of /bin/true")
    args = parser.parse_args()
    require_root()
    group = cgroup2_root() / f"pytaskstats-bench-{os.getpid()}"
    group.mkdir()
    try:
        start = time.monotonic()
        tally = storm(args.tasks, group)
        took = time.monotonic() - start
    finally:
        for _ in range(100):
            try:
                group.rmdir()
                break
            except OSError:  # busy until the kernel has released the exited tasks
                time.sleep(0.05)
    n = max(tally.exits, 1)
    print(f"storm: {args.tasks} x /bin/true in {tally.path}, {took:.1f} s; "
          f"{tally.exits} exit records of it received, {tally.lost} records lost, "
          f"{tally.overruns} connector overruns")
    print(f"{'way':<10} {'attributed':>10} {'ratio':>8}")
    for way, good in (("at exit", tally.at_exit), ("at birth", tally.at_birth)):
        print(f"{way:<10} {good:>10} {good / n:>8.2%}")
    print(f"processes remembered at most: {tally.peak}")


if __name__ == "__main__":
    main()
