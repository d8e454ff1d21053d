"""THE field table of ``struct taskstats``, and the per-version layouts derived from it.

Each row of :class:`StatsFields` is one kernel field in v16/v17 struct order,
annotated with :class:`F` = (C type, first struct version, unit, meaning, whether
TGID records carry it).  Decoding, encoding, the record type, JSON keys, the
journal and docs/fields.md all come from this one table; nothing else lists
fields.  ``ac_pad`` (3 padding bytes after ``ac_sched``) is not a field here.

Layouts: versions 2..14 and 16.. are prefixes of the table order (append-only);
version 15 put each ``<kind>_delay_max``/``_min`` pair right after its
``<kind>_delay_total`` (the kernel's v15 mistake, fixed in v16).
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Annotated, Literal, NamedTuple, get_type_hints

__all__ = ["DELAY_KINDS", "FIELDS", "TIME_FIELDS", "Field", "Layout", "StatsFields", "Timespec",
           "layout"]

LATEST_VERSION = 17  # newest layout we know; larger versions decode this prefix
MIN_VERSION = 2  # v1 (2006 pre-release) had another header


Scope = Literal["pid", "tgid"]  # what a query asks for: a task, or a thread group
SCOPES: tuple[Scope, ...] = ("pid", "tgid")


class Timespec(NamedTuple):
    """A ``struct __kernel_timespec``: CLOCK_REALTIME seconds and nanoseconds."""

    tv_sec: int
    tv_nsec: int

    def to_ns(self) -> int:
        """Nanoseconds since the epoch."""
        return self.tv_sec * 1_000_000_000 + self.tv_nsec


class F(NamedTuple):
    """A row's metadata: C type, first struct version, unit, meaning, carried by TGID."""

    ctype: str  # u8 i8 u16 u32 u64 comm timespec
    version: int
    unit: str
    help: str
    tgid: bool = False
    align: int = 0  # explicit __attribute__((aligned(N))) in the header


U = int | None
TS = Timespec | None
T = True


