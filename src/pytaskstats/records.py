"""Immutable value types: TaskStats, ExitRecord, CgroupStats.

Attribute names are the kernel's field names, in the kernel's units (see
docs/fields.md).  A field the record does not carry is ``None``, never 0: fields
newer than the record's struct version, fields past a short payload, and the
fields a TGID (thread group) record does not carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .fields import BY_NAME, FIELDS, SECONDS_PER_UNIT, StatsFields, Timespec

__all__ = ["AGROUP", "Bulk", "CgroupStats", "ExitRecord", "Lost", "TaskStats", "check_id"]

AFORK, ASU, ACOMPAT, ACORE, AXSIG, AGROUP = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def check_id(ident: int) -> int:
    """``ident`` when it is a pid/tgid (a positive 32-bit integer), else ValueError."""
    if not isinstance(ident, int) or isinstance(ident, bool) or not 0 < ident < 2**32:
        raise ValueError(f"a pid/tgid is a positive 32-bit integer, not {ident!r}")
    return ident


def dev_major(dev: int) -> int:
    """glibc ``major()`` of a ``huge_encode_dev`` value."""
    return ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF & 0xFFFFFFFF)


def dev_minor(dev: int) -> int:
    """glibc ``minor()`` of a ``huge_encode_dev`` value."""
    return (dev & 0xFF) | ((dev >> 12) & ~0xFF & 0xFFFFFFFF)


class TaskStats(StatsFields):
    """One ``struct taskstats`` as decoded: per task (``scope == "pid"``) or per
    thread group (``scope == "tgid"``).

    Immutable (a NamedTuple).  Units are the kernel's: delays and ``cpu_run_*`` in
    ns, ``ac_etime``/``ac_utime``/``ac_stime`` in us, memory high-water marks in
    KB; :meth:`seconds` converts any time field.
    """

    __slots__ = ()

    def seconds(self, name: str) -> float | None:
        """Field ``name`` in seconds (for ns, us and s fields); None if absent."""
        value = getattr(self, name)
        unit = BY_NAME[name].unit
        if unit not in SECONDS_PER_UNIT:
            raise ValueError(f"{name} is in {unit or 'no unit'}, not a time")
        return None if value is None else value * SECONDS_PER_UNIT[unit]

    @property
    def exe_major(self) -> int | None:
        """Major number of ``ac_exe_dev`` (glibc encoding), None if absent."""
        return None if self.ac_exe_dev is None else dev_major(self.ac_exe_dev)

    @property
    def exe_minor(self) -> int | None:
        """Minor number of ``ac_exe_dev`` (glibc encoding), None if absent."""
        return None if self.ac_exe_dev is None else dev_minor(self.ac_exe_dev)

    @property
    def group_dead(self) -> bool | None:
        """AGROUP: this task was the last of its thread group (v12+; else None)."""
        if self.ac_flag is None or self.version < 12:
            return None
        return bool(self.ac_flag & AGROUP)

    def carried(self) -> tuple[str, ...]:
        """Names of the kernel fields this record carries (not None)."""
        return tuple(f.name for f in FIELDS if self[f.position] is not None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: kernel field names and units, plus record attributes.

        Timespecs become ``{"tv_sec", "tv_nsec"}``; derived values have their own
        names (``exe_major``, ``exe_minor``).
        """
        out: dict[str, Any] = {}
        for f in FIELDS:
            value = self[f.position]
            out[f.name] = value._asdict() if isinstance(value, Timespec) else value
        out.update(scope=self.scope, source=self.source, payload_len=self.payload_len,
                   exe_major=self.exe_major, exe_minor=self.exe_minor)
        if self.extra:
            out["extra"] = self.extra.hex()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitRecord:
    """What the kernel sends when a task exits.

    ``task`` is the exiting task's record; ``group`` the thread group's record,
    sent only when the last thread of a multi-threaded process exits.  ``pid`` and
    ``tgid`` are in the initial PID namespace.  ``cpu`` is the CPU the task exited
    on when the receiving socket listened to one CPU only, else None.
    """

    task: TaskStats
    group: TaskStats | None = None
    pid: int
    tgid: int | None = None
    cpu: int | None = None
    seq: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.task, TaskStats) or self.task.scope != "pid":
            raise TypeError("ExitRecord.task must be a per-task TaskStats")
        if self.group is not None and self.group.scope != "tgid":
            raise TypeError("ExitRecord.group must be a thread group TaskStats")

    @property
    def ended_process(self) -> bool | None:
        """Whether this exit ended the process: the TGID record came, or AGROUP is set.

        None on kernels before v12 for single-threaded processes (no way to tell).
        """
        if self.group is not None:
            return True
        return self.task.group_dead

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the task record, the group record (or None) and the context."""
        return {"pid": self.pid, "tgid": self.tgid, "cpu": self.cpu,
                "ended_process": self.ended_process, "task": self.task.to_dict(),
                "group": None if self.group is None else self.group.to_dict()}


class CgroupStats(NamedTuple):
    """``struct cgroupstats``: how many tasks of a cgroup are in each state."""

    nr_sleeping: int
    nr_running: int
    nr_stopped: int
    nr_uninterruptible: int
    nr_io_wait: int
    source: str = "kernel"


class Lost(NamedTuple):
    """Exit records that were lost, in the event stream where the loss was seen.

    ``reason``: "overrun" (the socket buffer was full; ``records`` is the kernel's
    exact drop count), "truncated" or "malformed"; ``cpus`` is the listener's cpulist.
    """

    records: int
    reason: str
    cpus: str


class Bulk(dict[int, TaskStats]):
    """The answer to a bulk query: id -> record, and the ids it skipped: ``vanished``
    (no such task: it exited, ESRCH) and ``denied`` (refused by taskstatsd's policy,
    EPERM, when the query asked to skip those)."""

    def __init__(self, records: dict[int, TaskStats] | None = None, *,
                 vanished: tuple[int, ...] = (), denied: tuple[int, ...] = ()) -> None:
        super().__init__(records or {})
        self.vanished = vanished
        self.denied = denied

    def __repr__(self) -> str:
        return (f"Bulk({dict.__repr__(self)}, vanished={self.vanished!r}, "
                f"denied={self.denied!r})")
