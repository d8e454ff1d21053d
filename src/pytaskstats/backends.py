"""The contracts of the sources: what answers queries, what yields exits.

:class:`Answers` is implemented by :class:`~pytaskstats.kernel.Connection` (to the
kernel's netlink family, or to taskstatsd's Unix socket) and by :class:`ProcBackend`
(the procfs source); :class:`YieldsExits` by :class:`~pytaskstats.listener.Listener`
and taskstatsd's procfs mode (:class:`~pytaskstats.daemon.procmode.ProcfsExits`).
``Client`` and taskstatsd hold one of each and never ask which it is.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterable
from typing import Protocol

from . import cgroupfd
from . import genetlink as genl
from . import taskstats as ts
from .errors import NetlinkError, NoSuchTask
from .fields import Scope
from .procfs import ProcSource
from .records import Bulk, CgroupStats, ExitRecord, Lost, TaskStats

__all__ = ["PROCFS_FAMILY", "Answers", "ProcBackend", "YieldsExits"]

# the TASKSTATS family as a procfs source presents it (taskstatsd's procfs mode
# answers under this id; no kernel family is there to ask)
PROCFS_FAMILY = genl.FamilyInfo(0x7F01, ts.FAMILY_NAME, ts.GENL_VERSION, 0, 0,
                                ((1, 0), (4, 0)))


class Answers(Protocol):
    """Answers queries: records of tasks and thread groups, cgroup counts.

    Errors are :class:`~pytaskstats.errors.TaskstatsError` subclasses (NoSuchTask,
    AccessDenied, ...).
    """

    @property
    def source(self) -> str:
        """Where answers come from: "kernel", "daemon" or "procfs"."""

    @property
    def family(self) -> genl.FamilyInfo:
        """The TASKSTATS family as this source presents it (its id, in the messages
        taskstatsd builds from records)."""

    def query(self, scope: Scope, ident: int) -> TaskStats:
        """The record of task ``ident`` (scope "pid") or thread group ("tgid")."""

    def query_many(self, scope: Scope, ids: Iterable[int], *,
                   skip_denied: bool = False) -> Bulk:
        """Records of many ids; those that vanished (and with ``skip_denied``, those
        refused) are left out and listed in the answer."""

    def query_reply(self, scope: Scope, ident: int) -> bytes | TaskStats:
        """What taskstatsd forwards for one GET: the reply datagram as the kernel sent
        it (bytes of the usual one-message shape, to be sent on with its seq and port
        id patched), or the record to encode; errors as :meth:`query`."""

    def query_replies(self, scope: Scope, ids: Iterable[int]) -> dict[int, bytes | TaskStats]:
        """:meth:`query_reply` of many ids at once; an id answered with any error is
        left out (asked alone, it gives its error)."""

    def cgroup(self, fd: int) -> CgroupStats:
        """Task state counts of the cgroup v1 directory open as ``fd`` (anything
        else: NetlinkError EINVAL, as the kernel answers)."""

    def close(self) -> None:
        """Release what the source holds."""


Event = tuple[ExitRecord | Lost, bytes | None]


class YieldsExits(Protocol):
    """Yields exit records (and counted losses) from one or more file descriptors."""

    @property
    def source(self) -> str:
        """Where records come from: "kernel", "daemon" or "procfs"."""

    @property
    def fds(self) -> list[int]:
        """The descriptors to wait on (readable: call :meth:`drain_raw`)."""

    def masks(self) -> list[str]:
        """The cpulist each descriptor listens to, in descriptor order."""

    def drops(self) -> list[int]:
        """Drop counters per descriptor, as last accounted."""

    def fill(self, index: int) -> float:
        """How full descriptor ``index``'s receive buffer is (0 to ~1)."""

    def blind_spot(self) -> str | None:
        """What this source cannot see (for status and docs); None: nothing."""

    def poll_every(self) -> float | None:
        """Seconds between drains of descriptor 0 that are due whether or not a
        descriptor is readable (a /proc scan); None: only readiness matters."""

    def drain_raw(self, index: int, limit: int | None = None) -> list[Event]:
        """What is queued on descriptor ``index`` (at most ``limit`` datagrams):
        records with their message bytes (None when there are none), losses with None."""

    def account_drops(self, since: list[int]) -> list[Lost]:
        """Losses since the counters ``since``."""

    def close(self, *, deregister: bool = True) -> None:
        """Stop listening."""


class ProcBackend:
    """The procfs source as an :class:`Answers`: what ``Client("procfs")`` and
    taskstatsd's procfs mode query."""

    source = "procfs"
    family = PROCFS_FAMILY

    def __init__(self, proc: ProcSource | None = None) -> None:
        self.proc = proc or ProcSource()

    def query(self, scope: Scope, ident: int) -> TaskStats:
        """The record of a task (scope "pid") or thread group ("tgid")."""
        return self.proc.pid(ident) if scope == "pid" else self.proc.tgid(ident)

    def query_many(self, scope: Scope, ids: Iterable[int], *,
                   skip_denied: bool = False) -> Bulk:
        """Records of many tasks or thread groups; those that vanished are left out
        (nothing is refused here: unreadable fields are None)."""
        wanted = list(ids)
        if scope == "pid":
            out = self.proc.pids(wanted)
        else:
            out = {}
            for ident in wanted:
                with contextlib.suppress(NoSuchTask):
                    out[ident] = self.proc.tgid(ident)
        return Bulk(out, vanished=tuple(i for i in wanted if i not in out))

    def query_reply(self, scope: Scope, ident: int) -> bytes | TaskStats:
        """The record (:meth:`query`): /proc has no reply bytes to forward."""
        return self.query(scope, ident)

    def query_replies(self, scope: Scope, ids: Iterable[int]) -> dict[int, bytes | TaskStats]:
        """Nothing: /proc is read one task at a time anyway (see :meth:`query_reply`)."""
        return {}

    def cgroup(self, fd: int) -> CgroupStats:
        """Task state counts of the cgroup v1 directory open as ``fd`` (EINVAL for
        anything else, as from the kernel), read as :mod:`.cgroupfd` says: the fd
        may come from an untrusted client of taskstatsd."""
        if cgroupfd.kind(fd) != "cgroup":
            raise NetlinkError("not a cgroup v1 directory", errno=errno.EINVAL)
        return self.proc.count_states(cgroupfd.thread_ids(fd, "tasks"))

    def close(self) -> None:
        """Nothing to release."""
