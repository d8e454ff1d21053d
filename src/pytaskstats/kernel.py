"""Talking to the TASKSTATS family over a transport (the kernel or taskstatsd).

:class:`Connection` answers queries (one at a time or pipelined) and cgroupstats;
:class:`Listener` holds registered exit-listener sockets and turns overruns into
counted :class:`~pytaskstats.records.Lost` events instead of exceptions.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from . import extproto
from . import genetlink as genl
from . import netlink as nl
from . import taskstats as ts
from .cpulist import parse_cpulist
from .errors import RemoteProtocolError, TaskstatsError, from_errno
from .fields import Scope
from .records import Bulk, CgroupStats, ExitRecord, TaskStats
from .transport import NetlinkSocket, UnixSocket

Transport = NetlinkSocket | UnixSocket
QUERY_RCVBUF = 1 << 20
LISTEN_RCVBUF = 16 << 20
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
    except (TimeoutError, BlockingIOError) as err:
        raise TaskstatsError(f"{op}: no answer from the {sock.source} within the timeout"
                             ) from err
    except OSError as err:
        raise from_errno(err.errno or errno.EIO, op) from err


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
        answer: list[ts.Event] = []
        while True:
            n = _recv(self.sock, op)
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

    def query(self, scope: Scope, ident: int) -> TaskStats:
        """The record of task ``ident`` (scope "pid") or thread group (scope "tgid")."""
        seq = self.sock.next_seq()
        pid, tgid = (ident, None) if scope == "pid" else (None, ident)
        request = ts.encode_get_fast(scope)(self.family.id, ident, seq)
        for event in self._request(request, seq, "query", pid=pid, tgid=tgid):
            if isinstance(event, ts.StatsReply):
                return event.stats
        raise RemoteProtocolError(f"the kernel answered the {scope} query with no record")

    def query_many(self, scope: Scope, ids: Iterable[int], *,
                   skip_denied: bool = False) -> Bulk:
        """Pipelined queries: many requests in flight, replies matched by sequence.

        Tasks that vanished (ESRCH) are left out, and with ``skip_denied`` those
        the peer refuses (EPERM: taskstatsd's policy); the answer lists both.
        Replies lost to an overrun or a timeout are asked for again once.
        """
        return _Pipeline(self, scope, list(ids), skip_denied=skip_denied).run()

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
    """State of one pipelined bulk query."""

    def __init__(self, conn: Connection, scope: Scope, ids: list[int], *,
                 skip_denied: bool) -> None:
        self.conn, self.scope, self.ids = conn, scope, ids
        self.skipped = (0, errno.ESRCH, errno.EPERM) if skip_denied else (0, errno.ESRCH)
        self.vanished: list[int] = []
        self.denied: list[int] = []
        self.out: dict[int, TaskStats] = {}
        self.outstanding: dict[int, int] = {}  # seq -> id
        self.retried = False

    def send(self, ids: list[int]) -> None:
        sock, family = self.conn.sock, self.conn.family.id
        first = sock.next_seq(len(ids))
        encode = ts.encode_get_fast(self.scope)
        sock.send(b"".join(encode(family, ident, first + k) for k, ident in enumerate(ids)))
        self.outstanding.update(zip(range(first, first + len(ids)), ids, strict=True))

    def run(self) -> Bulk:
        window, todo = self.conn.window, self.ids
        i = 0
        while i < len(todo) or self.outstanding:
            room = window - len(self.outstanding)
            if i < len(todo) and room >= window // 2:
                self.send(todo[i:i + room])
                i += room
            self.receive_one()
        return Bulk(self.out, vanished=tuple(self.vanished), denied=tuple(self.denied))

    def receive_one(self) -> None:
        sock = self.conn.sock
        try:
            n = sock.recv()
        except (TimeoutError, BlockingIOError) as err:
            self.retry(err)
            return
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise from_errno(err.errno or errno.EIO, "bulk query") from err
            self.retry(err)
            return
        for event in ts.decode(sock.view, self.conn.family.id, n, source=self.conn.source):
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
            if event.error not in self.skipped:
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
                for event in ts.decode(sock.view, self.conn.family.id, n, source=self.conn.source):
                    self.handle(event)
        finally:
            sock.setblocking(True)  # SO_RCVTIMEO, set apart, still holds



