"""Immutable value types: TaskStats, ExitRecord, CgroupStats.

Attribute names are the kernel's field names, in the kernel's units (see
docs/fields.md).  A field the record does not carry is ``None``, never 0: fields
newer than the record's struct version, fields past a short payload, and the
fields a TGID (thread group) record does not carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from .fields import BY_NAME, FIELDS, SECONDS_PER_UNIT, StatsFields, Timespec
from .timeviews import DurationProperties, SecondsProperties

__all__ = ["AGROUP", "Bulk", "CgroupStats", "Durations", "ExitRecord", "Lost", "ProcessRecord",
           "Seconds", "TaskStats", "check_id"]

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


def _time_value(record: StatsFields, name: str) -> tuple[int, float] | None:
    """(raw value, seconds per unit) of time field ``name``; None if absent;
    ValueError naming the time fields when ``name`` is not one."""
    field = BY_NAME.get(name)
    if field is None or field.unit not in SECONDS_PER_UNIT:
        why = "no field" if field is None else f"in {field.unit or 'no unit'}, not a time"
        raise ValueError(f"{name!r} is {why}; time fields: "
                         + " ".join(f.name for f in FIELDS if f.unit in SECONDS_PER_UNIT))
    value = record[field.position]
    if value is None:
        return None
    assert isinstance(value, int)  # every time field of the table is an integer
    return value, SECONDS_PER_UNIT[field.unit]


class Seconds(SecondsProperties):
    """A record's time fields in seconds (float; None when the record lacks the
    field): ``rec.seconds.ac_utime`` (typed, one property per time field of the
    table), or ``rec.seconds(name)`` for a name held in a variable."""

    __slots__ = ("_record",)

    def __init__(self, record: StatsFields) -> None:
        self._record = record

    def __call__(self, name: str) -> float | None:
        """Time field ``name`` in seconds; ValueError if ``name`` is not a time field."""
        return self._seconds(name)

    def _seconds(self, name: str) -> float | None:
        got = _time_value(self._record, name)
        return None if got is None else got[0] * got[1]


class Durations(DurationProperties):
    """A record's time fields as ``datetime.timedelta`` (microsecond resolution: ns
    fields are rounded; None when the record lacks the field):
    ``rec.durations.blkio_delay_total``, or ``rec.durations(name)``."""

    __slots__ = ("_record",)

    def __init__(self, record: StatsFields) -> None:
        self._record = record

    def __call__(self, name: str) -> timedelta | None:
        """Time field ``name`` as a timedelta; ValueError if it is not a time field."""
        return self._duration(name)

    def _duration(self, name: str) -> timedelta | None:
        got = _time_value(self._record, name)
        if got is None:
            return None
        value, scale = got
        if scale == SECONDS_PER_UNIT["ns"]:
            return timedelta(microseconds=round(value / 1000))
        return timedelta(microseconds=value) if scale == SECONDS_PER_UNIT["us"] \
            else timedelta(seconds=value)


class TaskStats(StatsFields):
    """One ``struct taskstats`` as decoded: per task (``scope == "pid"``) or per
    thread group (``scope == "tgid"``).

    Immutable (a NamedTuple).  Units are the kernel's: delays and ``cpu_run_*`` in
    ns, ``ac_etime``/``ac_utime``/``ac_stime`` in us, memory high-water marks in
    KB.  Typed conversions: :attr:`seconds` (``rec.seconds.ac_utime``: float s),
    :attr:`durations` (``timedelta``), :attr:`cpu_time`, :attr:`start_time`, and
    :attr:`exit_status` / :attr:`signal` / :attr:`core_dumped` from ``ac_exitcode``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        """Short: scope, source, version and the fields that are neither None nor 0."""
        shown = [f"{f.name}={self[f.position]!r}" for f in FIELDS
                 if f.name != "version" and self[f.position] not in (None, 0, "")]
        return (f"TaskStats(scope={self.scope!r}, source={self.source!r}, "
                f"version={self.version}{''.join(', ' + s for s in shown)})")

    @property
    def seconds(self) -> Seconds:
        """The time fields in seconds: ``rec.seconds.ac_utime`` (float or None), or
        ``rec.seconds("ac_utime")`` for a name in a variable."""
        return Seconds(self)

    @property
    def durations(self) -> Durations:
        """The time fields as ``datetime.timedelta``: ``rec.durations.blkio_delay_total``."""
        return Durations(self)

    @property
    def cpu_time(self) -> float | None:
        """User + system CPU time (``ac_utime + ac_stime``), in seconds; None if absent."""
        if self.ac_utime is None or self.ac_stime is None:
            return None
        return (self.ac_utime + self.ac_stime) * SECONDS_PER_UNIT["us"]

    @property
    def start_time(self) -> datetime | None:
        """When the task began (UTC, whole seconds: ``ac_btime64``, else the 32-bit
        ``ac_btime``); None when the record carries neither (TGID records from the
        kernel)."""
        begin = self.ac_btime64 if self.ac_btime64 is not None else self.ac_btime
        return None if begin is None else datetime.fromtimestamp(begin, tz=timezone.utc)

    @property
    def exit_status(self) -> int | None:
        """The exit code (0..255) when ``ac_exitcode`` (a wait(2) status) says the task
        exited normally; None when a signal ended it or the field is absent.  Only exit
        records mean it: a live task's record reads 0."""
        code = self.ac_exitcode
        return None if code is None or code & 0x7F else (code >> 8) & 0xFF

    @property
    def signal(self) -> int | None:
        """The number of the signal that ended the task (``ac_exitcode`` as a wait(2)
        status); None when it exited normally or the field is absent."""
        code = self.ac_exitcode
        return None if code is None or not code & 0x7F else code & 0x7F

    @property
    def core_dumped(self) -> bool | None:
        """Whether the ending signal dumped core (bit 0x80 of the wait status); None
        when ``ac_exitcode`` is absent."""
        code = self.ac_exitcode
        return None if code is None else bool(code & 0x7F and code & 0x80)

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


class ProcessRecord(NamedTuple):
    """One process (thread group), as :meth:`pytaskstats.Client.process_iter` yields it.

    ``record`` is the thread group's record (summed over its threads by the kernel)
    with the identity a TGID record lacks filled from its leader's record (the thread
    whose id is the process's, asked in the same batch just before): ``ac_comm``, ``ac_pid``,
    ``ac_tgid``, ``ac_ppid``, ``ac_uid``, ``ac_gid``, ``ac_btime``, ``ac_btime64``,
    ``ac_nice``, ``ac_sched``.  ``info``: the selected ``attrs`` (each a field name
    or ``pid``, ``name``, ``cpu_time``, ``start_time``) -> value.
    """

    pid: int
    record: TaskStats
    info: dict[str, Any]

    @property
    def name(self) -> str | None:
        """The command name (the leader's ``ac_comm``, up to 15 bytes)."""
        return self.record.ac_comm


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
