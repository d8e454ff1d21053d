"""The exception hierarchy, and the one place where errnos become exceptions.

Every error the library raises derives from :class:`TaskstatsError`.  Kernel (and
daemon) errors arrive as negative errnos in NLMSG_ERROR replies or as ``OSError``
from a socket or a /proc file; :func:`from_errno` turns them all into the right
class with a message that says what happened and what to do.  :func:`errno_of` is
its inverse, for taskstatsd's answers.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "AccessDenied",
    "LocalProtocolError",
    "NetlinkError",
    "NoSuchTask",
    "ProtocolError",
    "RemoteProtocolError",
    "TaskstatsError",
    "Unsupported",
    "errno_of",
    "from_errno",
]

BUG_HINT = "this is a bug in pytaskstats: please file it with the command you ran"


class TaskstatsError(Exception):
    """Base class: every error raised by pytaskstats derives from it.

    ``pid``/``tgid`` name the task concerned when there is one.
    """

    __module__ = "pytaskstats"

    def __init__(self, message: str, *, pid: int | None = None, tgid: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pid = pid
        self.tgid = tgid

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k in ("pid", "tgid") if (v := getattr(self, k)))
        return f"{type(self).__name__}({self.message!r}{extra})"


def _rebuild(cls: type[TaskstatsError], message: str, state: dict[str, object]) -> TaskstatsError:
    obj = cls.__new__(cls)
    Exception.__init__(obj, message)
    obj.__dict__.update(state)
    return obj


class ProtocolError(TaskstatsError):
    """Bytes that do not follow the protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the protocol cannot carry (a caller bug)."""


class RemoteProtocolError(ProtocolError):
    """The peer (kernel or daemon) sent malformed or unexpected bytes."""


class NoSuchTask(TaskstatsError):
    """ESRCH: no task with that pid/tgid (it may have exited mid-query)."""


class AccessDenied(TaskstatsError):
    """EPERM/EACCES, or a listener refused outside the initial namespaces."""


class Unsupported(TaskstatsError):
    """The interface is not there: no TASKSTATS family, or a feature the kernel lacks."""


class NetlinkError(TaskstatsError):
    """Any other errno from the kernel or daemon, with its context.

    ``errno`` is positive; ``op`` names the request; ``seq`` is its sequence
    number; ``ext_message``/``ext_offset`` come from an extended ACK, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        errno: int,
        op: str = "",
        seq: int | None = None,
        ext_message: str = "",
        ext_offset: int | None = None,
        pid: int | None = None,
        tgid: int | None = None,
    ) -> None:
        super().__init__(message, pid=pid, tgid=tgid)
        self.errno = errno
        self.op = op
        self.seq = seq
        self.ext_message = ext_message
        self.ext_offset = ext_offset


ADMIN_HINT = (
    "needs CAP_NET_ADMIN: run as root (or give the program that capability) on the "
    "host, not in a container or user namespace, whose root does not count; or start "
    "taskstatsd and use it"
)
PROCFS_HINT = "is procfs mounted with hidepid?"
POLICY_HINT = (
    "taskstatsd's policy refused it: a client sees only the tasks whose /proc/PID/io it "
    "could read (its own uid's, not set-uid, in its PID namespace); root and members of "
    "taskstatsd's admin_group see every task: ask its administrator"
)


def _what(op: str, pid: int | None, tgid: int | None) -> str:
    if pid is not None:
        return f"{op} pid {pid}"
    if tgid is not None:
        return f"{op} tgid {tgid}"
    return op


def _einval(op: str) -> str:
    if op.startswith("register") or op.startswith("deregister"):
        return (
            f"{op}: the kernel refused the exit listener (EINVAL): the cpumask is not a "
            "valid subset of the possible CPUs, or this process is not in the initial user "
            "and PID namespaces, where the kernel accepts listeners only; from a container, "
            "use taskstatsd"
        )
    if op.startswith("cgroup"):
        return (
            f"{op}: the kernel answered EINVAL: its cgroupstats counts cgroup v1 directories "
            "only (a cgroup2 directory or a non-cgroup path is refused); give a directory "
            "of a v1 hierarchy such as /sys/fs/cgroup/cpu/..."
        )
    return f"{op}: invalid argument (EINVAL)"


def from_errno(
    err: int,
    op: str,
    *,
    pid: int | None = None,
    tgid: int | None = None,
    seq: int | None = None,
    ext_message: str = "",
    ext_offset: int | None = None,
    daemon: bool = False,
    path: str | None = None,
) -> TaskstatsError:
    """Translate a positive errno from request ``op`` into the matching exception;
    ``daemon``: taskstatsd answered (its refusals are its policy's, not the kernel's);
    ``path``: the errno came from reading this file of a task under /proc (ENOENT
    there means the task vanished)."""
    what = _what(op, pid, tgid) if path is None else (
        f"task {pid}" if pid is not None else f"thread group {tgid}")
    detail = f" ({ext_message})" if ext_message else ""
    if err == _errno.ESRCH or (path is not None and err == _errno.ENOENT):
        why = f"{path} is gone" if path is not None else "it does not exist or has exited"
        return NoSuchTask(f"{what}: no such task ({why})", pid=pid, tgid=tgid)
    if err in (_errno.EPERM, _errno.EACCES):
        hint = (f"{POLICY_HINT}{detail}" if daemon else
                PROCFS_HINT if path is not None else ADMIN_HINT)
        where = what if path is None else path
        return AccessDenied(f"{where}: permission denied: {hint}", pid=pid, tgid=tgid)
    if path is not None:
        return TaskstatsError(f"{path}: {os.strerror(err)} (errno {err}); please "
                              "report it with your kernel version", pid=pid, tgid=tgid)
    if err == _errno.ENOENT and op == "family lookup":
        return Unsupported(
            "the kernel has no TASKSTATS generic netlink family here: it was built without "
            "CONFIG_TASKSTATS, or this network namespace cannot reach it; use the procfs "
            "source or taskstatsd"
        )
    return NetlinkError(_netlink_message(err, op, what) + detail, errno=err, op=op, seq=seq,
                        ext_message=ext_message, ext_offset=ext_offset, pid=pid, tgid=tgid)


def _netlink_message(err: int, op: str, what: str) -> str:
    if err == _errno.EINVAL:
        return _einval(op)
    if err == _errno.E2BIG:
        return f"{what}: cpumask string too long for the kernel (E2BIG)"
    if err == _errno.ERANGE:
        return (f"{what}: a CPU beyond this machine's possible CPUs (ERANGE; they are in "
                "/sys/devices/system/cpu/possible)")
    if err == _errno.ENOBUFS:
        return f"{what}: receive buffer overrun (ENOBUFS): records were lost"
    return f"{what}: {os.strerror(err)} (errno {err})"


def errno_of(exc: TaskstatsError) -> int:
    """The errno that answers a request failed with ``exc`` (the inverse of
    :func:`from_errno`): ESRCH, EPERM, ENOENT (unsupported), EINVAL (bad bytes),
    a NetlinkError's own errno, else EIO."""
    if isinstance(exc, NetlinkError):
        return exc.errno
    for cls, code in _ERRNO_OF:
        if isinstance(exc, cls):
            return code
    return _errno.EIO


_ERRNO_OF: tuple[tuple[type[TaskstatsError], int], ...] = (
    (NoSuchTask, _errno.ESRCH), (AccessDenied, _errno.EPERM),
    (Unsupported, _errno.ENOENT), (ProtocolError, _errno.EINVAL))
