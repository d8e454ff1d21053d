"""Where the procfs source's fields come from: :data:`MAPPING` (field by field, with
the unit conversion) and :data:`STATES` (how cgroup task states are counted);
:func:`mapping_markdown` renders both, with the precision notes, as docs/procfs.md."""

from __future__ import annotations

from typing import NamedTuple

from .fields import BY_NAME, FIELDS

__all__ = ["MAPPING", "STATES", "MapRow", "StateRow", "mapping_markdown"]


class MapRow(NamedTuple):
    """One kernel field the procfs source fills: its procfs origin and unit conversion.

    ``tgid`` says how the thread group record fills it ("" = TGID records leave it None).
    """

    field: str
    source: str
    conversion: str
    tgid: str = ""


_LIVE_SUM = "sum over the live threads' files"
_IO = "`& ~1023` (down to a multiple of 1024), as the kernel rounds"

MAPPING: tuple[MapRow, ...] = (
    MapRow("version", "-", "fields.LATEST_VERSION; `source == \"procfs\"` marks the record",
           "the same"),
    MapRow("ac_nice", "stat 19 `nice`", "as is (signed)"),
    MapRow("cpu_count", "schedstat 3 `pcount` (timeslices)", "as is", _LIVE_SUM),
    MapRow("cpu_delay_total", "schedstat 2 `run_delay`", "ns, as is", _LIVE_SUM),
    MapRow("blkio_delay_total", "stat 42 `delayacct_blkio_ticks`",
           "ticks x 1e9 / CLK_TCK -> ns; None unless ROOT/sys/kernel/task_delayacct is 1",
           _LIVE_SUM),
    MapRow("cpu_run_real_total", "stat 14 `utime` + 15 `stime`", "ticks x 1e9 / CLK_TCK -> ns",
           "the process's ROOT/TGID/stat (includes exited threads)"),
    MapRow("cpu_run_virtual_total", "schedstat 1 `sum_exec_runtime`", "ns, as is", _LIVE_SUM),
    MapRow("ac_comm", "stat 2 `comm`",
           "first 15 bytes; a workqueue worker's `-desc`/`+desc` suffix dropped; UTF-8 "
           "(invalid bytes replaced)"),
    MapRow("ac_sched", "stat 41 `policy`", "as is"),
    MapRow("ac_uid", "status `Uid` (first: real)", "as is"),
    MapRow("ac_gid", "status `Gid` (first: real)", "as is"),
    MapRow("ac_pid", "status `Pid`", "as is"),
    MapRow("ac_ppid", "stat 4 `ppid`", "as is"),
    MapRow("ac_btime", "stat 22 `starttime`, ROOT/stat `btime`",
           "btime + starttime // CLK_TCK -> s, clamped to u32"),
    MapRow("ac_etime", "stat 22 `starttime`",
           "(CLOCK_BOOTTIME now - starttime x 1e9 / CLK_TCK) // 1000 -> us", _LIVE_SUM),
    MapRow("ac_utime", "stat 14 `utime`", "ticks x 1e6 / CLK_TCK -> us",
           "the process's ROOT/TGID/stat (includes exited threads)"),
    MapRow("ac_stime", "stat 15 `stime`", "ticks x 1e6 / CLK_TCK -> us",
           "the process's ROOT/TGID/stat (includes exited threads)"),
    MapRow("ac_minflt", "stat 10 `minflt`", "as is"),
    MapRow("ac_majflt", "stat 12 `majflt`", "as is"),
    MapRow("hiwater_rss", "status `VmHWM`",
           "kB, as is (see below); None for a task without an mm"),
    MapRow("hiwater_vm", "status `VmPeak`", "kB, as is; None for a task without an mm"),
    MapRow("read_char", "io `rchar`", _IO),
    MapRow("write_char", "io `wchar`", _IO),
    MapRow("read_syscalls", "io `syscr`", "`& ~1023`: the kernel masks the counts too"),
    MapRow("write_syscalls", "io `syscw`", "`& ~1023`: the kernel masks the counts too"),
    MapRow("read_bytes", "io `read_bytes`", _IO),
    MapRow("write_bytes", "io `write_bytes`", _IO),
    MapRow("cancelled_write_bytes", "io `cancelled_write_bytes`", _IO),
    MapRow("nvcsw", "status `voluntary_ctxt_switches`", "as is", _LIVE_SUM),
    MapRow("nivcsw", "status `nonvoluntary_ctxt_switches`", "as is", _LIVE_SUM),
    MapRow("ac_btime64", "stat 22 `starttime`, ROOT/stat `btime`",
           "btime + starttime // CLK_TCK -> s"),
    MapRow("ac_tgid", "status `Tgid`", "as is"),
)


class StateRow(NamedTuple):
    """How :meth:`ProcSource.cgroup` counts a task state letter of /proc/PID/stat field 3."""

    letter: str
    meaning: str
    counted_as: str | None  # a CgroupStats field, or None: counted nowhere
    kernel: str  # what the kernel's v1 cgroupstats does with the same tasks


