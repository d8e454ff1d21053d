"""Reading and parsing the files of /proc/PID/task/TID: bytes in, typed values out.

Files are read with one ``os.read`` into bytes and parsed as bytes; a file whose
content does not parse raises :class:`ProcfsFormatError` naming it (for key:value
files, listing the keys it has).
"""

from __future__ import annotations

import errno
import os
from functools import cache
from typing import NamedTuple

from .errors import RemoteProtocolError, TaskstatsError, from_errno

__all__ = [
    "IO_FIELDS",
    "IO_KEYS",
    "SCHED_FIELDS",
    "ProcfsFormatError",
    "Stat",
    "Status",
    "kernel_comm",
    "keyed",
    "os_error",
    "parse_io",
    "parse_schedstat",
    "parse_stat",
    "parse_status",
    "read_file",
    "require",
]

COMM_LEN = 15  # TASK_COMM_LEN - 1: the kernel's ac_comm holds at most 15 bytes
PF_WQ_WORKER = 0x20  # task flag (stat field 9): /proc appends "-desc"/"+desc" to the comm
KB_MASK = ~1023  # the kernel rounds its I/O counters down to a multiple of 1024
_O_READ = os.O_RDONLY | os.O_CLOEXEC
_CHUNK = 8192  # a procfs seq_file hands over its whole text in one read of this size


class ProcfsFormatError(RemoteProtocolError):
    """A procfs file whose content does not parse; ``path`` names the file."""

    def __init__(self, message: str, *, path: str, pid: int | None = None) -> None:
        super().__init__(f"{path}: {message}", pid=pid)
        self.path = path



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
