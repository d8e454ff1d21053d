"""The procfs source: TaskStats and CgroupStats records read from /proc, no privilege needed.

Records carry the kernel's field names and units and ``source == "procfs"``;
a field procfs cannot give is None, never 0.  :data:`MAPPING` says where each
filled field comes from and how it is converted; :func:`mapping_markdown`
renders it (with :data:`STATES`, the cgroup state counting) as docs/procfs.md.

Files are read with one ``os.read`` into bytes and parsed as bytes.  Per-task
files come from ``ROOT/<tid>/task/<tid>/``: that directory exists for every
thread id, and unlike ``ROOT/<tid>/`` it holds the thread's own counters
(``ROOT/<tid>/stat`` and ``io`` sum the whole thread group).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any, NamedTuple

from .errors import NoSuchTask, RemoteProtocolError, TaskstatsError, Unsupported, from_errno
from .fields import BY_NAME, FIELDS, LATEST_VERSION
from .records import CgroupStats, TaskStats, check_id

__all__ = [
    "MAPPING",
    "STATES",
    "MapRow",
    "ProcSource",
    "ProcfsFormatError",
    "StateRow",
    "mapping_markdown",
]

SOURCE = "procfs"
COMM_LEN = 15  # TASK_COMM_LEN - 1: the kernel's ac_comm holds at most 15 bytes
PF_WQ_WORKER = 0x20  # task flag (stat field 9): /proc appends "-desc"/"+desc" to the comm
KB_MASK = ~1023  # the kernel rounds its I/O counters down to a multiple of 1024
U32_MAX = 2**32 - 1
DELAYACCT_SYSCTL = "sys/kernel/task_delayacct"  # relative to the procfs root
_O_READ = os.O_RDONLY | os.O_CLOEXEC
_CHUNK = 8192  # a procfs seq_file hands over its whole text in one read of this size
_VANISHED = (errno.ENOENT, errno.ESRCH)
_DENIED = (errno.EACCES, errno.EPERM)


class ProcfsFormatError(RemoteProtocolError):
    """A procfs file whose content does not parse; ``path`` names the file."""

    def __init__(self, message: str, *, path: str, pid: int | None = None) -> None:
        super().__init__(f"{path}: {message}", pid=pid)
        self.path = path


# ---------------------------------------------------------------- the mapping (docs/procfs.md)

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
_CGROUP_SLOTS = ("nr_sleeping", "nr_running", "nr_stopped", "nr_uninterruptible")
_STATE_SLOT = {ord(r.letter): _CGROUP_SLOTS.index(r.counted_as)
               for r in STATES if r.counted_as is not None}


# ---------------------------------------------------------------- reading and parsing bytes

def read_file(path: str) -> bytes:
    """The whole content of ``path`` (one ``read`` for procfs files); raises OSError."""
    fd = os.open(path, _O_READ)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data
        chunks = [data]
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class Stat(NamedTuple):
    """The fields of /proc/PID/stat this module uses (times in clock ticks)."""

    comm: str  # as the kernel's ac_comm: 15 bytes at most
    state: str
    ppid: int
    minflt: int
    majflt: int
    utime: int
    stime: int
    nice: int
    start: int  # starttime: ticks after boot
    policy: int | None  # missing on very old kernels
    blkio_ticks: int | None


def parse_stat(data: bytes, path: str) -> Stat:
    """Parse a stat line; the comm lies between the first '(' and the LAST ')'."""
    try:
        head, paren, tail = data.rpartition(b")")
        rest = tail.split()
        if not paren or len(rest) < 20:
            raise ValueError(f"{len(rest) + 2 if paren else 0} fields, expected 22 or more")
        comm = kernel_comm(head[head.index(b"(") + 1:], int(rest[6]))
        return Stat(comm, rest[0].decode("ascii"), int(rest[1]), int(rest[7]), int(rest[9]),
                    int(rest[11]), int(rest[12]), int(rest[16]), int(rest[19]),
                    int(rest[38]) if len(rest) > 38 else None,
                    int(rest[39]) if len(rest) > 39 else None)
    except (ValueError, IndexError) as err:
        raise ProcfsFormatError(f"malformed stat line ({err}): {data[:200]!r}",
                                path=path) from err


def kernel_comm(raw: bytes, flags: int) -> str:
    """The kernel's ac_comm for a stat comm: /proc shows kernel threads' full names and
    workqueue workers' "-desc"/"+desc" suffixes, the task's comm is 15 bytes at most."""
    if flags & PF_WQ_WORKER and not raw.startswith(b"kworker/R-"):
        raw = raw.split(b"-", 1)[0].split(b"+", 1)[0]
    return raw[:COMM_LEN].decode("utf-8", "replace")


def keyed(data: bytes, keys: tuple[bytes, ...], sep: bytes = b":") -> dict[bytes, bytes]:
    """The values (after ``sep``, unstripped) of the ``key<sep>`` lines named in ``keys``;
    lines not asked for are not parsed, keys not found are left out."""
    text = b"\n" + data
    out = {}
    for key, needle, skip in _needles(keys, sep):
        at = text.find(needle)
        if at >= 0:
            end = text.find(b"\n", at + skip)
            out[key] = text[at + skip:] if end < 0 else text[at + skip:end]
    return out


@cache
def _needles(keys: tuple[bytes, ...], sep: bytes) -> tuple[tuple[bytes, bytes, int], ...]:
    return tuple((key, b"\n" + key + sep, len(key) + len(sep) + 1) for key in keys)


def require(found: dict[bytes, bytes], keys: tuple[bytes, ...], data: bytes, path: str,
            sep: bytes = b":") -> None:
    """Raise ProcfsFormatError listing the missing keys and the keys the file has."""
    missing = [k.decode() for k in keys if k not in found]
    if missing:
        present = [line.partition(sep)[0].decode("ascii", "replace")
                   for line in data.splitlines()]
        raise ProcfsFormatError(f"no line for {', '.join(missing)}; keys found: {present}",
                                path=path)


class Status(NamedTuple):
    """The fields of /proc/PID/status this module uses (memory in kB)."""

    pid: int
    tgid: int
    uid: int
    gid: int
    nvcsw: int
    nivcsw: int
    vm_peak: int | None  # no Vm* lines without an mm (kernel threads, zombies)
    vm_hwm: int | None


_STATUS_NEEDED = (b"Pid", b"Tgid", b"Uid", b"Gid", b"voluntary_ctxt_switches",
                  b"nonvoluntary_ctxt_switches")
_STATUS_KEYS = (*_STATUS_NEEDED, b"VmPeak", b"VmHWM")


def parse_status(data: bytes, path: str) -> Status:
    """Parse the needed lines of a status file (errors list the keys found)."""
    d = keyed(data, _STATUS_KEYS)
    require(d, _STATUS_NEEDED, data, path)
    try:
        return Status(int(d[b"Pid"]), int(d[b"Tgid"]), int(d[b"Uid"].split()[0]),
                      int(d[b"Gid"].split()[0]), int(d[b"voluntary_ctxt_switches"]),
                      int(d[b"nonvoluntary_ctxt_switches"]), _kb(d.get(b"VmPeak")),
                      _kb(d.get(b"VmHWM")))
    except (ValueError, IndexError) as err:
        raise ProcfsFormatError(f"malformed status value ({err})", path=path) from err


def _kb(value: bytes | None) -> int | None:
    if value is None:
        return None
    number, unit = value.split()
    if unit != b"kB":
        raise ValueError(f"unit {unit!r}, expected b'kB'")
    return int(number)


IO_KEYS = (b"rchar", b"wchar", b"syscr", b"syscw", b"read_bytes", b"write_bytes",
           b"cancelled_write_bytes")
IO_FIELDS = ("read_char", "write_char", "read_syscalls", "write_syscalls", "read_bytes",
             "write_bytes", "cancelled_write_bytes")


def parse_io(data: bytes, path: str) -> tuple[int, ...]:
    """The io counters in IO_KEYS order, rounded down to multiples of 1024 like the kernel's."""
    words = data.split()
    try:
        if tuple(words[0::2]) == _IO_LABELS:  # the kernel's order: no key search needed
            return tuple(int(v) & KB_MASK for v in words[1::2])
        d = keyed(data, IO_KEYS)
        require(d, IO_KEYS, data, path)
        return tuple(int(d[k]) & KB_MASK for k in IO_KEYS)
    except ValueError as err:
        raise ProcfsFormatError(f"malformed io value ({err})", path=path) from err


