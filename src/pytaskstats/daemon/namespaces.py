"""How a client in another PID or user namespace sees tasks.

The kernel answers queries with pids of the requester's PID namespace and uids of
its user namespace, and refuses exit listeners outside the initial namespaces.
taskstatsd, in the initial namespaces, does the translation for its clients:
pids via ``NSpid`` in /proc/PID/status (host pid first, the task's own
namespace's last), uids and gids via the client's uid_map/gid_map (unmapped ->
the overflow id 65534, as the kernel).  A client sees only tasks whose own PID
namespace is its namespace.

An exit is attributed to a namespace by reading /proc when the record arrives, or
from a cache filled at each task's fork (taskstatsd reads the proc connector's
fork events) and by scans every RESCAN_S.  Blind
spot: a task that exits and is reaped before either its fork event or its exit
record is handled (microseconds) cannot be placed, and is counted
(``unattributed``) instead of being shown.

The journal knows each exit's namespaces too (:class:`NsTracker`, fed by the same
fork events and asked at ingest): the chain of PID namespaces from level 1 down to
the task's (:func:`ns_chain`; "" for the initial namespace), each named uniquely
(:func:`ns_identity`: an inode alone is handed out again once its namespace is
gone, and a new namespace would read a dead one's history), and the task's,
its process's and its parent's pid at each of those levels, so that history is
filtered and translated for a namespaced client like its GET and listen.  The
tracker starts from a /proc scan; a child of a task of the initial namespace is
taken to be there too until it forks (a read per fork would cost every fork), so
the first task of a new namespace that exits without forking is journaled as of the
initial namespace: shown to no namespaced client (fail closed), like rows whose
namespace or pids are unknown (counted as ``namespace_unknown``).
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import struct
import time
from collections.abc import Iterator
from functools import cache
from typing import Any, NamedTuple

from .. import connector
from ..errors import NoSuchTask
from ..procfs import list_tasks
from ..records import ExitRecord, TaskStats

OVERFLOW_ID = 65534
RESCAN_S = 0.25  # at most one full /proc scan per this interval
NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2), linux/nsfs.h
NS_GET_PID_FROM_PIDNS = 0x8004B706  # _IOR(0xb7, 0x6, int), Linux 6.11+
NS_GET_ID = 0x8008B70D  # _IOR(0xb7, 0xd, __u64), Linux 6.18+
MAX_LEVELS = 32  # the kernel's limit on PID namespace nesting
MAX_CHAINS = 4096  # cached namespace chains
MAX_TRACKED = 1 << 20  # cached per-task namespace facts
_CHAINS: dict[str, str] = {}  # a namespace's ns_identity -> its ns_chain
_INITS: dict[int, int] = {}  # a namespace's inode -> its init's host pid (found in /proc)
_MISSING: set[str] = set()  # the nsfs ioctls this kernel lacks ("ns_id", "pid_from_pidns")
_U64 = struct.Struct("=Q")


@cache
def host_pidns() -> int:
    """Inode of taskstatsd's own (the initial) PID namespace."""
    return os.stat("/proc/self/ns/pid").st_ino


def ns_inode(pid: int | str, kind: str, proc: str = "/proc") -> int:
    """Inode of a process's namespace of ``kind`` ("pid", "user")."""
    return os.stat(f"{proc}/{pid}/ns/{kind}").st_ino