STATES: tuple[StateRow, ...] = (
    StateRow("R", "running or runnable", "nr_running", "TASK_RUNNING: nr_running"),
    StateRow("S", "interruptible sleep", "nr_sleeping",
             "TASK_INTERRUPTIBLE: nr_sleeping; with TASK_FREEZABLE or another flag bit "
             "(nanosleep, `sleep 30`): nowhere"),
    StateRow("D", "uninterruptible sleep", "nr_uninterruptible",
             "TASK_UNINTERRUPTIBLE: nr_uninterruptible; TASK_KILLABLE and other flag "
             "combinations: nr_io_wait if in_iowait, else nowhere"),
    StateRow("T", "stopped by a signal", "nr_stopped", "TASK_STOPPED: nr_stopped"),
    StateRow("t", "stopped by a tracer", "nr_stopped", "TASK_TRACED: nowhere"),
    StateRow("I", "idle kernel thread", None, "TASK_IDLE: nowhere"),
    StateRow("P", "parked kernel thread", None, "TASK_PARKED: nowhere"),
    StateRow("Z", "zombie", None, "not in the cgroup's task list"),
    StateRow("X", "dead", None, "not in the cgroup's task list"),
)



_INTRO = """\
# The procfs source

Generated from `MAPPING` and `STATES` in `src/pytaskstats/procfs_mapping.py` by
`python -c 'import pytaskstats.procfs as p; print(p.mapping_markdown(), end="")'`;
a test keeps this file in step.

`ProcSource(root="/proc")` builds the same `TaskStats` and `CgroupStats` records as the
kernel's taskstats interface, for any user and without netlink. Its records have
`source == "procfs"`, `payload_len == 0` and `version == 17` (`fields.LATEST_VERSION`:
there is no struct, so the number only says which field set the record follows). The
fields in the table are filled in the kernel's units; every other field is None, never 0.

## Which files

- A task's record (`pid(tid)`, `pids(tids)`) reads `ROOT/<tid>/task/<tid>/stat`,
  `status`, `io` and `schedstat`. That directory exists for every thread id, leader or
  not, and holds the thread's own counters. `ROOT/<tid>/stat` and `ROOT/<tid>/io` would
  be wrong for the kernel's per-task record: they sum utime, stime, faults and I/O over
  the whole thread group.
- A thread group's record (`tgid(tgid)`) reads `ROOT/<tgid>/stat` (the group's CPU
  times, exited threads included) and the `stat`, `status` and `schedstat` of every
  thread listed in `ROOT/<tgid>/task/`. It skips `io`.
- `cgroup(path)` reads the cgroup's thread list and each task's
  `ROOT/<tid>/task/<tid>/stat`.
- Stat field numbers are those of proc(5), counting from 1. The line is split after the
  *last* `)`, so a command name such as `a) R (b` cannot shift the fields. `CLK_TCK` is
  `os.sysconf("SC_CLK_TCK")` (USER_HZ) and `btime` the line of `ROOT/stat`.

## Field mapping

| field | kernel unit | procfs source | conversion | TGID record |
|---|---|---|---|---|
"""

_PRECISION = """
## How close to the kernel's numbers

- **Exact** for a task that is not running: the ids, comm, nice, policy, faults, context
  switches, `hiwater_vm`, the I/O fields (after the same rounding), `cpu_count`,
  `cpu_delay_total` and `cpu_run_virtual_total` (schedstat prints the very
  `sum_exec_runtime`, `run_delay` and `pcount` the kernel copies).
- **`hiwater_rss`**: close, not exact. Since "mm: fix the inaccurate memory statistics
  issue for users" (2025), `VmHWM` sums the per-CPU RSS counters exactly, while the
  kernel's record reads their approximate value; they can differ by the counters' per-CPU
  batches (72 kB on a 2-CPU machine here).
- **`ac_utime`, `ac_stime`, `cpu_run_real_total`**: clock-tick resolution (10 ms at
  USER_HZ 100), rounded down. /proc also rescales them so that utime + stime equals the
  precise run time (`cputime_adjust`), while the kernel reports its raw tick samples.
  This source's `cpu_run_real_total` is therefore within two ticks below the kernel's
  `cpu_run_virtual_total`, and its utime + stime differs from the kernel's by up to two
  ticks plus the kernel's own sampling error (the gap between its `cpu_run_real_total`
  and `cpu_run_virtual_total`). The split between the two can move further: /proc never
  lets either decrease from one read to the next, so a read early in a task's life can
  shift a tick or more from utime to stime for good.
- **`ac_etime`**: the start time is in ticks, so the elapsed time is up to one tick too
  large. It is measured on CLOCK_BOOTTIME when the file is read; the kernel uses
  CLOCK_MONOTONIC, which differs only after a suspend.
- **`ac_btime`, `ac_btime64`**: whole boot seconds plus the start time. The kernel
  computes `now - etime`. Both truncate to whole seconds (and /proc/stat's boot time is
  itself whole seconds), so the two may differ by up to two seconds.
- **`blkio_delay_total`**: tick resolution, rounded down. With delay accounting off the
  kernel reports 0, meaning "not measured"; this source reports None. Tasks forked before
  it was switched on read 0 in both, as they have no delay record.
- **TGID records**: `ac_utime`, `ac_stime` and `cpu_run_real_total` include exited
  threads, like the kernel's. The other sums cover the live threads only, whereas the
  kernel keeps exited threads' delays (and, since "taskstats: retain dead thread stats in
  TGID queries", their elapsed times and context switches).
- Ids are in the pid and user namespaces of the procfs mount and the reader, the
  kernel's in those of the requester.

## Fields left None

"""