_IO_LABELS = tuple(k + b":" for k in IO_KEYS)


SCHED_FIELDS = ("cpu_run_virtual_total", "cpu_delay_total", "cpu_count")


def parse_schedstat(data: bytes, path: str) -> tuple[int, int, int]:
    """sum_exec_runtime (ns), run_delay (ns), pcount: the order of SCHED_FIELDS."""
    try:
        run, delay, count = data.split()
        return int(run), int(delay), int(count)
    except ValueError as err:
        raise ProcfsFormatError(f"malformed schedstat ({err}): {data[:100]!r}",
                                path=path) from err


def os_error(err: OSError, path: str, tid: int, *, group: bool = False) -> TaskstatsError:
    """The library's exception for an OSError met reading ``path`` of task ``tid``
    (of thread group ``tid`` if ``group``), by :func:`~pytaskstats.errors.from_errno`."""
    pid, tgid = (None, tid) if group else (tid, None)
    return from_errno(err.errno or errno.EIO, "read", path=path, pid=pid, tgid=tgid)


def _boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _sum(values: Iterable[int | None]) -> int | None:
    """The sum, or None when any term is unknown."""
    total = 0
    for value in values:
        if value is None:
            return None
        total += value
    return total


class _Thread(NamedTuple):
    """One live thread's share of a thread group record."""

    etime: int
    blkio: int | None
    nvcsw: int | None
    nivcsw: int | None
    sched: tuple[int, int, int] | None