def read_nspid(pid: int | str, proc: str = "/proc") -> list[int]:
    """The NSpid line of a task: its pid in each namespace, outermost first."""
    with open(f"{proc}/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"NSpid:"):
                return [int(x) for x in line.split()[1:]]
    return []


def ns_chain(path: str) -> str:
    """The PID namespace at ``path`` (an ns/pid or ns/pid_for_children file) as the
    journal names it: "" for the initial namespace, else this boot's id then the
    :func:`ns_identity` of each namespace from level 1 down to it, "/"-joined.  Unique
    across reuse of inode numbers and reboots, the same for the life of the namespace
    (so across taskstatsd restarts).  Raises OSError when the file is gone or the
    namespace cannot be named (its init is gone: nothing more can run there)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_ino == host_pidns():
            return ""
        own = ns_identity(fd)
        if own not in _CHAINS:
            if len(_CHAINS) >= MAX_CHAINS:
                _CHAINS.clear()
            _CHAINS[own] = "/".join([boot_id(), *reversed(_parents(fd)), own])
        return _CHAINS[own]
    finally:
        os.close(fd)


@cache
def boot_id() -> str:
    """This boot's random id (32 hex digits): no namespace of another boot matches."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip().replace("-", "")


def ns_identity(fd: int) -> str:
    """The name of the PID namespace open as ``fd``, unique within this boot and the
    same for its life: "n" and the kernel's namespace id (NS_GET_ID, a u64 never
    reused; Linux 6.18+), else "inode.pid.ticks": its inode (reused once it is gone)
    and its init's host pid and start time (clock ticks since boot), a process that
    lived only in this namespace.  Raises OSError when its init is gone."""
    if "ns_id" not in _MISSING:
        try:
            return f"n{_U64.unpack(fcntl.ioctl(fd, NS_GET_ID, bytes(8)))[0]}"
        except OSError as err:
            if err.errno not in (errno.ENOTTY, errno.EINVAL):
                raise
            _MISSING.add("ns_id")  # before Linux 6.18
    ino = os.fstat(fd).st_ino
    init = _init_pid(fd, ino)
    return f"{ino}.{init}.{start_ticks(init)}"


def start_ticks(pid: int | str, proc: str = "/proc") -> int:
    """When a process started: clock ticks since boot (/proc/PID/stat field 22)."""
    with open(f"{proc}/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[19])  # fields from 3 on


def _init_pid(fd: int, ino: int) -> int:
    """The host pid of the init (pid 1) of the PID namespace ``ino`` open as ``fd``:
    NS_GET_PID_FROM_PIDNS (Linux 6.11+), else the one found in /proc (remembered
    while it is still pid 1 of namespace ``ino``).  OSError when it is gone."""
    if "pid_from_pidns" not in _MISSING:
        try:
            return int(fcntl.ioctl(fd, NS_GET_PID_FROM_PIDNS, 1))
        except OSError as err:
            if err.errno not in (errno.ENOTTY, errno.EINVAL):
                raise
            _MISSING.add("pid_from_pidns")
    known = _INITS.get(ino)
    for name in itertools.chain([] if known is None else [str(known)], _listdir("/proc")):
        try:
            if name.isdigit() and read_nspid(name)[-1:] == [1] and ns_inode(name, "pid") == ino:
                if len(_INITS) >= MAX_CHAINS:
                    _INITS.clear()
                _INITS[ino] = int(name)
                return int(name)
        except OSError:
            continue
    raise OSError(errno.ESRCH, f"the init of PID namespace {ino} is gone")


def _listdir(path: str) -> Iterator[str]:
    """The names in ``path``, listed only once asked for the first."""
    yield from os.listdir(path)


def _parents(fd: int) -> list[str]:
    """The :func:`ns_identity` of the parents of the namespace open as ``fd``, below
    the initial one, innermost first."""
    names: list[str] = []
    current = fd
    try:
        for _ in range(MAX_LEVELS):
            try:
                parent = fcntl.ioctl(current, NS_GET_PARENT)
            except OSError:  # EPERM: at the top of what we may see
                break
            if current != fd:
                os.close(current)
            current = parent
            if os.fstat(current).st_ino == host_pidns():
                break
            names.append(ns_identity(current))
    finally:
        if current != fd:
            os.close(current)
    return names


def read_idmap(path: str) -> list[tuple[int, int, int]]:
    """(inside, outside, count) ranges of a uid_map/gid_map file."""
    with open(path) as f:
        return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in f)]


def map_id(ranges: list[tuple[int, int, int]], host_id: int | None) -> int | None:
    """``host_id`` as seen inside the namespace (OVERFLOW_ID when unmapped)."""
    if host_id is None:
        return None
    for inside, outside, count in ranges:
        if outside <= host_id < outside + count:
            return inside + host_id - outside
    return OVERFLOW_ID