_ERRORS = """
These have no procfs source (the integrals `coremem`/`virtmem`, exit-only `ac_exitcode`
and `ac_flag`, the delay counts and the non-block-I/O delays, the frequency-scaled times,
the per-event maxima and minima), or would cost an extra file or system call per task
(`ac_tgetime` needs the group leader's start time, `ac_exe_*` a stat of `/proc/PID/exe`
with ptrace access).

## Errors and races

- A task whose `stat` is gone (ENOENT on open, ESRCH on read) raises `NoSuchTask`;
  `pids()` leaves it out.
- When another file of the task is missing, its `stat` is read again. If it is gone, or
  shows another start time (the pid was reused: tasks are identified by pid and start
  time), the task vanished mid-read: `NoSuchTask`. Otherwise this kernel has no such
  file (`io` needs CONFIG_TASK_IO_ACCOUNTING) and its fields stay None.
- A file the reader may not read (EACCES: `io` of another user's process needs ptrace
  access) leaves its fields None and raises nothing. Records carry no notes, so None is
  the whole signal; the table above says which fields come from which file.
- An unreadable `stat` (procfs mounted with `hidepid`) raises `AccessDenied`.
- Malformed content raises `ProcfsFormatError`, a `RemoteProtocolError` that names the
  file; for key:value files the message lists the keys the file has.

## Cgroup state counts

`cgroup(path)` takes the thread ids of a cgroup2 directory from its `cgroup.threads`
(of a v1 directory, from `tasks`) and each task's state letter from
`ROOT/<tid>/task/<tid>/stat` field 3; tasks that exit meanwhile are not counted. The
kernel's cgroupstats (v1 only) compares `task->__state` with whole values in a switch,
while /proc shows the state with its flag bits masked off, so some tasks land
differently:

| letter | meaning | counted as | kernel v1 cgroupstats |
|---|---|---|---|
"""

_CGROUP_NOTES = """
- **Freezable sleepers count as sleeping.** Since the freezer rewrite (Linux 6.1) a task
  in `nanosleep` (`sleep 30`) or a futex wait (any idle thread of a threaded program)
  sleeps in TASK_INTERRUPTIBLE|TASK_FREEZABLE, which matches no case of the kernel's
  switch: it is counted nowhere. Checked on 6.18: pipe, epoll, select, poll, wait4 and
  pause sleepers are counted, nanosleep and futex sleepers are not; three `cat`s reading
  a pipe and two `sleep 30` give the kernel's nr_sleeping 3. /proc shows all of them as
  `S` and cannot tell them apart, and they are asleep by any reading of the field, so
  this source does not mirror the quirk: nr_sleeping 5 there. For the same reason
  TASK_KILLABLE `D` tasks count as uninterruptible and tracer stops (`t`) as stopped.
- **nr_io_wait is always 0.** The kernel counts a task there only when its state matches
  none of its four cases and `in_iowait` is set: in practice a killable (or otherwise
  flagged) uninterruptible sleep inside `io_schedule()`. procfs has no in_iowait flag;
  such a task shows as `D` and is counted in nr_uninterruptible, as the kernel counts a
  plain uninterruptible I/O wait. A guess from `/proc/PID/wchan` would need ptrace access
  to other users' tasks and a list of kernel function names that changes between
  releases, so none is made.
- The thread ids of `cgroup.threads` are in the reader's pid namespace: `ROOT` must be
  a procfs of that namespace.
"""


def mapping_markdown() -> str:
    """docs/procfs.md: the field mapping, the precision notes and the cgroup counting."""
    lines = [_INTRO.rstrip("\n")]
    for row in MAPPING:
        unit = BY_NAME[row.field].unit or "-"
        lines.append(f"| `{row.field}` | {unit} | {row.source} | {row.conversion} "
                     f"| {row.tgid or 'None'} |")
    lines += [_PRECISION.rstrip("\n"), ""]
    filled = {row.field for row in MAPPING}
    lines.append(", ".join(f"`{f.name}`" for f in FIELDS if f.name not in filled) + ".")
    lines.append(_ERRORS.rstrip("\n"))
    for state in STATES:
        lines.append(f"| `{state.letter}` | {state.meaning} | {state.counted_as or 'nowhere'} "
                     f"| {state.kernel} |")
    lines.append(_CGROUP_NOTES.rstrip("\n"))
    return "\n".join(lines) + "\n"