class StatsFields(NamedTuple):
    """The field table (one line per kernel field, in v16/v17 order).

    The four trailing attributes without metadata describe the record, not the struct.
    """

    version: Annotated[int, F("u16", 1, "", "struct version of the producing kernel", T)] = 0
    ac_exitcode: Annotated[U, F("u32", 2, "", "exit status (wait(2) encoding) of exiting tasks")] = None
    ac_flag: Annotated[U, F("u8", 2, "flags", "AFORK ASU ACOMPAT ACORE AXSIG AGROUP bits")] = None
    ac_nice: Annotated[U, F("i8", 2, "", "task nice value (signed)")] = None
    cpu_count: Annotated[U, F("u64", 1, "count", "times run on a CPU", T, 8)] = None
    cpu_delay_total: Annotated[U, F("u64", 1, "ns", "time runnable, waiting for a CPU", T)] = None
    blkio_count: Annotated[U, F("u64", 1, "count", "synchronous block I/O waits", T)] = None
    blkio_delay_total: Annotated[U, F("u64", 1, "ns", "time waiting for block I/O", T)] = None
    swapin_count: Annotated[U, F("u64", 1, "count", "swap-in waits", T)] = None
    swapin_delay_total: Annotated[U, F("u64", 1, "ns", "time waiting for swap-in", T)] = None
    cpu_run_real_total: Annotated[U, F("u64", 1, "ns", "CPU time (utime+stime)", T)] = None
    cpu_run_virtual_total: Annotated[U, F("u64", 1, "ns", "CPU time (sum_exec_runtime)", T)] = None
    ac_comm: Annotated[str | None, F("comm", 2, "", "command name (up to the first NUL)")] = None
    ac_sched: Annotated[U, F("u8", 2, "", "scheduling policy", align=8)] = None
    ac_uid: Annotated[U, F("u32", 2, "", "user id", align=8)] = None
    ac_gid: Annotated[U, F("u32", 2, "", "group id")] = None
    ac_pid: Annotated[U, F("u32", 2, "", "process (thread) id")] = None
    ac_ppid: Annotated[U, F("u32", 2, "", "parent's thread group id")] = None
    ac_btime: Annotated[U, F("u32", 2, "s", "begin time since the epoch (32-bit)")] = None
    ac_etime: Annotated[U, F("u64", 2, "us", "elapsed time since the task began", T, 8)] = None
    ac_utime: Annotated[U, F("u64", 2, "us", "user CPU time", T)] = None
    ac_stime: Annotated[U, F("u64", 2, "us", "system CPU time", T)] = None
    ac_minflt: Annotated[U, F("u64", 2, "count", "minor page faults")] = None
    ac_majflt: Annotated[U, F("u64", 2, "count", "major page faults")] = None
    coremem: Annotated[U, F("u64", 2, "MB*us", "accumulated RSS integral")] = None
    virtmem: Annotated[U, F("u64", 2, "MB*us", "accumulated virtual memory integral")] = None
    hiwater_rss: Annotated[U, F("u64", 2, "KB", "peak resident set size")] = None
    hiwater_vm: Annotated[U, F("u64", 2, "KB", "peak virtual memory size")] = None
    read_char: Annotated[U, F("u64", 2, "bytes", "bytes read by syscalls (rounded to KiB)")] = None
    write_char: Annotated[U, F("u64", 2, "bytes", "bytes written by syscalls (rounded to KiB)")] = None
    read_syscalls: Annotated[U, F("u64", 2, "count", "read syscalls (kernel rounds to 1024)")] = None
    write_syscalls: Annotated[U, F("u64", 2, "count", "write syscalls (kernel rounds to 1024)")] = None
    read_bytes: Annotated[U, F("u64", 3, "bytes", "bytes read from storage (rounded to KiB)")] = None
    write_bytes: Annotated[U, F("u64", 3, "bytes", "bytes written to storage (rounded to KiB)")] = None
    cancelled_write_bytes: Annotated[U, F("u64", 3, "bytes", "truncated dirty page cache bytes")] = None
    nvcsw: Annotated[U, F("u64", 4, "count", "voluntary context switches", T)] = None
    nivcsw: Annotated[U, F("u64", 4, "count", "involuntary context switches", T)] = None
    ac_utimescaled: Annotated[U, F("u64", 5, "us", "user CPU time, frequency scaled")] = None
    ac_stimescaled: Annotated[U, F("u64", 5, "us", "system CPU time, frequency scaled")] = None
    cpu_scaled_run_real_total: Annotated[U, F("u64", 5, "ns", "scaled CPU time", T)] = None
    freepages_count: Annotated[U, F("u64", 7, "count", "memory reclaim waits", T)] = None
    freepages_delay_total: Annotated[U, F("u64", 7, "ns", "time in memory reclaim", T)] = None
    thrashing_count: Annotated[U, F("u64", 9, "count", "thrashing page cache waits", T)] = None
    thrashing_delay_total: Annotated[U, F("u64", 9, "ns", "time thrashing", T)] = None
    ac_btime64: Annotated[U, F("u64", 10, "s", "begin time since the epoch (64-bit)")] = None
    compact_count: Annotated[U, F("u64", 11, "count", "direct compaction waits", T)] = None
    compact_delay_total: Annotated[U, F("u64", 11, "ns", "time in direct compaction", T)] = None
    ac_tgid: Annotated[U, F("u32", 12, "", "thread group id")] = None
    ac_tgetime: Annotated[U, F("u64", 12, "us", "elapsed time of the thread group", align=8)] = None
    ac_exe_dev: Annotated[U, F("u64", 12, "dev_t", "device of the executable (huge_encode_dev)")] = None
    ac_exe_inode: Annotated[U, F("u64", 12, "", "inode of the executable")] = None
    wpcopy_count: Annotated[U, F("u64", 13, "count", "write-protect copy (CoW) waits", T)] = None
    wpcopy_delay_total: Annotated[U, F("u64", 13, "ns", "time in write-protect copy", T)] = None
    irq_count: Annotated[U, F("u64", 14, "count", "IRQ/softirq episodes charged", T)] = None
    irq_delay_total: Annotated[U, F("u64", 14, "ns", "IRQ/softirq time charged", T)] = None
    cpu_delay_max: Annotated[U, F("u64", 15, "ns", "longest CPU wait", T)] = None
    cpu_delay_min: Annotated[U, F("u64", 15, "ns", "shortest CPU wait (0: none)", T)] = None
    blkio_delay_max: Annotated[U, F("u64", 15, "ns", "longest block I/O wait", T)] = None
    blkio_delay_min: Annotated[U, F("u64", 15, "ns", "shortest block I/O wait", T)] = None
    swapin_delay_max: Annotated[U, F("u64", 15, "ns", "longest swap-in wait", T)] = None
    swapin_delay_min: Annotated[U, F("u64", 15, "ns", "shortest swap-in wait", T)] = None
    freepages_delay_max: Annotated[U, F("u64", 15, "ns", "longest reclaim wait", T)] = None
    freepages_delay_min: Annotated[U, F("u64", 15, "ns", "shortest reclaim wait", T)] = None
    thrashing_delay_max: Annotated[U, F("u64", 15, "ns", "longest thrashing wait", T)] = None
    thrashing_delay_min: Annotated[U, F("u64", 15, "ns", "shortest thrashing wait", T)] = None
    compact_delay_max: Annotated[U, F("u64", 15, "ns", "longest compaction wait", T)] = None
    compact_delay_min: Annotated[U, F("u64", 15, "ns", "shortest compaction wait", T)] = None
    wpcopy_delay_max: Annotated[U, F("u64", 15, "ns", "longest write-protect copy", T)] = None
    wpcopy_delay_min: Annotated[U, F("u64", 15, "ns", "shortest write-protect copy", T)] = None
    irq_delay_max: Annotated[U, F("u64", 15, "ns", "longest IRQ episode", T)] = None
    irq_delay_min: Annotated[U, F("u64", 15, "ns", "shortest IRQ episode", T)] = None
    cpu_delay_max_ts: Annotated[TS, F("timespec", 17, "timespec", "when cpu_delay_max was seen", T)] = None
    blkio_delay_max_ts: Annotated[TS, F("timespec", 17, "timespec", "when blkio_delay_max was seen", T)] = None
    swapin_delay_max_ts: Annotated[TS, F("timespec", 17, "timespec", "when swapin_delay_max was seen", T)] = None
    freepages_delay_max_ts: Annotated[TS, F("timespec", 17, "timespec", "when freepages_delay_max was seen", T)] = None
    thrashing_delay_max_ts: Annotated[TS, F("timespec", 17, "timespec", "when thrashing_delay_max was seen", T)] = None
    compact_delay_max_ts: Annotated[TS, F("timespec", 17, "timespec", "when compact_delay_max was seen", T)] = None
    wpcopy_delay_max_ts: Annotated[TS, F("timespec", 17, "timespec", "when wpcopy_delay_max was seen", T)] = None
    irq_delay_max_ts: Annotated[TS, F("timespec", 17, "timespec", "when irq_delay_max was seen", T)] = None
    # record attributes, not struct fields (no F metadata):
    scope: Scope = "pid"  # which kind of record this is: a task's or a thread group's
    source: str = "kernel"  # where it came from: kernel, daemon or procfs
    payload_len: int = 0  # bytes in the STATS attribute
    extra: bytes = b""  # bytes past the newest layout we know (future kernels)


