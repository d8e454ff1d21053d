"""The proc connector (NETLINK_CONNECTOR, CN_IDX_PROC), sans-IO: fork, exec, uid/gid
change and exit events.

Used where the kernel has no TASKSTATS: taskstatsd learns of every fork (to read a
new task's /proc while it lives) and every exit (to journal the task's last
stats); and always by its access policy (execs and credential changes, see
:mod:`pytaskstats.daemon.policy`).  Layout (linux/connector.h, linux/cn_proc.h), host byte order::

    nlmsghdr | cn_msg {u32 idx, u32 val, u32 seq, u32 ack, u16 len, u16 flags}
             | proc_event {u32 what, u32 cpu, u64 timestamp_ns, union event_data}
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from . import netlink as nl

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_UID = 0x00000004
PROC_EVENT_GID = 0x00000040
PROC_EVENT_EXIT = 0x80000000
CN_MSG = struct.Struct("=IIIIHH")
EVENT_HEADER = struct.Struct("=IIQ")
FORK = struct.Struct("=IIII")  # parent pid, parent tgid, child pid, child tgid
EXIT = struct.Struct("=IIII")  # pid, tgid, exit code, exit signal
EXEC = struct.Struct("=II")  # pid, tgid
IDS = struct.Struct("=IIII")  # pid, tgid, real id, effective id


class Fork(NamedTuple):
    """A task was created: ``pid``/``tgid`` of the child, ``ppid`` its parent's tgid,
    ``parent_pid`` the forking thread."""

    pid: int
    tgid: int
    ppid: int
    cpu: int
    parent_pid: int = 0


class Exec(NamedTuple):
    """Task ``pid`` (now its process's leader) exec'd a new program."""

    pid: int
    tgid: int


class IdChange(NamedTuple):
    """Task ``pid`` changed its uids (``kind`` "uid") or gids ("gid"): the new real
    and effective ids (the kernel does not report saved ids)."""

    pid: int
    tgid: int
    kind: str
    real: int
    effective: int


class Exit(NamedTuple):
    """A task exited, with its wait(2) status."""

    pid: int
    tgid: int
    exit_code: int
    cpu: int


def encode_listen(listen: bool = True, *, seq: int = 0, events: int = 0) -> bytes:
    """The request that subscribes (or unsubscribes) to process events; ``events``
    (a mask of PROC_EVENT_* kinds, Linux 6.6+: ``struct proc_input``) asks for those
    kinds only.  An older kernel ignores a request with ``events`` whole: see
    :func:`filters_events`."""
    op = struct.pack("=I", PROC_CN_MCAST_LISTEN if listen else PROC_CN_MCAST_IGNORE)
    if events:
        op += struct.pack("=I", events)
    body = CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, 0, len(op), 0) + op
    return nl.encode_message(nl.NLMSG_DONE, 0, seq, 0, body)


Event = Fork | Exec | IdChange | Exit


def filters_events(release: str) -> bool:
    """Whether a kernel of this ``uname -r`` release takes an event mask (6.6+)."""
    found = re.match(r"(\d+)\.(\d+)", release)
    return found is not None and (int(found[1]), int(found[2])) >= (6, 6)


def decode(data: bytes | memoryview, size: int | None = None) -> list[Event]:
    """Fork, exec, uid/gid and exit events of one datagram; other kinds are skipped."""
    out: list[Event] = []
    for msg in nl.split_messages(data, size):
        start = msg.start + CN_MSG.size + EVENT_HEADER.size
        if msg.end < start + FORK.size:  # every event's union is at least this long
            continue
        idx, _, _, _, _, _ = CN_MSG.unpack_from(msg.data, msg.start)
        what, cpu, _ = EVENT_HEADER.unpack_from(msg.data, msg.start + CN_MSG.size)
        if idx != CN_IDX_PROC:
            continue
        if what == PROC_EVENT_FORK:
            ppid, ptgid, pid, tgid = FORK.unpack_from(msg.data, start)
            out.append(Fork(pid, tgid, ptgid, cpu, ppid))
        elif what == PROC_EVENT_EXEC:
            pid, tgid = EXEC.unpack_from(msg.data, start)
            out.append(Exec(pid, tgid))
        elif what in (PROC_EVENT_UID, PROC_EVENT_GID):
            pid, tgid, real, effective = IDS.unpack_from(msg.data, start)
            kind = "uid" if what == PROC_EVENT_UID else "gid"
            out.append(IdChange(pid, tgid, kind, real, effective))
        elif what == PROC_EVENT_EXIT:
            pid, tgid, code, _ = EXIT.unpack_from(msg.data, start)
            out.append(Exit(pid, tgid, code, cpu))
    return out