# ---------------------------------------------------------------- the source

def list_tasks(root: str = "/proc", uid: int | None = None) -> list[tuple[int, int]]:
    """(tgid, tid) of every thread, of processes owned by ``uid`` if given; processes
    that exit while listed are skipped.  The one walk of /proc/*/task/* in the package.

    Symlinked ROOT entries are skipped: /proc has none with a numeric name, so a
    fixture tree may use one for a thread's hidden ROOT/<tid> directory.
    """
    pairs: list[tuple[int, int]] = []
    with os.scandir(root) as entries:
        for entry in entries:
            if not entry.name.isdigit() or entry.is_symlink():
                continue
            try:
                if uid is not None and entry.stat().st_uid != uid:
                    continue
                tids = os.listdir(f"{root}/{entry.name}/task")
            except OSError:
                continue  # the process exited while we listed
            tgid = int(entry.name)
            pairs += [(tgid, int(tid)) for tid in tids]
    return pairs


def cgroup_path(tgid: int, root: str = "/proc") -> str | None:
    """A process's cgroup: the v2 (unified) path, else the first v1 one; None when it
    is gone.  Raw reads: taskstatsd calls this for every exit."""
    try:
        fd = os.open(f"{root}/{tgid}/cgroup", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)
    at = text.find(b"0::")
    if at == 0 or (at > 0 and text[at - 1:at] == b"\n"):
        return text[at + 3:].split(b"\n", 1)[0].decode(errors="replace")
    first = text.split(b"\n", 1)[0].split(b":", 2)
    return first[2].decode(errors="replace") if len(first) == 3 else None


