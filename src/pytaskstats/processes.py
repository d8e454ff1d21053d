"""Processes with their records, as ``psutil.process_iter`` lists them.

Each process (thread group) is two pipelined queries of one batch: its leader's
record (the thread whose id is the process's: name, ids and start time, which a
TGID record does not carry) and the group's record (summed over its threads).
A process that exits between the listing and the queries is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from .backends import Answers
from .fields import FIELDS
from .records import ProcessRecord, TaskStats

__all__ = ["ATTRS", "IDENTITY", "check_attrs", "iter_processes", "list_tgids", "named"]

# the fields a TGID record lacks that name the process: taken from its leader's record
IDENTITY = ("ac_comm", "ac_pid", "ac_tgid", "ac_ppid", "ac_uid", "ac_gid", "ac_btime",
            "ac_btime64", "ac_nice", "ac_sched")
DERIVED = ("pid", "name", "cpu_time", "start_time")
ATTRS: tuple[str, ...] = DERIVED + tuple(f.name for f in FIELDS)
BATCH = 256  # processes per pair of pipelined queries: bounds memory, keeps results fresh


def check_attrs(attrs: Iterable[str] | None) -> tuple[str, ...]:
    """The selected attribute names (all of :data:`ATTRS` for None); ValueError naming
    an unknown one and the accepted ones."""
    if attrs is None:
        return ATTRS
    if isinstance(attrs, str):
        raise ValueError(f"attrs is a list of names, not the string {attrs!r}")
    chosen = tuple(attrs)
    for name in chosen:
        if name not in ATTRS:
            raise ValueError(f"unknown attr {name!r}; accepted: {', '.join(ATTRS)}")
    return chosen


def list_tgids(root: str = "/proc") -> list[int]:
    """The process ids listed in procfs ``root`` (this pid namespace), ascending."""
    return sorted(int(name) for name in os.listdir(root) if name.isdigit())


def named(group: TaskStats, leader: TaskStats) -> TaskStats:
    """``group`` with the :data:`IDENTITY` fields of its leader's record ``leader``."""
    return group._replace(**{name: getattr(leader, name) for name in IDENTITY})


def info_of(pid: int, record: TaskStats, attrs: tuple[str, ...]) -> dict[str, Any]:
    """attr -> value of one process, for the selected ``attrs``."""
    derived = {"pid": pid, "name": record.ac_comm}
    return {a: derived[a] if a in derived else getattr(record, a) for a in attrs}


def iter_processes(source: Answers, tgids: Iterable[int],
                   attrs: tuple[str, ...]) -> Iterator[ProcessRecord]:
    """A :class:`ProcessRecord` per process of ``tgids`` still alive when asked,
    in batches of :data:`BATCH`; those that vanished or that taskstatsd's policy
    refuses are left out."""
    wanted = list(tgids)
    for start in range(0, len(wanted), BATCH):
        batch = wanted[start:start + BATCH]
        leaders = source.query_many("pid", batch, skip_denied=True)
        groups = source.query_many("tgid", list(leaders), skip_denied=True)
        for tgid in batch:
            if tgid in groups:
                record = named(groups[tgid], leaders[tgid])
                yield ProcessRecord(tgid, record, info_of(tgid, record, attrs))
