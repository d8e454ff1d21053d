"""The public facade: ``Client`` answers queries and listens for exits.

Backends return the same record types; ``Client.backend`` says which one is in
use and ``Client.backend_reason`` why.  This version has the kernel backend; the
daemon (taskstatsd) and procfs backends plug in behind the same methods.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from types import TracebackType

from .errors import Unsupported
from .kernel import Connection, Listener
from .records import CgroupStats, TaskStats

__all__ = ["Client"]

BACKENDS = ("auto", "kernel")


class Client:
    """Per-task and per-process statistics from the kernel's taskstats interface.

    Use as a context manager.  Every method raises a
    :class:`~pytaskstats.errors.TaskstatsError` subclass on failure:
    ``NoSuchTask``, ``AccessDenied`` (no CAP_NET_ADMIN), ``Unsupported``...
    """

    def __init__(self, backend: str = "auto", *, timeout: float = 5.0) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        self._conn = Connection(timeout=timeout)
        self.backend = "kernel"
        self.backend_reason = "the kernel's TASKSTATS family answered"

    @property
    def struct_version(self) -> int:
        """The kernel's struct taskstats version (from a query of this process)."""
        return self.pid(os.getpid()).version

    def pid(self, pid: int) -> TaskStats:
        """The record of one task (thread) ``pid``."""
        return self._conn.query("pid", _check_id(pid))

    def tgid(self, tgid: int) -> TaskStats:
        """The record of thread group (process) ``tgid``, summed over its threads.

        Only the fields the kernel aggregates are set; the others are None.
        """
        return self._conn.query("tgid", _check_id(tgid))

    def self(self) -> TaskStats:
        """The thread group record of the calling process."""
        return self.tgid(os.getpid())

    def pids(self, pids: Iterable[int]) -> Mapping[int, TaskStats]:
        """Bulk query: pid -> record for many tasks, pipelined; vanished tasks left out."""
        return self._conn.query_many("pid", [_check_id(p) for p in pids])

    def tgids(self, tgids: Iterable[int]) -> Mapping[int, TaskStats]:
        """Bulk query by thread group, like :meth:`pids`."""
        return self._conn.query_many("tgid", [_check_id(t) for t in tgids])

    def cgroup(self, path_or_fd: str | os.PathLike[str] | int) -> CgroupStats:
        """Task state counts of a cgroup v1 directory, by path or open fd."""
        if isinstance(path_or_fd, int):
            return self._conn.cgroup(path_or_fd)
        try:
            fd = os.open(path_or_fd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise Unsupported(f"cannot open cgroup directory {os.fspath(path_or_fd)!r}: "
                              f"{err.strerror}") from err
        try:
            return self._conn.cgroup(fd)
        finally:
            os.close(fd)

    def listen(self, cpus: Iterable[int] | str | None = None, *, per_cpu: bool = False,
               groups: int = 1) -> Listener:
        """Register exit listeners; iterate the result for ExitRecord and Lost events.

        ``cpus``: a cpulist ("0-3,5") or CPU numbers, default all possible CPUs;
        ``per_cpu``: one socket per CPU (each record then knows its CPU);
        ``groups``: otherwise, how many sockets to split the CPUs over.
        """
        return Listener(cpus, per_cpu=per_cpu, groups=groups)

    def close(self) -> None:
        """Release the socket."""
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _check_id(ident: int) -> int:
    if not isinstance(ident, int) or isinstance(ident, bool) or not 0 < ident < 2**32:
        raise ValueError(f"a pid/tgid is a positive 32-bit integer, not {ident!r}")
    return ident