class Field(NamedTuple):
    """One row of the table, with its position in the record tuple."""

    name: str
    position: int  # index in the record tuple
    ctype: str
    version: int
    unit: str
    help: str
    tgid: bool
    align: int


def _rows() -> tuple[Field, ...]:
    hints = get_type_hints(StatsFields, include_extras=True)
    rows = []
    for index, name in enumerate(StatsFields._fields):
        metadata = getattr(hints[name], "__metadata__", ())
        if metadata:
            rows.append(Field(name, index, *metadata[0]))
    return tuple(rows)


FIELDS: tuple[Field, ...] = _rows()
BY_NAME = {f.name: f for f in FIELDS}
# the delay kinds, in kernel order: cpu blkio swapin freepages thrashing compact wpcopy irq
DELAY_KINDS: tuple[str, ...] = tuple(
    f.name[: -len("_delay_total")] for f in FIELDS if f.name.endswith("_delay_total"))

# seconds per time unit of the table ("ns", "us", "s"): the one unit-scale table
SECONDS_PER_UNIT: dict[str, float] = {"ns": 1e-9, "us": 1e-6, "s": 1.0}
_CODE = {"u8": "B", "i8": "b", "u16": "H", "u32": "I", "u64": "Q", "comm": "32s",
         "timespec": "2q"}
_SIZE = {"u8": 1, "i8": 1, "u16": 2, "u32": 4, "u64": 8, "comm": 32, "timespec": 16}


class Layout(NamedTuple):
    """The byte layout of one struct version (x86_64 / generic 64-bit ABI).

    ``fields`` in struct order, ``offsets`` of each, ``size`` = sizeof (8-aligned).
    """

    version: int
    fields: tuple[Field, ...]
    offsets: tuple[int, ...]
    size: int

    def end_of(self, n: int) -> int:
        """Bytes needed for the first ``n`` fields."""
        return 0 if n == 0 else self.offsets[n - 1] + _SIZE[self.fields[n - 1].ctype]

    def fitting(self, size: int) -> int:
        """How many leading fields a payload of ``size`` bytes holds whole."""
        count = len(self.fields)
        while count and self.end_of(count) > size:
            count -= 1
        return count

    @cache  # noqa: B019 - layouts are few and immortal
    def struct_for(self, n: int) -> struct.Struct:
        """A ``struct.Struct`` for the first ``n`` fields, with explicit padding."""
        code, pos = ["="], 0
        for field, off in zip(self.fields[:n], self.offsets[:n], strict=True):
            if off > pos:
                code.append(f"{off - pos}x")
            code.append(_CODE[field.ctype])
            pos = off + _SIZE[field.ctype]
        return struct.Struct("".join(code))


