"""The public facade: ``Client`` answers queries and listens for exits.

Backends return the same record types: "kernel" (the TASKSTATS netlink family,
needs CAP_NET_ADMIN), "daemon" (taskstatsd over its Unix socket, for anyone) and
"procfs" (/proc: no delays but CPU wait, no exit records; see docs/procfs.md).
"auto" takes the kernel when this process may use it, else the daemon when it
answers, else /proc.  ``Client.backend`` says which, ``Client.backend_reason`` why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import cast

from .backends import Answers, ProcBackend
from .errors import NoSuchTask, TaskstatsError, Unsupported
from .extproto import GroupBy, HistoryQuery, Kind, Rows, Status
from .kernel import Connection
from .listener import DEFAULT_MAX_WAIT_S, Listener
from .processes import check_attrs, iter_processes, list_tgids
from .procfs import ProcSource
from .records import Bulk, CgroupStats, ProcessRecord, TaskStats, check_id
from .transport import DEFAULT_SOCKET

__all__ = ["Client", "choose_backend", "daemon_socket"]

BACKENDS = ("auto", "kernel", "daemon", "procfs")
CAP_NET_ADMIN = 12


def daemon_socket(path: str | None = None) -> str:
    """The daemon's socket: ``path``, else $TASKSTATS_SOCKET, else the default."""
    return path or os.environ.get("TASKSTATS_SOCKET") or DEFAULT_SOCKET


