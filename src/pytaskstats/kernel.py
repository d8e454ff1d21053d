"""Talking to the TASKSTATS family over a transport (the kernel or taskstatsd).

:class:`Connection` answers queries (one at a time or pipelined) and cgroupstats;
:class:`Listener` holds registered exit-listener sockets and turns overruns into
counted :class:`~pytaskstats.records.Lost` events instead of exceptions.
"""

from __future__ import annotations

import errno
import gc
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, cast

from . import extproto
from . import genetlink as genl
from . import netlink as nl
from . import taskstats as ts
from .cpulist import parse_cpulist
from .errors import RemoteProtocolError, TaskstatsError, from_errno
from .fields import SCOPES, Scope
from .records import Bulk, CgroupStats, ExitRecord, TaskStats
from .replyshape import ESRCH_SIZE, Shape, esrch, learn
from .transport import RECV_BUFFER, NetlinkSocket, UnixSocket, truncated

Transport = NetlinkSocket | UnixSocket
QUERY_RCVBUF = 1 << 20
LISTEN_RCVBUF = 16 << 20
_SEQ = struct.Struct("=I")
WINDOW_SLOT = 1024  # bytes a reply of a learned shape may take in a window
POSSIBLE_CPUS = "/sys/devices/system/cpu/possible"


def possible_cpus() -> list[int]:
    """The kernel's possible CPUs (what a cpumask may name)."""
    with open(POSSIBLE_CPUS) as f:
        return parse_cpulist(f.read())


def lookup_family(sock: Transport, name: str = ts.FAMILY_NAME) -> genl.FamilyInfo:
    """Ask nlctrl for ``name``'s id; Unsupported if the family is not there."""
    seq = sock.next_seq()
    sock.send(genl.encode_get_family(name, seq=seq))
    while True:
        n = _recv(sock, "family lookup")
        for msg in nl.split_messages(sock.view, n):
            if msg.seq != seq:
                continue
            if msg.type == nl.NLMSG_ERROR:
                reply = nl.decode_error(msg)
                if reply.error:
                    raise from_errno(reply.error, "family lookup", seq=seq)
            elif msg.type == genl.GENL_ID_CTRL:
                return genl.decode_family(msg)


def _recv(sock: Transport, op: str) -> int:
    try:
        return sock.recv()
    except OSError as err:
        raise _recv_error(sock, op, err) from err


def _recv_error(sock: Transport, op: str, err: OSError) -> TaskstatsError:
    """What a failed receive means: no answer in time, or the socket's errno."""
    if isinstance(err, TimeoutError | BlockingIOError):
        return TaskstatsError(f"{op}: no answer from the {sock.source} within the timeout")
    return from_errno(err.errno or errno.EIO, op)