class NsView:
    """The namespaces of one client, and the translation into them."""

    def __init__(self, peer_pid: int, proc: str = "/proc") -> None:
        self.proc = proc
        self.pidns = ns_inode(peer_pid, "pid", proc)
        self.userns = ns_inode(peer_pid, "user", proc)
        self.uid_map = read_idmap(f"{proc}/{peer_pid}/uid_map")
        self.gid_map = read_idmap(f"{proc}/{peer_pid}/gid_map")
        self.level = max(len(read_nspid(peer_pid, proc)) - 1, 0)
        self.chain = ns_chain(f"{proc}/{peer_pid}/ns/pid")
        self.to_host: dict[int, int] = {}
        self.to_ns: dict[int, int] = {}
        self.unattributed = 0
        self._scanned = 0.0

    @classmethod
    def of(cls, peer_pid: int, proc: str = "/proc") -> NsView | None:
        """The view of a peer, None when it shares our PID and user namespaces.
        Raises OSError when /proc cannot tell (the caller refuses the client)."""
        if (ns_inode(peer_pid, "pid", proc) == ns_inode("self", "pid", proc)
                and ns_inode(peer_pid, "user", proc) == ns_inode("self", "user", proc)):
            return None
        return cls(peer_pid, proc)

    def _tasks(self) -> Iterator[str]:
        for tgid, tid in list_tasks(self.proc):
            yield f"{tgid}/task/{tid}"

    def rescan(self, force: bool = False) -> None:
        """Refresh the pid maps from /proc (rate-limited unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._scanned < RESCAN_S:
            return
        self._scanned = now
        for path in self._tasks():
            self._learn(path)

    def _forget(self, ns_pid: int | None, host: int | None) -> None:
        """Drop the mapping of ``ns_pid`` to ``host``, if it is one (None: none)."""
        if ns_pid is not None and host is not None and self.to_host.get(ns_pid) == host:
            del self.to_host[ns_pid]
        if host is not None and ns_pid is not None and self.to_ns.get(host) == ns_pid:
            del self.to_ns[host]

    def _learn(self, path: str) -> int | None:
        """The client's pid of the task at ``path`` (``PID`` or ``TGID/task/TID``
        under /proc), learned; None when it is gone or not the client's to see.  A
        task seen outside the client's namespaces makes its host pid forgotten: the
        kernel handed it out again."""
        host = int(path.rpartition("/")[2])
        try:
            ino = ns_inode(path, "pid", self.proc)
            if ino != self.pidns and not self._below(path, ino):
                self._forget(self.to_ns.get(host), host)
                return None
            nspid = read_nspid(path, self.proc)
        except OSError:
            return None
        if len(nspid) <= self.level:
            self._forget(self.to_ns.get(host), host)
            return None
        host, inner = nspid[0], nspid[self.level]
        self.to_host[inner], self.to_ns[host] = host, inner
        return inner

    def _below(self, path: str, ino: int) -> bool:
        """Whether the PID namespace ``ino`` of task ``path`` lies below the client's."""
        if ino == host_pidns():
            return False
        return f"{ns_chain(f'{self.proc}/{path}/ns/pid')}/".startswith(f"{self.chain}/")

    def sees_chain(self, chain: str | None) -> bool:
        """Whether a task of the namespace ``chain`` (see :func:`ns_chain`) is the
        client's to see."""
        return chain is not None and f"{chain}/".startswith(f"{self.chain}/")

    def pid_in(self, chain_pids: str) -> int | None:
        """The client's pid from a task's pids at levels 1..K ("" when unknown)."""
        pids = chain_pids.split()
        return int(pids[self.level - 1]) if 0 < self.level <= len(pids) else None

    def host_pid(self, ns_pid: int) -> int:
        """The host pid of the client's ``ns_pid``, checked in /proc now (a mapping
        learned before names a task that may have exited, its host pid handed out
        again outside the namespace); NoSuchTask if not in its namespace."""
        host = self.to_host.get(ns_pid)
        if host is None or self._learn(str(host)) != ns_pid:
            self._forget(ns_pid, host)
            self.rescan(force=True)
        if ns_pid not in self.to_host:
            raise NoSuchTask(f"no task {ns_pid} in the client's PID namespace", pid=ns_pid)
        return self.to_host[ns_pid]

    def ns_pid(self, host_pid: int | None) -> int | None:
        """The client's pid for ``host_pid``; None when not in its namespace (or gone
        before it could be placed)."""
        if host_pid is None or host_pid == 0:
            return None
        found = self._learn(str(host_pid))
        return found if found is not None else self.to_ns.get(host_pid)

    def stats(self, stats: TaskStats) -> TaskStats:
        """A record as the client's namespaces see it (invisible pids -> 0, like the
        kernel; unmapped ids -> 65534)."""
        def pid(value: int | None) -> int | None:
            return None if value is None else self.ns_pid(value) or 0

        return stats._replace(ac_pid=pid(stats.ac_pid), ac_tgid=pid(stats.ac_tgid),
                              ac_ppid=pid(stats.ac_ppid),
                              ac_uid=map_id(self.uid_map, stats.ac_uid),
                              ac_gid=map_id(self.gid_map, stats.ac_gid))

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A history row (or group) with its uid and gid as the client sees them."""
        for key, ranges in (("ac_uid", self.uid_map), ("ac_gid", self.gid_map)):
            if key in row:
                row[key] = map_id(ranges, row[key])
        return row

    def exit(self, record: ExitRecord) -> ExitRecord | None:
        """An exit record translated for the client, None if not of its namespace."""
        pid = self.ns_pid(record.pid)
        if pid is None:
            self.rescan()
            pid = self.to_ns.get(record.pid)
        if pid is None:
            parent = self.ns_pid(record.task.ac_ppid)
            self.unattributed += parent is not None  # ours, but gone before placed
            return None
        tgid = self.ns_pid(record.tgid) if record.tgid is not None else None
        group = None if record.group is None else self.stats(record.group)
        # the exited thread's host pid may be handed out again, outside the namespace:
        # forget it (a group leader that exits first stays a zombie, still named)
        if record.pid != record.tgid or record.ended_process:
            self._forget(pid, record.pid)
        if record.ended_process and record.tgid is not None:
            self._forget(tgid, record.tgid)
        return ExitRecord(task=self.stats(record.task), group=group, pid=pid, tgid=tgid,
                          cpu=record.cpu, seq=record.seq)


class NsInfo(NamedTuple):
    """A task's PID namespace chain ("" for the initial namespace) and its pids at
    levels 1..K ("" when unknown); ``verified`` when read from the task itself
    rather than taken from its parent at fork."""

    chain: str
    nspid: str
    verified: bool


_HOST = NsInfo("", "", True)


class NsTracker:
    """The namespaces of tasks, for the journal: learned at fork (from the proc
    connector) and, failing that, read from /proc at exit.  Costs: a dict lookup and
    insert per fork, a stat per process that forks (once), and for tasks in other
    namespaces a read of /proc/PID/status at fork."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.tasks: dict[int, NsInfo] = {}

    def _read(self, pid: int) -> NsInfo | None:
        try:
            chain = ns_chain(f"{self.proc}/{pid}/ns/pid")
            if not chain:
                return _HOST
            nspid = read_nspid(pid, self.proc)[1:]
        except OSError:
            return None
        return NsInfo(chain, " ".join(map(str, nspid)), True)

    def _verified(self, pid: int) -> NsInfo | None:
        info = self.tasks.get(pid)
        if info is None or not info.verified:
            info = self._read(pid) or info
            if info is not None:
                self._put(pid, info)
        return info

    def _put(self, pid: int, info: NsInfo) -> None:
        if len(self.tasks) >= MAX_TRACKED:
            self.tasks.clear()
        self.tasks[pid] = info

    def fork(self, ev: connector.Fork) -> None:
        """A task was born: place it (its own namespace may be a new one only when its
        parent is not in the initial namespace or it forks itself: read then)."""
        parent = self._verified(ev.ppid)
        if parent is None:
            return
        if parent.chain:
            child = self._read(ev.pid) or NsInfo(parent.chain, "", False)
        else:
            child = NsInfo("", "", False)  # verified when it forks
        self._put(ev.pid, child)

    def scan(self) -> None:
        """Place every task alive now (at start): a stat per task, and a read of
        /proc/PID/status for tasks outside the initial namespace."""
        for _, tid in list_tasks(self.proc):
            info = self._read(tid)
            if info is not None:
                self._put(tid, info)

    def process_columns(self, tgid: int) -> tuple[str | None, str | None]:
        """``pidns`` and ``ns_ids`` (as :meth:`columns`, pid and tgid both the tgid,
        ppid unknown) of live process ``tgid``, for its sample rows; forgets nothing."""
        info = self._verified(tgid)
        if info is None:
            return None, None
        if not info.chain:
            return "", None
        return info.chain, f"{info.nspid}/{info.nspid}/"

    def columns(self, pid: int, tgid: int | None, ppid: int | None,
                ended_process: bool | None) -> tuple[str | None, str | None]:
        """The journal's ``pidns`` ("" for the initial namespace) and ``ns_ids``
        ("pids/tgids/ppids" at levels 1..K, "" where unknown; None in the initial
        namespace) of an exit; (None, None) when its namespace is unknown."""
        tgid = tgid or pid
        info = self.tasks.get(pid) or self._read(pid)
        if info is None:  # reaped unseen: its process's or parent's namespace, pids unknown
            near = self.tasks.get(tgid) or (self.tasks.get(ppid) if ppid else None)
            info = None if near is None else NsInfo(near.chain, "", False)
        group = info if tgid == pid else self.tasks.get(tgid)
        parent = self.tasks.get(ppid) if ppid else None
        if not (pid == tgid and ended_process is False):  # a leader's threads live on
            self.tasks.pop(pid, None)
        if ended_process:
            self.tasks.pop(tgid, None)
        if info is None:
            return None, None
        if not info.chain:
            return "", None
        ids = (info.nspid,
               group.nspid if group is not None and group.chain == info.chain else "",
               parent.nspid if parent is not None and parent.chain
               and f"{info.chain}/".startswith(f"{parent.chain}/") else "")
        return info.chain, "/".join(ids)
