"""Transports: the sockets that carry netlink datagrams.

:class:`NetlinkSocket` talks to the kernel (AF_NETLINK, NETLINK_GENERIC);
:class:`UnixSocket` talks to taskstatsd (AF_UNIX, SOCK_SEQPACKET) with the same
datagrams, plus file descriptors passed with SCM_RIGHTS.  Both receive into one
reused buffer.  These and :mod:`pytaskstats.daemon` are the only socket users.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Sequence
from functools import partial

from . import netlink as nl
from .errors import ProtocolError, RemoteProtocolError, TaskstatsError, Unsupported

NETLINK_GENERIC = 16
SO_RCVBUFFORCE = 33
SO_MEMINFO = 55
SK_MEMINFO_DROPS = 8
RECV_BUFFER = 65536  # >= two v17 records per message (1,428 B) with ample room
DEFAULT_SOCKET = "/run/taskstats/taskstatsd.sock"
_TYPE_SEQ = struct.Struct("=IHHI")


class _Buffered:
    """A receive buffer, a sequence counter and the socket they belong to."""

    source = "kernel"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray(RECV_BUFFER)
        self.view = memoryview(self.buffer)
        self.seq = 0
        # the one-query fast path's bare calls (kernel.Connection.query): send one
        # datagram; receive one into ``buffer``, returning its full length (a length
        # over RECV_BUFFER is a truncation the caller refuses: :func:`truncated`)
        self.send_now: Callable[[bytes], object] = sock.send
        self.recv_now: Callable[[], int] = partial(sock.recv_into, self.buffer, RECV_BUFFER,
                                                   socket.MSG_TRUNC)

    def next_seq(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive 32-bit sequence numbers; return the first."""
        if self.seq + n >= 0xFFFFFFFF:
            self.seq = 0  # wrap (nlmsg_seq is a u32); old replies are long gone
        first = self.seq + 1
        self.seq += n
        return first

    def set_timeout(self, timeout: float | None) -> None:
        """A receive timeout in the kernel (SO_RCVTIMEO), keeping the socket blocking:
        Python's settimeout() would add a poll() to every call.  A timed-out recv
        raises BlockingIOError."""
        self.sock.setblocking(True)
        seconds = 0.0 if timeout is None else max(timeout, 1e-6)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("@ll", int(seconds), int(seconds % 1 * 1e6)))

    def recv(self) -> int:
        """Receive one datagram into ``buffer``; return its length.

        Raises OSError(ENOBUFS) on a kernel overrun and RemoteProtocolError if the
        datagram was longer than the buffer (MSG_TRUNC).
        """
        return self.recv_into(self.view)

    def recv_into(self, view: memoryview) -> int:
        """Receive one datagram into ``view`` (RECV_BUFFER bytes at least), as
        :meth:`recv`: a caller's buffer can hold a window of replies end to end."""
        n = self.sock.recv_into(view, RECV_BUFFER, socket.MSG_TRUNC)
        if n > RECV_BUFFER:
            raise truncated(n)
        return n

    def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send one datagram (one or more requests), with ``fds`` where supported."""
        self.sock.send(data)

    def drops(self) -> int:
        """Messages the peer dropped on this socket, where the socket can tell."""
        return 0

    def fileno(self) -> int:
        """The socket's file descriptor."""
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        """Blocking or not."""
        self.sock.setblocking(flag)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class NetlinkSocket(_Buffered):
    """One bound NETLINK_GENERIC socket to the kernel."""

    def __init__(self, rcvbuf: int, timeout: float | None = 5.0, *,
                 fd: int | None = None) -> None:
        """A new socket, or (``fd``) one inherited already bound, e.g. from systemd's
        file descriptor store, with its registrations and queued messages."""
        try:
            sock = (socket.socket(fileno=fd) if fd is not None else
                    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_GENERIC))
        except OSError as err:
            raise Unsupported(f"cannot open a generic netlink socket: {err.strerror}: this "
                              "kernel or sandbox has no AF_NETLINK; use the procfs source"
                              ) from err
        super().__init__(sock)
        if fd is None:
            sock.bind((0, 0))
        self.portid: int = sock.getsockname()[0]
        self.rcvbuf = self._set_rcvbuf(rcvbuf)
        self.set_timeout(timeout)

    def _set_rcvbuf(self, size: int) -> int:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return int(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def drops(self) -> int:
        """The kernel's count of messages dropped on this socket (sk_drops)."""
        raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
        return int(struct.unpack_from("=9I", raw)[SK_MEMINFO_DROPS])

    def fill(self) -> float:
        """How full the receive buffer is: queued bytes over its size (0 to ~1+)."""
        raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
        queued, size = struct.unpack_from("=2I", raw)  # SK_MEMINFO_RMEM_ALLOC, _RCVBUF
        return float(queued) / max(1, int(size))


class UnixSocket(_Buffered):
    """A SOCK_SEQPACKET connection to taskstatsd at ``path``."""

    source = "daemon"

    def __init__(self, path: str, timeout: float | None = 5.0) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except OSError as err:
            sock.close()
            raise TaskstatsError(
                f"cannot reach taskstatsd at {path}: {err.strerror}: start it "
                "(taskstatsd --foreground) or point TASKSTATS_SOCKET / --socket at it"
            ) from err
        super().__init__(sock)
        self.send_now, self.recv_now = self.send, self.recv  # with their checks
        self.set_timeout(timeout)
        self.portid = 0
        self.rcvbuf = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send one datagram, passing ``fds`` with SCM_RIGHTS.  A connection the daemon
        closed (or refused) raises TaskstatsError saying so, never SIGPIPE."""
        try:
            if fds:
                socket.send_fds(self.sock, [data], list(fds), socket.MSG_NOSIGNAL)
            else:
                self.sock.send(data, socket.MSG_NOSIGNAL)
        except (BrokenPipeError, ConnectionResetError) as err:
            raise self._closed() from err

    def recv_into(self, view: memoryview) -> int:
        """Receive one datagram, as :meth:`_Buffered.recv_into`; the daemon's refusal
        of this connection, or its end, raises TaskstatsError."""
        try:
            n = super().recv_into(view)
        except (BrokenPipeError, ConnectionResetError) as err:
            raise self._closed() from err
        if n == 0:
            raise self._closed()
        refusal = _refusal(view, n)
        if refusal:
            raise TaskstatsError(refusal)
        return n

    def _closed(self) -> TaskstatsError:
        """The error for a connection the daemon ended: its refusal notice when one
        is still queued here."""
        try:
            n = self.sock.recv_into(self.buffer, RECV_BUFFER, socket.MSG_DONTWAIT)
        except OSError:
            n = 0
        return TaskstatsError(_refusal(self.view, n) or "taskstatsd closed the connection "
                              "(it stopped, or refused this client)")


def truncated(n: int) -> RemoteProtocolError:
    """The error for a datagram of ``n`` bytes, more than the receive buffer holds."""
    return RemoteProtocolError(f"netlink datagram of {n} bytes truncated to {RECV_BUFFER}")


def _refusal(view: memoryview, n: int) -> str:
    """The message of taskstatsd's refusal of a connection (an NLMSG_ERROR of sequence
    0 with EUSERS, sent before it closes it) in the first ``n`` bytes, else ""."""
    if n < nl.HEADER.size:
        return ""
    _, mtype, _, seq = _TYPE_SEQ.unpack_from(view)
    if mtype != nl.NLMSG_ERROR or seq:  # every answer but a refusal, without a walk
        return ""
    try:
        messages = nl.split_messages(view, n)
        if len(messages) != 1 or messages[0].type != nl.NLMSG_ERROR or messages[0].seq:
            return ""
        reply = nl.decode_error(messages[0])
    except ProtocolError:
        return ""
    if reply.error != errno.EUSERS:
        return ""
    return reply.ext_message or "taskstatsd refused the connection: too many clients"


class ConnectorSocket(_Buffered):
    """A NETLINK_CONNECTOR socket subscribed to the proc connector's events (needs
    CAP_NET_ADMIN in the initial namespaces)."""

    def __init__(self, rcvbuf: int = 16 << 20, events: int = 0) -> None:
        """``events``: a mask of the PROC_EVENT_* kinds wanted, on kernels that filter
        (6.6+; elsewhere every kind comes); 0 for every kind."""
        from . import connector  # noqa: PLC0415 - only taskstatsd needs it

        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                 connector.NETLINK_CONNECTOR)
            sock.bind((0, connector.CN_IDX_PROC))
        except OSError as err:
            raise Unsupported(f"no proc connector ({err.strerror}): exits can only be "
                              "found by polling /proc") from err
        super().__init__(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            wanted = events if connector.filters_events(os.uname().release) else 0
            sock.send(connector.encode_listen(True, events=wanted))
        except OSError as err:  # e.g. ECONNREFUSED outside the initial network namespace
            sock.close()
            raise Unsupported(f"the proc connector refused us ({err.strerror})") from err

    def drops(self) -> int:
        """Events the kernel dropped on this socket (sk_drops)."""
        raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
        return int(struct.unpack_from("=9I", raw)[SK_MEMINFO_DROPS])
