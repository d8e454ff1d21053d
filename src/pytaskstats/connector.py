"""The proc connector (NETLINK_CONNECTOR, CN_IDX_PROC), sans-IO: fork and exit events.

Used where the kernel has no TASKSTATS: taskstatsd learns of every fork (to read a
new task's /proc while it lives) and every exit (to journal the task's last
stats).  Layout (linux/connector.h, linux/cn_proc.h), host byte order::

    nlmsghdr | cn_msg {u32 idx, u32 val, u32 seq, u32 ack, u16 len, u16 flags}
             | proc_event {u32 what, u32 cpu, u64 timestamp_ns, union event_data}
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import netlink as nl

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXIT = 0x80000000
CN_MSG = struct.Struct("=IIIIHH")
EVENT_HEADER = struct.Struct("=IIQ")
FORK = struct.Struct("=IIII")  # parent pid, parent tgid, child pid, child tgid
EXIT = struct.Struct("=IIII")  # pid, tgid, exit code, exit signal


class Fork(NamedTuple):
    """A task was created: ``pid``/``tgid`` of the child, ``ppid`` its parent's tgid."""

    pid: int
    tgid: int
    ppid: int
    cpu: int


class Exit(NamedTuple):
    """A task exited, with its wait(2) status."""

    pid: int
    tgid: int
    exit_code: int
    cpu: int


def encode_listen(listen: bool = True, *, seq: int = 0) -> bytes:
    """The request that subscribes (or unsubscribes) to process events."""
    op = struct.pack("=I", PROC_CN_MCAST_LISTEN if listen else PROC_CN_MCAST_IGNORE)
    body = CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, 0, len(op), 0) + op
    return nl.encode_message(nl.NLMSG_DONE, 0, seq, 0, body)


def decode(data: bytes | memoryview, size: int | None = None) -> list[Fork | Exit]:
    """Fork and exit events of one datagram; other event kinds are skipped."""
    out: list[Fork | Exit] = []
    for msg in nl.split_messages(data, size):
        start = msg.start + CN_MSG.size + EVENT_HEADER.size
        if msg.end < start + FORK.size:
            continue
        idx, _, _, _, _, _ = CN_MSG.unpack_from(msg.data, msg.start)
        what, cpu, _ = EVENT_HEADER.unpack_from(msg.data, msg.start + CN_MSG.size)
        if idx != CN_IDX_PROC:
            continue
        if what == PROC_EVENT_FORK:
            _, ptgid, pid, tgid = FORK.unpack_from(msg.data, start)
            out.append(Fork(pid, tgid, ptgid, cpu))
        elif what == PROC_EVENT_EXIT:
            pid, tgid, code, _ = EXIT.unpack_from(msg.data, start)
            out.append(Exit(pid, tgid, code, cpu))
    return out