def _v15_order(rows: list[Field]) -> list[Field]:
    """Move each ``<kind>_delay_max``/``_min`` right after ``<kind>_delay_total``."""
    late = {f.name: f for f in rows if f.version == 15}
    out = []
    for f in rows:
        if f.version == 15:
            continue
        out.append(f)
        if f.name.endswith("_delay_total"):
            kind = f.name[: -len("_delay_total")]
            out += [late[f"{kind}_delay_max"], late[f"{kind}_delay_min"]]
    return out


@cache
def layout(version: int) -> Layout:
    """The layout of struct version ``version`` (2..17; larger ones use 17's)."""
    version = min(version, LATEST_VERSION)
    rows = [f for f in FIELDS if f.version <= version]
    if version == 15:
        rows = _v15_order(rows)
    offsets, pos = [], 0
    for f in rows:
        align = max(f.align, min(_SIZE[f.ctype], 8) if f.ctype != "comm" else 1)
        pos = (pos + align - 1) // align * align
        offsets.append(pos)
        pos += _SIZE[f.ctype]
    return Layout(version, tuple(rows), tuple(offsets), (pos + 7) // 8 * 8)


def markdown() -> str:
    """The field reference (docs/fields.md), generated from the table."""
    lines = [
        "# struct taskstats field reference",
        "",
        "Generated from the table in `src/pytaskstats/fields.py` by",
        "`python -c 'import pytaskstats.fields as f; print(f.markdown(), end=\"\")'`;",
        "a test keeps it in step. Offsets are for v16/v17 (x86_64 and other 64-bit ABIs).",
        "Record attributes and JSON keys use these names and units. `tgid` = carried in",
        "TGID (thread group) records; other fields are None there, never 0.",
        "",
        "| field | C type | since | offset | unit | tgid | meaning |",
        "|---|---|---:|---:|---|---|---|",
    ]
    lay = layout(LATEST_VERSION)
    offs = dict(zip((f.name for f in lay.fields), lay.offsets, strict=True))
    for f in FIELDS:
        lines.append(f"| `{f.name}` | {f.ctype} | {f.version} | {offs[f.name]} | {f.unit} "
                     f"| {'yes' if f.tgid else ''} | {f.help} |")
    return "\n".join(lines) + "\n"


TIME_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.unit in SECONDS_PER_UNIT)


def time_views_source() -> str:
    """The source of ``pytaskstats/timeviews.py``: one typed property per time field
    of the table (unit ns, us or s), for ``rec.seconds.NAME`` (float seconds) and
    ``rec.durations.NAME`` (``datetime.timedelta``).  Regenerate with
    ``python -c 'import pytaskstats.fields as f; print(f.time_views_source(), end="")'
    > src/pytaskstats/timeviews.py``; a test keeps it in step with the table."""
    out = [
        '"""Typed properties for the time fields of the table (GENERATED from',
        "``fields.TIME_FIELDS`` by ``fields.time_views_source()``: do not edit; a test",
        'compares).  Mixins of :class:`pytaskstats.records.Seconds` and ``Durations``."""',
        "",
        "from __future__ import annotations",
        "",
        "from datetime import timedelta",
        "",
        '__all__ = ["DurationProperties", "SecondsProperties"]',
    ]
    for cls, kind, rtype, what in (
            ("SecondsProperties", "seconds", "float", "in seconds"),
            ("DurationProperties", "duration", "timedelta", "as a timedelta (us resolution)")):
        out += ["", "", f"class {cls}:",
                f'    """One property per time field: its value {what}; None if absent."""',
                "", "    __slots__ = ()", "",
                f"    def _{kind}(self, name: str) -> {rtype} | None:",
                "        raise NotImplementedError"]
        for f in TIME_FIELDS:
            out += ["", "    @property", f"    def {f.name}(self) -> {rtype} | None:",
                    f'        """{f.help} ({f.unit})."""',
                    f'        return self._{kind}("{f.name}")']
    return "\n".join(out) + "\n"