class Connection:
    """Queries to the TASKSTATS family over one socket: to the kernel, or to
    taskstatsd when ``socket_path`` is given.

    Exit events that arrive on this socket (if it was registered) are kept in
    ``pending_exits`` instead of being mistaken for replies.
    """

    def __init__(self, rcvbuf: int = QUERY_RCVBUF, timeout: float | None = 5.0, *,
                 socket_path: str | None = None, fd: int | None = None,
                 family: genl.FamilyInfo | None = None) -> None:
        """``fd``: adopt an inherited socket; give it the ``family`` (looked up on
        another socket) so that no message queued on it is read here."""
        self.sock: Transport = (UnixSocket(socket_path, timeout) if socket_path
                                else NetlinkSocket(rcvbuf, timeout, fd=fd))
        self.source = self.sock.source
        try:
            if isinstance(self.sock, UnixSocket):
                self._ask_for_acks()
            self.family = family or lookup_family(self.sock)
        except BaseException:
            self.sock.close()
            raise
        self.pending_exits: deque[ExitRecord] = deque()
        # replies in flight must fit the receive buffer (~2.3 KiB of memory each)
        self.window = max(8, min(256, self.sock.rcvbuf // 4096))
        self._last_n = 0
        self.shapes: dict[Scope, Shape] = {}  # learned from replies the codec accepted
        self._encode = {scope: ts.encode_get_fast(scope) for scope in SCOPES}
        # a window of replies laid end to end (the bulk query's fast path)
        self.window_view = memoryview(bytearray(self.window * WINDOW_SLOT + RECV_BUFFER))

    def _ask_for_acks(self) -> None:
        """Ask taskstatsd for capped errors with extended-ACK messages (what
        NETLINK_CAP_ACK and NETLINK_EXT_ACK do on a netlink socket): the error texts
        and the count in its "records dropped" notice.  No reply is awaited: an older
        daemon's refusal carries its own seq and is skipped like any stray answer."""
        self.sock.send(extproto.encode_request(
            extproto.CMD_SET_OPTIONS, {"cap_ack": True, "ext_ack": True},
            seq=self.sock.next_seq()))

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, data: bytes, seq: int, op: str, *, ack: bool = False,
                 pid: int | None = None, tgid: int | None = None,
                 fds: tuple[int, ...] = ()) -> list[ts.Event]:
        """Send one request; return the events answering ``seq``.

        Without ``ack`` the first answer ends the request; with it, the ACK does.
        """
        self.sock.send(data, fds)
        return self._answer(_recv(self.sock, op), seq, op, ack=ack, pid=pid, tgid=tgid)

    def _answer(self, n: int, seq: int, op: str, *, ack: bool = False,
                pid: int | None = None, tgid: int | None = None) -> list[ts.Event]:
        """The events answering ``seq``, from the ``n``-byte datagram in the buffer on
        (see :meth:`_request`)."""
        answer: list[ts.Event] = []
        while True:
            self._last_n = n
            for event in ts.decode(self.sock.view, self.family.id, n, source=self.source):
                if isinstance(event, ExitRecord):
                    self.pending_exits.append(event)
                elif event.seq != seq:
                    continue
                elif isinstance(event, nl.ErrorReply):
                    if event.error:
                        raise from_errno(event.error, op, pid=pid, tgid=tgid, seq=seq,
                                         ext_message=event.ext_message,
                                         daemon=self.source == "daemon")
                    return answer
                else:
                    answer.append(event)
                    if not ack:
                        return answer
            n = _recv(self.sock, op)

    def query(self, scope: Scope, ident: int) -> TaskStats:
        """The record of task ``ident`` (scope "pid") or thread group (scope "tgid").

        A reply of the learned shape (:mod:`.replyshape`) is unpacked in one go;
        anything else is decoded strictly."""
        sock = self.sock
        seq = sock.next_seq()
        sock.send_now(self._encode[scope](self.family.id, ident, seq))
        try:
            n = sock.recv_now()
        except OSError as err:
            raise _recv_error(sock, "query", err) from err
        if n > RECV_BUFFER:
            raise truncated(n)
        shape = self.shapes.get(scope)
        if shape is not None and n == shape.size:
            t = shape.struct.unpack_from(sock.buffer)
            f0, f1, f2 = shape.fixed
            if t[1] == seq and t[0] == f0 and t[3] == f1 and t[5] == f2 and t[2]:
                return shape.record(t)
        return self._strictly(scope, ident, seq, n)

    def query_reply(self, scope: Scope, ident: int) -> bytes | TaskStats:
        """The kernel's reply datagram to a GET when it has the learned shape (for
        taskstatsd to forward with its seq and port id patched), else the record as
        :meth:`query` decodes it; errors as :meth:`query`."""
        seq, n = self._get(scope, ident)
        shape = self.shapes.get(scope)
        if shape is not None and n == shape.size:
            t = shape.heads.unpack_from(self.sock.buffer)
            if t[1] == seq and shape.match(t):
                return bytes(self.sock.view[:n])
        return self._strictly(scope, ident, seq, n)

    def query_replies(self, scope: Scope, ids: Iterable[int]) -> dict[int, bytes | TaskStats]:
        """:meth:`query_reply` of many ids, pipelined; an id answered with any error
        is left out (ask it alone for its error)."""
        return _Pipeline(self, scope, list(ids), lenient=True, raw=True).run().out

    def _get(self, scope: Scope, ident: int) -> tuple[int, int]:
        """Send a GET; (its seq, the length of the first datagram received)."""
        sock = self.sock
        seq = sock.next_seq()
        sock.send(self._encode[scope](self.family.id, ident, seq))
        return seq, _recv(sock, "query")

    def _strictly(self, scope: Scope, ident: int, seq: int, n: int) -> TaskStats:
        """The record answering ``seq``, decoded strictly from the datagram of ``n``
        bytes in the buffer on (the shape learned from it)."""
        pid, tgid = (ident, None) if scope == "pid" else (None, ident)
        for event in self._answer(n, seq, "query", pid=pid, tgid=tgid):
            if isinstance(event, ts.StatsReply):
                self.learn(self.sock.view, self._last_n, event)
                return event.stats
        raise RemoteProtocolError(f"the kernel answered the {scope} query with no record")

    def learn(self, view: memoryview, n: int, reply: ts.StatsReply) -> Shape | None:
        """Learn the shape of ``reply``, decoded strictly from the ``n`` bytes at
        ``view``, if its scope has none yet."""
        if reply.scope in self.shapes:
            return self.shapes[reply.scope]
        shape = learn(view, n, self.family.id, scope=reply.scope, source=self.source,
                      expected=reply.stats)
        if shape is not None:
            self.shapes[reply.scope] = shape
        return shape

    def query_many(self, scope: Scope, ids: Iterable[int], *,
                   skip_denied: bool = False) -> Bulk:
        """Pipelined queries: many requests in flight, replies matched by sequence.

        Tasks that vanished (ESRCH) are left out, and with ``skip_denied`` those
        the peer refuses (EPERM: taskstatsd's policy); the answer lists both.
        Replies lost to an overrun or a timeout are asked for again once.
        """
        done = _Pipeline(self, scope, list(ids), skip_denied=skip_denied).run()
        return Bulk(cast("dict[int, TaskStats]", done.out), vanished=tuple(done.vanished),
                    denied=tuple(done.denied))

    def cgroup(self, fd: int) -> CgroupStats:
        """cgroupstats of the cgroup v1 directory open as ``fd`` (with an ACK, so a
        bad fd cannot hang).  To taskstatsd the fd itself is passed (SCM_RIGHTS)."""
        seq = self.sock.next_seq()
        for event in self._request(ts.encode_cgroup_get(self.family.id, fd, seq=seq), seq,
                                   "cgroupstats", ack=True, fds=(fd,)):
            if isinstance(event, ts.CgroupStatsReply):
                return event.stats
        raise TaskstatsError(
            f"cgroupstats: the kernel gave no answer for fd {fd}: it is not an open "
            "directory of a cgroup v1 hierarchy")

    def register(self, cpumask: str, *, deregister: bool = False) -> None:
        """(De)register this socket as exit listener for ``cpumask``, with an ACK."""
        seq = self.sock.next_seq()
        encode = ts.encode_deregister if deregister else ts.encode_register
        op = ("deregister" if deregister else "register") + f" cpumask {cpumask}"
        self._request(encode(self.family.id, cpumask, seq=seq), seq, op, ack=True)


    def cgroup2(self, fd: int) -> CgroupStats:
        """Task state counts of the cgroup2 directory open as ``fd``, counted by
        taskstatsd (its TASKSTATSD CGROUP command; the fd is passed with SCM_RIGHTS)."""
        doc = self.extension(extproto.CMD_CGROUP, {}, fds=(fd,))
        names = CgroupStats._fields[:-1]
        if not isinstance(doc, dict) or not all(
                type(doc.get(k)) is int and doc[k] >= 0 for k in names):
            raise RemoteProtocolError("taskstatsd's cgroup2 counts are not a JSON object "
                                      f"of non-negative {', '.join(names)}")
        n_sleep, n_run, n_stop, n_unint, n_io = (doc[k] for k in names)
        return CgroupStats(n_sleep, n_run, n_stop, n_unint, n_io, source=self.source)

    def status(self, *, flush: bool = False) -> extproto.Status:
        """taskstatsd's status document; with ``flush``, after its journal committed
        every exit received before (see :mod:`pytaskstats.extproto`)."""
        doc = self.extension(extproto.Command.STATUS, {"flush": True} if flush else {})
        return extproto.status_of(doc)

    def history(self, query: extproto.HistoryQuery) -> extproto.Rows:
        """Journal rows matching ``query`` from taskstatsd (``note``: its warning, e.g.
        that it cut the answer)."""
        return extproto.rows_of(self.extension(extproto.Command.HISTORY, dict(query)))

    def extension(self, cmd: int, params: Mapping[str, Any], *,
                  fds: tuple[int, ...] = ()) -> Any:
        """A taskstatsd extension request (``fds`` passed with it): its JSON reply,
        or the rows of a multi-part reply (:class:`~.extproto.Rows`, with the
        warning its end carried, e.g. that the daemon cut the answer)."""
        seq = self.sock.next_seq()
        self.sock.send(extproto.encode_request(cmd, params, seq=seq), fds)
        rows = extproto.Rows()
        while True:
            n = _recv(self.sock, "taskstatsd request")
            for msg in nl.split_messages(self.sock.view, n):
                if msg.seq != seq:
                    continue
                if msg.type == nl.NLMSG_ERROR:
                    reply = nl.decode_error(msg)
                    raise from_errno(reply.error or errno.EIO, "taskstatsd request", seq=seq,
                                     ext_message=reply.ext_message)
                if msg.type == nl.NLMSG_DONE:
                    rows.note = extproto.done_note(msg)
                    return rows
                doc = extproto.decode_json(msg)
                if not msg.flags & nl.NLM_F_MULTI:
                    return doc
                rows += doc


class _Pipeline:
    """State of one pipelined bulk query.

    Replies of the connection's learned shape are received end to end into its
    ``window_view`` and unpacked in bulk (:meth:`flush`); any other datagram is
    decoded strictly as it comes (:meth:`strict`), and may teach the shape.
    """

    def __init__(self, conn: Connection, scope: Scope, ids: list[int], *,
                 skip_denied: bool = False, lenient: bool = False, raw: bool = False) -> None:
        """``lenient``: every error leaves its id out (in ``vanished``); ``raw``:
        replies of the shape are kept as their bytes (``Connection.query_reply``)."""
        self.conn, self.scope, self.ids, self.raw = conn, scope, ids, raw
        self.skipped = (0, errno.ESRCH, errno.EPERM) if skip_denied else (0, errno.ESRCH)
        self.lenient = lenient
        self.vanished: list[int] = []
        self.denied: list[int] = []
        self.out: dict[int, TaskStats | bytes] = {}
        self.outstanding: dict[int, int] = {}  # seq -> id
        self.retried = False
        self.shape = conn.shapes.get(scope)

    def send(self, ids: list[int]) -> None:
        sock = self.conn.sock
        first = sock.next_seq(len(ids))
        sock.send(ts.encode_gets(self.conn.family.id, self.scope, ids, first))
        self.outstanding.update(zip(range(first, first + len(ids)), ids, strict=True))

    def run(self) -> _Pipeline:
        """Ask for every id; the answers are in ``out``, ``vanished``, ``denied``.

        The cyclic garbage collector is paused meanwhile (records hold no cycles):
        otherwise its passes over the records built so far make a scan's cost per
        task grow with the number of tasks."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if enabled:
                gc.enable()

    def _run(self) -> _Pipeline:
        window, todo = self.conn.window, self.ids
        i = 0
        while i < len(todo) or self.outstanding:
            room = window - len(self.outstanding)
            if i < len(todo) and room >= window // 2:
                self.send(todo[i:i + room])
                i += room
            # with more to send, stop when half the window is free again: a peer that
            # answers as it goes (taskstatsd) is kept busy meanwhile
            more = len(self.outstanding) - window // 2 if i < len(todo) else 0
            self.receive_window(more if more > 0 else len(self.outstanding))
        return self

    def receive_window(self, count: int) -> None:
        """Receive ``count`` datagrams (fewer if the socket times out or overruns:
        then :meth:`retry`); replies of the shape are kept end to end and unpacked
        together at the end."""
        recv_into, view = self.conn.sock.recv_into, self.conn.window_view
        limit = len(view) - RECV_BUFFER
        size = self.shape.size if self.shape else -1
        off = 0
        for _ in range(count):
            try:
                n = recv_into(view[off:])
            except (TimeoutError, BlockingIOError) as err:
                self.flush(off)
                self.retry(err)
                return
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise from_errno(err.errno or errno.EIO, "bulk query") from err
                self.flush(off)
                self.retry(err)
                return
            if n == size:
                off += size
                if off > limit:
                    self.flush(off)
                    off = 0
            elif n == ESRCH_SIZE and (gone := self.gone(view[off:])) is not None:
                self.vanished.append(gone)
            else:
                self.strict(view[off:], n)
                if size < 0 and self.shape:
                    size = self.shape.size
        self.flush(off)

    def flush(self, end: int) -> None:
        """Unpack the replies of the shape laid end to end in ``window_view[:end]``;
        those whose fixed bytes differ are decoded strictly."""
        if not end or self.shape is None:
            return
        shape, view, out, pop = self.shape, self.conn.window_view, self.out, self.outstanding.pop
        f0, f1, f2 = shape.fixed
        record, size = shape.record, shape.size
        if self.raw:
            for k, t in enumerate(shape.heads.iter_unpack(view[:end])):
                if t[0] == f0 and t[3] == f1 and t[5] == f2 and t[2]:
                    ident = pop(t[1], None)
                    if ident is not None:
                        out[ident] = bytes(view[k * size:(k + 1) * size])
                else:
                    self.strict(view[k * size:], size)
            return
        for k, t in enumerate(shape.struct.iter_unpack(view[:end])):
            if t[0] == f0 and t[3] == f1 and t[5] == f2 and t[2]:
                ident = pop(t[1], None)
                if ident is not None:
                    out[ident] = record(t)
            else:
                self.strict(view[k * size:], size)

    def gone(self, view: memoryview) -> int | None:
        """The id of an outstanding request the datagram at ``view`` answers with
        the kernel's plain ESRCH (:func:`.replyshape.esrch`), taken off; else None."""
        ident = esrch(view, self.conn.family.id, self.scope, self.outstanding)
        if ident is not None:
            seq = _SEQ.unpack_from(view, 8)[0]
            del self.outstanding[seq]
        return ident

    def strict(self, view: memoryview, n: int) -> None:
        """Decode the ``n``-byte datagram at ``view`` with the codec and handle it."""
        conn = self.conn
        for event in ts.decode(view, conn.family.id, n, source=conn.source):
            if (self.shape is None and isinstance(event, ts.StatsReply)
                    and event.scope == self.scope):
                self.shape = conn.learn(view, n, event)
            self.handle(event)

    def handle(self, event: ts.Event) -> None:
        if isinstance(event, ExitRecord):
            self.conn.pending_exits.append(event)
            return
        ident = self.outstanding.pop(event.seq, None)
        if ident is None:
            return
        if isinstance(event, ts.StatsReply):
            self.out[ident] = event.stats
        elif isinstance(event, nl.ErrorReply):
            if event.error not in self.skipped and not self.lenient:
                pid, tgid = (ident, None) if self.scope == "pid" else (None, ident)
                raise from_errno(event.error, "query", seq=event.seq, pid=pid, tgid=tgid,
                                 daemon=self.conn.source == "daemon")
            if event.error:
                (self.denied if event.error == errno.EPERM else self.vanished).append(ident)

    def retry(self, err: Exception) -> None:
        if self.retried or not self.outstanding:
            raise TaskstatsError(f"bulk {self.scope} query: {len(self.outstanding)} replies "
                                 f"did not come ({err})") from err
        self.retried = True
        self.drain()
        lost = list(self.outstanding.values())
        self.outstanding.clear()
        for k in range(0, len(lost), self.conn.window):
            self.send(lost[k:k + self.conn.window])

    def drain(self) -> None:
        """Read what is queued, without waiting: it answers requests (ENOBUFS comes
        first), and a socket that overran takes nothing until read empty."""
        sock = self.conn.sock
        sock.setblocking(False)
        try:
            while True:
                try:
                    n = sock.recv()
                except BlockingIOError:
                    return
                except OSError as err:
                    if err.errno != errno.ENOBUFS:
                        raise from_errno(err.errno or errno.EIO, "bulk query") from err
                    continue
                self.strict(sock.view, n)
        finally:
            sock.setblocking(True)  # SO_RCVTIMEO, set apart, still holds
