"""One client connection of taskstatsd as the server keeps it, and what it may cost.

A :class:`Peer` holds what was fixed at connect (credentials from SO_PEERCRED, the
namespace view), the options it set (cap_ack, ext_ack), its two outbound queues
(answers and exit records, with their byte counts) and the datagram being answered
(a :class:`Batch`); :func:`flush` sends those queues without blocking and
:func:`passed_fd` is the fd a cgroup request reads.  :class:`Limits` bounds every
client; this module only holds the values, the server modules enforce them.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque
from dataclasses import dataclass, field

from .. import netlink as nl
from ..errors import NetlinkError
from .namespaces import NsView

_U32 = struct.Struct("=I")


@dataclass
class Limits:
    """What one client may cost the daemon, each bounded before it is spent.

    ``max_clients`` connections in all, of which the last ``admin_reserved`` only for
    root and the admin group; ``max_clients_per_uid`` per non-admin uid;
    ``max_request`` bytes per datagram; per client, at most ``reply_bytes`` of
    queued answers (then its requests are no longer read until they are sent: one
    request's answer may overshoot it), ``queue_records`` exit records and
    ``record_bytes`` of them (then they are dropped and counted); per turn of the
    event loop, a client's requests are answered until ``turn_messages`` of them or
    ``turn_seconds`` have gone (the request under way is finished); a history answer
    has at most ``history_bytes`` of JSON (the rest is cut, and it says so).  Passed
    fds are kept only for a datagram with a cgroup request, one per datagram and
    ``max_held_fds`` in all (see :meth:`.server.Server._keep_fds`).
    """

    max_clients: int = 256
    max_request: int = 65536
    queue_records: int = 8192
    max_clients_per_uid: int = 32
    admin_reserved: int = 8
    reply_bytes: int = 256 * 1024
    record_bytes: int = 4 << 20
    turn_messages: int = 16
    turn_seconds: float = 0.0005
    max_held_fds: int = 256
    history_bytes: int = 4 << 20


@dataclass
class Batch:
    """A received datagram whose messages are answered over several turns."""

    data: bytes
    fds: list[int]
    offset: int = 0

    def next_frame(self) -> bytes | None:
        """The next message's bytes (header included), or None when done.  A frame
        that is not a whole message is returned with everything after it, once, for
        :meth:`.dispatch.Dispatcher.handle` to judge; trailing zero padding is
        skipped."""
        rest = len(self.data) - self.offset
        if rest <= 0 or (rest < nl.HEADER.size and not any(self.data[self.offset:])):
            return None
        start = self.offset
        length = _U32.unpack_from(self.data, start)[0] if rest >= nl.HEADER.size else 0
        if nl.HEADER.size <= length <= rest:
            self.offset = start + nl.align4(length)
            return self.data[start:start + length]
        self.offset = len(self.data)
        return self.data[start:]

    def peek(self, n: int) -> list[bytes]:
        """The next ``n`` frames (fewer at the end) as :meth:`next_frame` gives them,
        left in place."""
        offset, frames = self.offset, list[bytes]()
        while len(frames) < n and (frame := self.next_frame()) is not None:
            frames.append(frame)
        self.offset = offset
        return frames


@dataclass
class Peer:
    """One client connection, with its credentials from SO_PEERCRED."""

    sock: socket.socket
    id: int
    pid: int
    uid: int
    gid: int
    admin: bool  # from SO_PEERCRED/SO_PEERGROUPS at connect, never from /proc
    replies: deque[bytes] = field(default_factory=deque)
    records: deque[bytes] = field(default_factory=deque)
    reply_bytes: int = 0  # queued in replies
    record_bytes: int = 0  # queued in records
    batch: Batch | None = None  # a datagram not yet fully answered
    dropped_unsent: int = 0  # dropped since the last ENOBUFS notice
    dropped: int = 0
    want_write: bool = False
    view: NsView | None = None  # set when the client is in other namespaces
    cap_ack: bool = False  # NETLINK_CAP_ACK, set by TASKSTATSD SET_OPTIONS
    fd_refused: bool = False  # the batch's passed fd was closed: max_held_fds held
    ext_ack: bool = False  # NETLINK_EXT_ACK, likewise
    groups: frozenset[int] = frozenset()  # supplementary groups (SO_PEERGROUPS) at connect


def flush(peer: Peer) -> bool:
    """Send what ``peer`` has queued without blocking: answers, then the ENOBUFS
    notice of records dropped since the last one, then exit records.  Sets
    ``want_write`` when the socket is full; False when the client has gone."""
    try:
        while peer.replies:
            peer.sock.send(peer.replies[0])
            peer.reply_bytes -= len(peer.replies.popleft())
        if peer.dropped_unsent:
            peer.sock.send(nl.encode_error(
                errno.ENOBUFS, b"", seq=0, pid=0, ext_offset=peer.dropped_unsent,
                ext_message=f"{peer.dropped_unsent} exit records dropped: client too slow"))
            peer.dropped_unsent = 0
        while peer.records:
            peer.sock.send(peer.records[0])
            peer.record_bytes -= len(peer.records.popleft())
    except BlockingIOError:
        peer.want_write = True
        return True
    except OSError:
        return False
    peer.want_write = False
    return True


def passed_fd(peer: Peer, fds: list[int]) -> int:
    """The fd passed and kept for ``peer``'s cgroup request; NetlinkError EBADF when
    none was passed, ENFILE when it was closed because max_held_fds were held."""
    if fds:
        return fds[0]
    if peer.fd_refused:
        raise NetlinkError("passed fd not kept", errno=errno.ENFILE,
                           ext_message="taskstatsd holds too many passed fds "
                           "(max_held_fds): try again")
    raise NetlinkError("no fd passed", errno=errno.EBADF)