class ProcSource:
    """TaskStats and CgroupStats from a procfs tree (default /proc), for any user.

    ``clock_ticks`` (USER_HZ) defaults to ``os.sysconf("SC_CLK_TCK")``;
    ``boot_time_s`` (epoch seconds) to the ``btime`` of ROOT/stat, read when
    first needed; ``clock_ns`` returns CLOCK_BOOTTIME ns, the clock of the
    start times (inject it to test with a fixture tree).  Errors:
    ``NoSuchTask``, ``AccessDenied``, ``ProcfsFormatError`` (malformed file).
    """

    def __init__(self, root: str = "/proc", *, clock_ticks: int | None = None,
                 boot_time_s: float | None = None,
                 clock_ns: Callable[[], int] | None = None) -> None:
        self.root = root.rstrip("/")
        self._hz = clock_ticks
        self._btime = boot_time_s
        self._clock = clock_ns or _boottime_ns

    @property
    def clock_ticks(self) -> int:
        """Clock ticks per second of stat's times (USER_HZ)."""
        if self._hz is None:
            self._hz = os.sysconf("SC_CLK_TCK")
        return self._hz

    @property
    def boot_time_s(self) -> float:
        """Boot time in seconds since the epoch (ROOT/stat ``btime``)."""
        if self._btime is None:
            path = f"{self.root}/stat"
            try:
                data = read_file(path)
            except OSError as err:
                raise Unsupported(f"{path}: {err.strerror}: is {self.root} a procfs?") from err
            found = keyed(data, (b"btime",), b" ")
            require(found, (b"btime",), data, path, b" ")
            try:
                self._btime = float(found[b"btime"])
            except ValueError as err:
                raise ProcfsFormatError(f"malformed btime ({err})", path=path) from err
        return self._btime

    def delayacct(self) -> bool:
        """Whether delay accounting is on (ROOT/sys/kernel/task_delayacct is 1)."""
        try:
            return read_file(f"{self.root}/{DELAYACCT_SYSCTL}").strip() == b"1"
        except OSError:
            return False

    def pid(self, tid: int) -> TaskStats:
        """The record of one task (thread) ``tid``, from ROOT/<tid>/task/<tid>/."""
        return self._pid_record(check_id(tid), self.delayacct())

    def pids(self, tids: Iterable[int]) -> dict[int, TaskStats]:
        """tid -> record for many tasks; tasks that vanished are left out (other errors,
        such as AccessDenied or ProcfsFormatError, are raised)."""
        delayacct = self.delayacct()
        out = {}
        for tid in tids:
            try:
                out[tid] = self._pid_record(check_id(tid), delayacct)
            except NoSuchTask:
                continue
        return out

    def all_tasks(self) -> list[tuple[int, int]]:
        """(tgid, tid) of every thread of every process, sorted."""
        return sorted(list_tasks(self.root))

    def tgid(self, tgid: int) -> TaskStats:
        """The thread group record of process ``tgid``: only fields the kernel's TGID
        record carries (see MAPPING), the others None."""
        base = f"{self.root}/{check_id(tgid)}/"
        try:
            proc = parse_stat(read_file(base + "stat"), base + "stat")
            tids = [int(t) for t in os.listdir(base + "task")]
        except OSError as err:
            raise os_error(err, err.filename or base, tgid, group=True) from err
        now, delayacct = self._clock(), self.delayacct()
        threads = [t for tid in tids if (t := self._thread(base, tid, now, delayacct))]
        if not threads:
            raise NoSuchTask(f"tgid {tgid}: no such task (its threads exited)", tgid=tgid)
        return self._tgid_record(proc, threads)

    def cgroup(self, path: str) -> CgroupStats:
        """Task state counts of a cgroup2 (or v1) directory; see STATES.

        nr_io_wait is always 0: procfs does not show in_iowait (docs/procfs.md).
        """
        return self.count_states(self._cgroup_tids(path))

    def count_states(self, tids: Iterable[int]) -> CgroupStats:
        """Task state counts of the threads ``tids`` (those gone are not counted)."""
        counts = [0, 0, 0, 0]
        for tid in tids:
            state = self._state(tid)
            if state is not None and (slot := _STATE_SLOT.get(state)) is not None:
                counts[slot] += 1
        sleeping, running, stopped, uninterruptible = counts
        return CgroupStats(sleeping, running, stopped, uninterruptible, nr_io_wait=0,
                           source=SOURCE)

    # -- one task

    def _pid_record(self, tid: int, delayacct: bool) -> TaskStats:
        base = f"{self.root}/{tid}/task/{tid}/"
        stat = parse_stat(self._read_stat(base + "stat", tid), base + "stat")
        values = self._stat_values(stat, self._clock(), delayacct)
        if (data := self._optional(base, "status", tid, stat.start)) is not None:
            values.update(_status_values(parse_status(data, base + "status")))
        if (data := self._optional(base, "io", tid, stat.start)) is not None:
            values.update(zip(IO_FIELDS, parse_io(data, base + "io"), strict=True))
        if (data := self._optional(base, "schedstat", tid, stat.start)) is not None:
            sched = parse_schedstat(data, base + "schedstat")
            values.update(zip(SCHED_FIELDS, sched, strict=True))
        return TaskStats(**values, scope="pid", source=SOURCE, payload_len=0)

    def _stat_values(self, stat: Stat, now_ns: int, delayacct: bool) -> dict[str, Any]:
        hz = self.clock_ticks
        btime = int(self.boot_time_s) + stat.start // hz
        return {
            "version": LATEST_VERSION, "ac_comm": stat.comm, "ac_ppid": stat.ppid,
            "ac_nice": stat.nice, "ac_sched": stat.policy, "ac_minflt": stat.minflt,
            "ac_majflt": stat.majflt, "ac_utime": stat.utime * 1_000_000 // hz,
            "ac_stime": stat.stime * 1_000_000 // hz,
            "cpu_run_real_total": (stat.utime + stat.stime) * 1_000_000_000 // hz,
            "ac_etime": self._etime(stat.start, now_ns),
            "ac_btime": min(max(btime, 0), U32_MAX), "ac_btime64": btime,
            "blkio_delay_total": self._blkio(stat, delayacct),
        }

    def _etime(self, start_ticks: int, now_ns: int) -> int:
        return max(0, now_ns - start_ticks * 1_000_000_000 // self.clock_ticks) // 1000

    def _blkio(self, stat: Stat, delayacct: bool) -> int | None:
        if not delayacct or stat.blkio_ticks is None:
            return None
        return stat.blkio_ticks * 1_000_000_000 // self.clock_ticks

    def _read_stat(self, path: str, tid: int) -> bytes:
        try:
            return read_file(path)
        except OSError as err:
            raise os_error(err, path, tid) from err

    def _optional(self, base: str, name: str, tid: int, start: int) -> bytes | None:
        """File ``name`` of a task directory; None when it is unreadable (EACCES: another
        user's task) or absent from this kernel; NoSuchTask when the task vanished."""
        try:
            return read_file(base + name)
        except OSError as err:
            if err.errno in _DENIED:
                return None
            if err.errno not in _VANISHED:
                raise os_error(err, base + name, tid) from err
        if self._same_task(base, start):
            return None
        raise NoSuchTask(f"task {tid} exited while {base}{name} was read", pid=tid)

    def _same_task(self, base: str, start: int) -> bool:
        """Whether ``base`` still holds the task that started at ``start`` (not a new
        task that reused the pid): tasks are identified by (pid, start time)."""
        try:
            return parse_stat(read_file(base + "stat"), base + "stat").start == start
        except OSError:
            return False

    # -- thread groups

    def _thread(self, group: str, tid: int, now_ns: int, delayacct: bool) -> _Thread | None:
        """A live thread's share of its group's record; None if it exited meanwhile."""
        base = f"{group}task/{tid}/"
        try:
            stat = parse_stat(self._read_stat(base + "stat", tid), base + "stat")
            status = self._optional(base, "status", tid, stat.start)
            sched = self._optional(base, "schedstat", tid, stat.start)
        except NoSuchTask:
            return None
        st = None if status is None else parse_status(status, base + "status")
        return _Thread(self._etime(stat.start, now_ns), self._blkio(stat, delayacct),
                       None if st is None else st.nvcsw, None if st is None else st.nivcsw,
                       None if sched is None else parse_schedstat(sched, base + "schedstat"))

    def _tgid_record(self, proc: Stat, threads: list[_Thread]) -> TaskStats:
        hz = self.clock_ticks
        scheds = [t.sched for t in threads]
        values: dict[str, Any] = {
            "version": LATEST_VERSION,
            "ac_utime": proc.utime * 1_000_000 // hz, "ac_stime": proc.stime * 1_000_000 // hz,
            "cpu_run_real_total": (proc.utime + proc.stime) * 1_000_000_000 // hz,
            "ac_etime": sum(t.etime for t in threads),
            "blkio_delay_total": _sum(t.blkio for t in threads),
            "nvcsw": _sum(t.nvcsw for t in threads), "nivcsw": _sum(t.nivcsw for t in threads),
        }
        for i, name in enumerate(SCHED_FIELDS):
            values[name] = _sum(None if s is None else s[i] for s in scheds)
        return TaskStats(**values, scope="tgid", source=SOURCE, payload_len=0)

    # -- cgroups

    def _cgroup_tids(self, path: str) -> list[int]:
        """Thread ids of a cgroup: cgroup.threads (v2), else tasks (v1)."""
        for name in ("cgroup.threads", "tasks"):
            try:
                return [int(t) for t in read_file(os.path.join(path, name)).split()]
            except FileNotFoundError:
                continue
            except OSError as err:
                raise Unsupported(f"cannot read {os.path.join(path, name)}: "
                                  f"{err.strerror}") from err
            except ValueError as err:
                raise ProcfsFormatError(f"not a list of thread ids ({err})",
                                        path=os.path.join(path, name)) from err
        raise Unsupported(f"{path}: not a cgroup directory (no cgroup.threads or tasks file)")

    def _state(self, tid: int) -> int | None:
        """The state letter (as a byte value) of task ``tid``; None if it vanished."""
        path = f"{self.root}/{tid}/task/{tid}/stat"
        try:
            data = read_file(path)
        except OSError as err:
            if err.errno in _VANISHED:
                return None
            raise os_error(err, path, tid) from err
        at = data.rfind(b")") + 2
        if at < 2 or at >= len(data):
            raise ProcfsFormatError(f"no state after the command name: {data[:200]!r}",
                                    path=path, pid=tid)
        return data[at]


def _status_values(st: Status) -> dict[str, Any]:
    return {"ac_pid": st.pid, "ac_tgid": st.tgid, "ac_uid": st.uid, "ac_gid": st.gid,
            "nvcsw": st.nvcsw, "nivcsw": st.nivcsw, "hiwater_vm": st.vm_peak,
            "hiwater_rss": st.vm_hwm}


# ---------------------------------------------------------------- docs/procfs.md

_INTRO = """\
# The procfs source

Generated from `MAPPING` and `STATES` in `src/pytaskstats/procfs.py` by
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
  computes `now - etime`; the two may differ by one second.
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
