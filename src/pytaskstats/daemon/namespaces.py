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
fork events while namespaced clients listen) and by scans every RESCAN_S.  Blind
spot: a task that exits and is reaped before either its fork event or its exit
record is handled (microseconds) cannot be placed, and is counted
(``unattributed``) instead of being shown.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from ..errors import NoSuchTask
from ..procfs import list_tasks
from ..records import ExitRecord, TaskStats

OVERFLOW_ID = 65534
RESCAN_S = 0.25  # at most one full /proc scan per this interval


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
        self.to_host: dict[int, int] = {}
        self.to_ns: dict[int, int] = {}
        self.unattributed = 0
        self._scanned = 0.0

    @classmethod
    def of(cls, peer_pid: int, proc: str = "/proc") -> NsView | None:
        """The view of a peer, None when it shares our PID and user namespaces."""
        try:
            if (ns_inode(peer_pid, "pid", proc) == ns_inode("self", "pid", proc)
                    and ns_inode(peer_pid, "user", proc) == ns_inode("self", "user", proc)):
                return None
            return cls(peer_pid, proc)
        except OSError:
            return None

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

    def _learn(self, path: str) -> int | None:
        try:
            if ns_inode(path, "pid", self.proc) != self.pidns:
                return None
            nspid = read_nspid(path, self.proc)
        except OSError:
            return None
        if len(nspid) <= self.level:
            return None
        host, inner = nspid[0], nspid[self.level]
        self.to_host[inner], self.to_ns[host] = host, inner
        return inner

    def host_pid(self, ns_pid: int) -> int:
        """The host pid of the client's ``ns_pid``; NoSuchTask if not in its namespace."""
        if ns_pid not in self.to_host:
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
        return ExitRecord(task=self.stats(record.task), group=group, pid=pid, tgid=tgid,
                          cpu=record.cpu, seq=record.seq)