def in_initial_user_namespace() -> bool:
    """Whether this process's user namespace maps every id to itself (the initial one:
    only there does CAP_NET_ADMIN count for the kernel's taskstats)."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return True


def has_net_admin() -> bool:
    """Whether this process has CAP_NET_ADMIN in its effective set, in the initial
    user namespace."""
    if not in_initial_user_namespace():
        return False
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def choose_backend(backend: str, socket_path: str) -> tuple[str, str]:
    """Resolve "auto" to a backend; return (backend, reason)."""
    if backend == "kernel":
        return "kernel", "asked for the kernel backend"
    if backend == "daemon":
        return "daemon", "asked for the daemon backend"
    if backend == "procfs":
        return "procfs", "asked for the procfs backend"
    if has_net_admin():
        return "kernel", "this process has CAP_NET_ADMIN, so it asks the kernel directly"
    if os.path.exists(socket_path):
        return "daemon", (f"no CAP_NET_ADMIN: using taskstatsd at {socket_path}")
    return "procfs", (f"no CAP_NET_ADMIN and no taskstatsd at {socket_path}{_PROCFS_NOTE[:-1]}"
                      "; start taskstatsd for those)")


class Client:
    """Per-task and per-process statistics from the kernel's taskstats interface.

    Use as a context manager.  Every method raises a
    :class:`~pytaskstats.errors.TaskstatsError` subclass on failure:
    ``NoSuchTask``, ``AccessDenied`` (no CAP_NET_ADMIN), ``Unsupported``...
    """

    def __init__(self, backend: str = "auto", *, socket_path: str | None = None,
                 timeout: float = 5.0, source: Answers | None = None) -> None:
        """``source``: answer queries from this :class:`~pytaskstats.backends.Answers`
        (e.g. a Connection of your own, or a fake in tests) instead of choosing one;
        status and history then stay Unsupported (they need backend "daemon")."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        self.socket_path = daemon_socket(socket_path)
        self._proc = ProcSource()
        self._daemon: Connection | None = None  # the same socket, when it is taskstatsd's
        self._source: Answers
        if source is not None:
            self.backend, self.backend_reason = source.source, "given a source"
            self._source = source
            return
        self.backend, self.backend_reason = choose_backend(backend, self.socket_path)
        if self.backend == "procfs":
            self._source = ProcBackend(self._proc)
            return
        via = self.socket_path if self.backend == "daemon" else None
        try:
            conn = Connection(timeout=timeout, socket_path=via)
        except TaskstatsError as err:
            if backend != "auto":
                raise
            self.backend = "procfs"  # no taskstats family, or a stale daemon socket
            self.backend_reason = f"{err}{_PROCFS_NOTE}"
            self._source = ProcBackend(self._proc)
            return
        self._source = conn
        self._daemon = conn if self.backend == "daemon" else None

    def struct_version(self) -> int:
        """The struct taskstats version of this source's records, from a query of
        this process (a round trip to the kernel or taskstatsd)."""
        return self.pid(os.getpid()).version

    def pid(self, pid: int) -> TaskStats:
        """The record of one task (thread) ``pid``."""
        return self._source.query("pid", check_id(pid))

    def tgid(self, tgid: int) -> TaskStats:
        """The record of thread group (process) ``tgid``, summed over its threads.

        Only the fields the kernel aggregates are set; the others are None.
        """
        return self._source.query("tgid", check_id(tgid))

    def self(self) -> TaskStats:
        """The thread group record of the calling process, named: its ``ac_comm``,
        ids and start time from its main thread's record (as :meth:`process`)."""
        return self.process(os.getpid()).record

    def process(self, tgid: int) -> ProcessRecord:
        """Process ``tgid``: its thread group record (as :meth:`tgid`) with the name,
        ids and start time filled from its leader's record (the thread ``tgid``,
        asked just before the group's), and ``info`` holding every attr.
        NoSuchTask when it is gone."""
        for found in iter_processes(self._source, [check_id(tgid)], check_attrs(None)):
            return found
        self._source.query("tgid", tgid)  # raises: NoSuchTask, or the policy's refusal
        raise NoSuchTask(f"process {tgid} exited while it was asked", tgid=tgid)

    def process_iter(self, attrs: Iterable[str] | None = None) -> Iterator[ProcessRecord]:
        """Every process (thread group) this client may see, ascending by pid, as
        :class:`~pytaskstats.records.ProcessRecord` (``pid``, ``name``, ``record``,
        ``info``), like ``psutil.process_iter``.

        ``attrs``: the names ``info`` holds (kernel field names and ``pid``,
        ``name``, ``cpu_time``, ``start_time``; default all); an unknown one is a
        ValueError, raised here, naming the accepted ones.  Processes are listed
        from /proc (this pid namespace) and asked in pipelined batches: those that
        exit meanwhile, and with taskstatsd those its policy hides (other users'),
        are skipped.  ``record`` carries the name, ids and start time of the
        process's leader (its main thread's record, asked in the same batch).
        """
        chosen = check_attrs(attrs)
        return iter_processes(self._source, list_tgids(self._proc.root), chosen)

    def pids(self, pids: Iterable[int], *, skip_denied: bool = False) -> Bulk:
        """Bulk query: pid -> record for many tasks, pipelined.  Vanished tasks are
        left out (listed in the answer's ``vanished``), and with ``skip_denied`` also
        those the daemon's policy refuses (in its ``denied``)."""
        return self._source.query_many("pid", _checked(pids), skip_denied=skip_denied)

    def tgids(self, tgids: Iterable[int]) -> Bulk:
        """Bulk query by thread group, like :meth:`pids`."""
        return self._source.query_many("tgid", _checked(tgids))

    def cgroup(self, path_or_fd: str | os.PathLike[str] | int) -> CgroupStats:
        """Task state counts of a cgroup directory, by path or open fd.

        The kernel counts cgroup v1 directories; a cgroup2 directory (which its
        CGROUPSTATS refuses with EINVAL) is counted from /proc, here with the kernel
        and procfs backends, by taskstatsd's own CGROUP command with the daemon
        backend (``source`` says which).
        """
        if isinstance(path_or_fd, int):
            return self._cgroup_fd(path_or_fd)
        try:  # the same answer for a path that is no directory, whichever backend
            fd = os.open(path_or_fd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise Unsupported(f"cannot open cgroup directory {os.fspath(path_or_fd)!r}: "
                              f"{err.strerror}") from err
        if self.backend == "procfs" or (is_cgroup2(path_or_fd) and self._daemon is None):
            os.close(fd)
            return self._proc.cgroup(os.fspath(path_or_fd))
        try:
            return self._cgroup_fd(fd)
        finally:
            os.close(fd)

    def _cgroup_fd(self, fd: int) -> CgroupStats:
        link = f"/proc/self/fd/{fd}"
        if self._daemon is not None and is_cgroup2(link):
            return self._daemon.cgroup2(fd)
        if self.backend == "procfs":  # v1 or v2, by the path the fd is open at
            return self._proc.cgroup(os.readlink(link))
        return self._source.cgroup(fd)

    def listen(self, cpus: Iterable[int] | str | None = None, *, per_cpu: bool = False,
               groups: int = 1, max_wait: float = DEFAULT_MAX_WAIT_S) -> Listener:
        """Register exit listeners; iterate the result for ExitRecord and Lost events.

        ``cpus``: a cpulist ("0-3,5") or CPU numbers, default all possible CPUs;
        ``per_cpu``: one socket per CPU (each record then knows its CPU);
        ``groups``: otherwise, how many sockets to split the CPUs over;
        ``max_wait``: seconds an exit may be held back to batch it with others
        when exits come fast (0: never; see :func:`.listener.coalesce_wait`).
        """
        if self.backend == "procfs":
            why = self.backend_reason.split(": reading /proc", 1)[0]  # not a fallback here
            raise Unsupported(f"exit records need the kernel or taskstatsd: {why}; run as "
                              "root or start taskstatsd")
        via = self.socket_path if self.backend == "daemon" else None
        return Listener(cpus, per_cpu=per_cpu, groups=groups, socket_path=via,
                        max_wait=max_wait)

    def status(self, *, flush: bool = False) -> Status:
        """taskstatsd's health document (daemon backend only); with ``flush``, after
        its journal committed every exit it received before."""
        return self._taskstatsd().status(flush=flush)

    def history(self, *, since_ns: int | None = None, until_ns: int | None = None,
                comm: str | None = None, uid: int | None = None, pid: int | None = None,
                tgid: int | None = None, cgroup: str | None = None,
                group_by: GroupBy | None = None, sort: str | None = None,
                limit: int | None = None, totals: bool | None = None,
                bucket_s: int | None = None, fields: list[str] | None = None,
                plausible: bool | None = None, kind: Kind | None = None,
                at_ns: int | None = None) -> Rows:
        """Exit and sample rows from taskstatsd's journal (daemon backend only),
        filtered, grouped or summed as :class:`~pytaskstats.extproto.HistoryQuery`
        says (times in CLOCK_REALTIME ns); ``kind`` "exit" or "sample" only (None:
        both; sums then count every task once); ``at_ns``: the sample interval holding
        that time.  ``note`` on the answer carries the daemon's warning."""
        given = {"since_ns": since_ns, "until_ns": until_ns, "comm": comm, "uid": uid,
                 "pid": pid, "tgid": tgid, "cgroup": cgroup, "group_by": group_by,
                 "sort": sort, "limit": limit, "totals": totals, "bucket_s": bucket_s,
                 "fields": fields, "plausible": plausible, "kind": kind, "at_ns": at_ns}
        query = cast(HistoryQuery, {k: v for k, v in given.items() if v is not None})
        return self._taskstatsd().history(query)

    def _taskstatsd(self) -> Connection:
        if self._daemon is None:
            raise Unsupported("status and history come from taskstatsd: start it, or use "
                              "--socket / TASKSTATS_SOCKET to point at it")
        return self._daemon

    def close(self) -> None:
        """Release the socket."""
        self._source.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def is_cgroup2(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a cgroup2 directory (it has cgroup.threads; v1 has tasks)."""
    return os.path.exists(os.path.join(os.fspath(path), "cgroup.threads"))


_PROCFS_NOTE = ": reading /proc (no delays but CPU wait, no exits)"


def _checked(ids: Iterable[int]) -> list[int]:
    """``ids`` as a list, each a pid/tgid (:func:`~.records.check_id`), checked in
    bulk: the list's types, minimum and maximum; one by one only to name a bad one."""
    out = list(ids)
    if out and not (set(map(type, out)) == {int} and min(out) > 0 and max(out) < 2**32):
        return [check_id(i) for i in out]
    return out
