"""The client side of taskstatsd: a Unix SOCK_SEQPACKET socket speaking the kernel's
generic netlink framing, with the kernel's semantics and an access policy.

Each client connection is a "port".  Requests are answered as kernel/taskstats.c
answers them (family lookup, GET by pid/tgid, REGISTER/DEREGISTER_CPUMASK with
per-CPU listener lists, CGROUPSTATS with an fd passed by SCM_RIGHTS); malformed
or oversized frames get an NLMSG_ERROR with the kernel's errno.  Exit records
are fanned out to the listeners of the CPU the task exited on; a slow client
loses its own records (counted, and told with an ENOBUFS notice carrying the
count in the extended-ACK offset), never delaying anyone else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import cgroupfd, extproto
from .. import genetlink as genl
from .. import netlink as nl
from .. import taskstats as ts
from ..errors import (
    BUG_HINT,
    NetlinkError,
    ProtocolError,
    TaskstatsError,
    errno_of,
)
from ..fields import Scope as IdScope
from ..kernel import Connection
from ..procfs import ProcSource
from ..records import CgroupStats, ExitRecord
from . import schema
from .journal_queries import Scope
from .listeners import ListenerLists, MaskError, check_cpumask, cpumask_maxlen, cpumask_payload
from .namespaces import NsView
from .policy import Policy, client_status, owner_may_see, peer_credentials
from .procmode import ProcfsKernel
from .socketfile import BoundSocket

MAX_FDS = 4
MAX_EXT_MESSAGE = 1024  # bytes of an extended-ACK message
ADMIN_PERM = 0x01
ACCEPTS_PER_TURN = 16
# accept() failing for want of fds or memory: stop accepting for this long (s)
ACCEPT_PAUSE_S = 0.1
ACCEPT_SCARCE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_NOTICE_S = 60.0  # at most one stderr line about it per this many s
# fds under RLIMIT_NOFILE that non-admin clients may not take: root's connections
# and the daemon's own files (journal, /proc) keep working when users hold the rest
FD_RESERVE = 32
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
    ``max_held_fds`` in all (see :meth:`Server._keep_fds`).
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
        :meth:`Server.handle` to judge; trailing zero padding is skipped."""
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


class Server:
    """Accepts clients and answers their requests; see the module docstring."""

    def __init__(self, path: str, kernel: Connection | ProcfsKernel, *, policy: Policy,
                 limits: Limits,
                 status: Callable[[dict[str, Any]], dict[str, Any]],
                 history: Callable[[dict[str, Any], Scope | None],
                                   tuple[list[dict[str, Any]], str]],
                 possible_cpus: list[int], nr_cpu_ids: int) -> None:
        self.path, self.kernel, self.policy, self.limits = path, kernel, policy, limits
        self.status, self.history = status, history
        self.possible, self.nr_cpu_ids = possible_cpus, nr_cpu_ids
        self.listeners = ListenerLists()
        self.peers: dict[int, Peer] = {}
        self.next_id = 1
        self.dropped_client_records = 0
        self.refused_clients = 0
        self.held_fds = 0  # passed fds kept for pending batches (<= max_held_fds)
        self.refused_fds = 0  # passed fds closed because max_held_fds were held
        self.accept_failures = 0  # accept() calls failed for want of fds or memory
        self.accept_paused_until = 0.0  # time.monotonic() until which not to accept
        self._accept_notice = 0.0  # time.monotonic() of the next allowed notice
        self.reply_peak = 0  # the most reply bytes any client had queued
        self.bound = BoundSocket(path)
        self.sock = self.bound.sock
        self._warning = ""  # the current message's parse warning (extended ACK)
        family = kernel.family
        self.family = genl.FamilyInfo(family.id, ts.FAMILY_NAME, family.version, 0, 0,
                                      family.ops)

    # ------------------------------------------------------------ connections

    def accept_some(self) -> list[Peer]:
        """Accept what is pending, at most ACCEPTS_PER_TURN connections (the rest wait
        for the next turn); clients over a limit are refused (see :meth:`accept`).
        When accept() fails for want of fds or memory (EMFILE, ENFILE, ENOBUFS,
        ENOMEM), it is counted and accepting pauses for ACCEPT_PAUSE_S
        (``accept_paused_until``; the caller stops watching the socket till then)."""
        accepted: list[Peer] = []
        for _ in range(ACCEPTS_PER_TURN):
            try:
                peer = self.accept()
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno not in ACCEPT_SCARCE:
                    raise
                self._accept_failed(err)
                break
            if peer is not None:
                accepted.append(peer)
        return accepted

    def _accept_failed(self, err: OSError) -> None:
        """Count a failed accept() and pause accepting; say so on stderr at most
        every ACCEPT_NOTICE_S."""
        now = time.monotonic()
        self.accept_failures += 1
        self.accept_paused_until = now + ACCEPT_PAUSE_S
        if now >= self._accept_notice:
            self._accept_notice = now + ACCEPT_NOTICE_S
            print(f"taskstatsd: cannot accept clients ({err.strerror}): pausing "
                  f"{ACCEPT_PAUSE_S * 1000:.0f} ms (failures so far: "
                  f"{self.accept_failures})", file=sys.stderr, flush=True)

    def accept(self) -> Peer | None:
        """Accept one pending client; None when it was refused.  Raises BlockingIOError
        when nothing is pending."""
        conn, _ = self.sock.accept()
        conn.setblocking(False)
        try:
            cred = peer_credentials(conn)
        except OSError:
            self._refuse(conn, "its credentials could not be read")
            return None
        try:  # /proc about the peer counts only if its pidfd says it is still there
            view = NsView.of(cred.pid)
            known = cred.alive()
        except OSError:
            known = False
        finally:
            cred.close()
        if not known:  # identity cannot be established: refuse (fail closed)
            self._refuse(conn, "its process could not be identified (it exited?)")
            return None
        admin = self.policy.is_admin(cred)
        refusal = self._refusal(cred.uid, admin)
        if refusal:
            self._refuse(conn, refusal)
            return None
        peer = Peer(conn, self.next_id, cred.pid, cred.uid, cred.gid, admin, view=view)
        self.next_id += 1
        self.peers[peer.id] = peer
        return peer

    def _refusal(self, uid: int, admin: bool) -> str:
        """Why a new client of ``uid`` may not connect ("" when it may)."""
        limits = self.limits
        if len(self.peers) >= limits.max_clients:
            return f"all {limits.max_clients} client connections are taken"
        if admin:
            return ""
        if len(self.peers) >= limits.max_clients - limits.admin_reserved:
            return (f"the last {limits.admin_reserved} of {limits.max_clients} client "
                    "connections are kept for root and the admin group")
        if _fds_scarce():
            return (f"taskstatsd is short of file descriptors (the last {FD_RESERVE} "
                    "under its RLIMIT_NOFILE are kept for root and the admin group)")
        held = sum(1 for p in self.peers.values() if p.uid == uid)
        if held >= limits.max_clients_per_uid:
            return (f"uid {uid} holds {held} connections, the most one user may "
                    "(max_clients_per_uid): close some")
        return ""

    def _refuse(self, conn: socket.socket, why: str) -> None:
        """Tell a refused client why (EUSERS, sequence 0, before closing), then close."""
        self.refused_clients += 1
        with contextlib.suppress(OSError):
            conn.send(nl.encode_error(errno.EUSERS, b"", seq=0, pid=0,
                                      ext_message=f"taskstatsd refused the connection: {why}"))
        conn.close()

    def drop(self, peer: Peer) -> None:
        """Forget a client: close it and prune it from every CPU's list."""
        self.listeners.prune(peer.id)
        self.peers.pop(peer.id, None)
        self._end_batch(peer)
        peer.sock.close()

    def close(self) -> None:
        """Close every client and the listening socket; remove the socket file."""
        for peer in list(self.peers.values()):
            self.drop(peer)
        self.bound.close()

    # ------------------------------------------------------------ requests

    def wants_requests(self, peer: Peer) -> bool:
        """Whether to read ``peer``'s next datagram: none is half answered and its
        queued answers are within ``reply_bytes`` (backpressure)."""
        return peer.batch is None and peer.reply_bytes < self.limits.reply_bytes

    def has_work(self, peer: Peer) -> bool:
        """Whether ``peer`` has request messages received and not yet answered, with
        room for their answers."""
        return peer.batch is not None and peer.reply_bytes < self.limits.reply_bytes

    def readable(self, peer: Peer) -> bool:
        """One turn of a client: answer at most ``turn_messages`` request messages for
        at most ``turn_seconds``, reading a datagram when none is pending, and stop
        early when its queued answers reach ``reply_bytes``; then send what it can.
        False when the client has gone."""
        budget, until = self.limits.turn_messages, time.monotonic() + self.limits.turn_seconds
        while budget > 0 and peer.reply_bytes < self.limits.reply_bytes \
                and time.monotonic() < until:
            if peer.batch is None:
                alive = self._receive(peer)
                if not alive:
                    return False
                if peer.batch is None:
                    break
            frame = peer.batch.next_frame()
            if frame is None:
                self._end_batch(peer)
                continue
            self.handle(peer, frame, peer.batch.fds)
            budget -= 1
        return self.flush(peer)

    def _receive(self, peer: Peer) -> bool:
        """Read one datagram into ``peer.batch`` (or answer it at once when it is
        refused whole); False when the client has gone."""
        try:
            data, fds, flags, _ = socket.recv_fds(peer.sock, self.limits.max_request + 1,
                                                  MAX_FDS, socket.MSG_TRUNC)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data and not fds:
            return False
        if flags & socket.MSG_CTRUNC:
            self._error(peer, errno.EINVAL, data, "too many file descriptors")
        elif len(data) > self.limits.max_request:
            self._error(peer, errno.EMSGSIZE, data, "request too large")
        elif data:
            peer.batch = Batch(data, self._keep_fds(peer, data, fds))
            return True
        _close_all(fds)  # an empty datagram has no message to answer
        return True

    def _keep_fds(self, peer: Peer, data: bytes, fds: list[int]) -> list[int]:
        """The passed fds to keep while ``data`` is answered; the others are closed
        at once.  Only CGROUPSTATS and TASKSTATSD CGROUP use one (the first), so a
        datagram without either keeps none (the kernel drops fds sent to a netlink
        socket); past ``max_held_fds`` kept in all, none, and ``peer.fd_refused``
        makes its cgroup requests fail with ENFILE."""
        keep = fds[:1] if fds and self._wants_fd(data) else []
        if keep and self.held_fds >= self.limits.max_held_fds:
            keep, peer.fd_refused = [], True
            self.refused_fds += 1
        _close_all(fds[len(keep):])
        self.held_fds += len(keep)
        return keep

    def _wants_fd(self, data: bytes) -> bool:
        """Whether a message of ``data`` is a cgroup request (which reads an fd)."""
        for msg in nl.walk(data):
            if msg.end - msg.start < genl.GENL_HEADER.size:
                continue
            cmd = msg.data[msg.start]
            if (msg.type, cmd) in ((self.family.id, ts.CGROUPSTATS_CMD_GET),
                                   (extproto.FAMILY_ID, extproto.CMD_CGROUP)):
                return True
        return False

    def _end_batch(self, peer: Peer) -> None:
        """Forget ``peer``'s batch, closing its kept fds."""
        if peer.batch is not None:
            self.held_fds -= len(peer.batch.fds)
            _close_all(peer.batch.fds)
            peer.batch = None
        peer.fd_refused = False

    def handle(self, peer: Peer, data: bytes, fds: list[int]) -> None:
        """Answer every message of one datagram, walked as the kernel walks it (a
        malformed header ends the walk silently: :func:`~pytaskstats.netlink.walk`)."""
        for msg in nl.walk(data):
            self._message(peer, msg, fds)

    def _message(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        """One message, as netlink_rcv_skb() treats it: without NLM_F_REQUEST, or of
        a control type, it is not processed (only acked, with NLM_F_ACK); a failure
        is answered with NLMSG_ERROR; a success is acked with NLM_F_ACK."""
        self._warning = ""
        if not msg.flags & nl.NLM_F_REQUEST or msg.type < nl.NLMSG_MIN_TYPE:
            self._ack(peer, msg)
            return
        request = bytes(msg.data[msg.start - nl.HEADER.size: msg.end])
        try:
            self._dispatch(peer, msg, fds)
        except nl.PolicyError as err:
            self._error(peer, err.errno, request, str(err), msg.seq, offset=err.offset,
                        policy=err.policy)
        except Exception as err:  # a client frame must never stop the daemon
            code, text = _answer(err)
            self._error(peer, code, request, text or self._warning, msg.seq)
        else:
            self._ack(peer, msg)

    def _dispatch(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        if msg.type not in (genl.GENL_ID_CTRL, self.family.id, extproto.FAMILY_ID):
            raise NetlinkError(f"no family {msg.type}", errno=errno.ENOENT)
        if msg.end - msg.start < genl.GENL_HEADER.size:
            raise NetlinkError("no genlmsghdr", errno=errno.EINVAL)
        if msg.type == extproto.FAMILY_ID:
            self._extension(peer, msg, fds)
        elif msg.flags & nl.NLM_F_DUMP == nl.NLM_F_DUMP:
            raise NetlinkError("no dumps here", errno=errno.EOPNOTSUPP)
        elif msg.type == genl.GENL_ID_CTRL:
            self._family(peer, msg)
        else:
            self._taskstats(peer, msg, fds)

    def _family(self, peer: Peer, msg: nl.Message) -> None:
        """CTRL_CMD_GETFAMILY by name (which wins) or id; other nlctrl commands are
        EOPNOTSUPP, as nlctrl answers commands it lacks."""
        cmd, _ = genl.genl_header(msg)
        if cmd != genl.CTRL_CMD_GETFAMILY:
            raise NetlinkError(f"no nlctrl command {cmd}", errno=errno.EOPNOTSUPP)
        query, self._warning = genl.decode_family_query(msg)
        if query is None:
            raise NetlinkError("neither a family name nor an id", errno=errno.EINVAL)
        ours = (self.family, genl.FamilyInfo(extproto.FAMILY_ID, extproto.FAMILY_NAME, 1,
                                             0, 0, extproto.OPS))
        info = next((f for f in ours if query in (f.name, f.id)), None)
        if info is None:
            raise NetlinkError(f"no family {query}", errno=errno.ENOENT)
        self._reply(peer, genl.encode_family(info, seq=msg.seq, pid=peer.id))

    def _taskstats(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        cmd, _ = genl.genl_header(msg)
        if cmd not in (ts.CMD_GET, ts.CGROUPSTATS_CMD_GET):
            raise NetlinkError(f"no taskstats command {cmd}", errno=errno.EOPNOTSUPP)
        req = ts.decode_request(msg)
        self._warning = req.warning
        if req.op in ("pid", "tgid"):
            assert isinstance(req.value, int)
            view = peer.view
            host = view.host_pid(req.value) if view else req.value
            stats = self._query(peer, req.op, host)
            reply = ts.StatsReply(msg.seq, req.op, req.value, view.stats(stats) if view
                                  else stats)
            self._reply(peer, ts.encode_stats_reply(self.family.id, reply, pid=peer.id))
        elif req.op in ("register", "deregister"):
            assert isinstance(req.value, str)
            cpus = check_cpumask(cpumask_payload(msg, req.op), self.possible, self.nr_cpu_ids,
                                 cpumask_maxlen(self.nr_cpu_ids))
            if req.op == "register":
                self.listeners.register(peer.id, cpus)
                if peer.view:
                    peer.view.rescan(force=True)
            else:
                self.listeners.deregister(peer.id, cpus)
        elif req.op == "cgroup":
            _check_fd(peer, fds)
            if cgroupfd.kind(fds[0]) == "cgroup2":  # the kernel counts v1 only
                raise NetlinkError("a cgroup2 directory", errno=errno.EINVAL)
            stats_cg = self.kernel.cgroup(fds[0])
            self._reply(peer, ts.encode_cgroupstats_reply(
                self.family.id, ts.CgroupStatsReply(msg.seq, stats_cg), pid=peer.id))
        else:
            raise NetlinkError("no attribute", errno=errno.EINVAL)

    def _query(self, peer: Peer, scope: IdScope, ident: int) -> Any:
        stats = self.kernel.query(scope, ident)
        if peer.admin:
            return stats
        # the /proc rule (see .policy): what /proc/PID/io would show this client
        if not owner_may_see(ident, peer.uid, peer.gid):
            raise NetlinkError("not the client's task", errno=errno.EPERM)
        return stats

    def _extension(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        """A TASKSTATSD request (see :mod:`pytaskstats.extproto`), parameters checked by
        :func:`.schema.check` before use."""
        cmd, _ = genl.genl_header(msg)
        if cmd not in schema.SCHEMAS:
            raise NetlinkError(f"unknown command {cmd}", errno=errno.EOPNOTSUPP)
        params = schema.check(cmd, extproto.decode_json(msg))
        if cmd == extproto.CMD_STATUS:
            self._reply(peer, extproto.encode_reply(self._status(peer, params), seq=msg.seq,
                                                    pid=peer.id))
        elif cmd == extproto.CMD_HISTORY:
            rows, note = self.history(params, self._scope(peer))
            if peer.view is not None:
                rows = [peer.view.row(row) for row in rows]
            for part in extproto.encode_rows(rows, seq=msg.seq, pid=peer.id,
                                             note=self._ext(peer, note),
                                             max_bytes=self.limits.history_bytes,
                                             notes=peer.ext_ack):
                self._reply(peer, part)
        elif cmd == extproto.CMD_SET_OPTIONS:
            peer.cap_ack = params.get("cap_ack", peer.cap_ack)
            peer.ext_ack = params.get("ext_ack", peer.ext_ack)
        else:
            _check_fd(peer, fds)
            counts = cgroup2_counts(fds)
            self._reply(peer, extproto.encode_reply(
                {k: v for k, v in counts._asdict().items() if k.startswith("nr_")},
                seq=msg.seq, pid=peer.id))

    @staticmethod
    def _scope(peer: Peer) -> Scope | None:
        """The journal rows ``peer`` may read (see :mod:`.policy`); None: all."""
        view = peer.view
        pidns = view.chain if view is not None and view.level > 0 else None
        if peer.admin and pidns is None:
            return None
        uid, gid = (None, None) if peer.admin else (peer.uid, peer.gid)
        return Scope(uid, gid, pidns, view.level if pidns is not None and view else 0)

    def _status(self, peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
        """The status document as ``peer`` may see it (see :mod:`.policy`); only
        admins may make it flush the journal first (a cost on every user)."""
        doc = self.status(params if peer.admin else {})
        if peer.admin and peer.view is None:
            return doc
        listening = bool(self.listeners.cpus_of(peer.id))
        return client_status(doc, {
            "uid": peer.uid, "gid": peer.gid, "admin": peer.admin,
            "namespaced": peer.view is not None, "listening": listening,
            "dropped_records": peer.dropped,
            "unattributed": peer.view.unattributed if peer.view is not None else 0})

    def _ack(self, peer: Peer, msg: nl.Message) -> None:
        """The ACK of ``msg`` if it asked for one (NLM_F_ACK), with the parse warning
        when the client opted in to extended ACKs."""
        if msg.flags & nl.NLM_F_ACK:
            header = bytes(msg.data[msg.start - nl.HEADER.size: msg.start])
            self._reply(peer, nl.encode_error(0, header, seq=msg.seq, pid=peer.id,
                                              ext_message=self._ext(peer, self._warning)))

    def _error(self, peer: Peer, err: int, request: bytes, text: str, seq: int = 0, *,
               offset: int | None = None, policy: bytes = b"") -> None:
        """NLMSG_ERROR ``err`` for the message at the start of ``request``: echoing it
        whole, or only its header when the client set cap_ack (or it is over the
        request limit); ``text``, ``offset`` and ``policy`` only when it set ext_ack."""
        capped = peer.cap_ack or len(request) > self.limits.max_request
        ext = peer.ext_ack
        self._reply(peer, nl.encode_error(
            err, request, seq=seq, pid=peer.id, capped=capped,
            ext_message=self._ext(peer, text), ext_offset=offset if ext else None,
            ext_policy=policy if ext else b""))

    @staticmethod
    def _ext(peer: Peer, text: str) -> str:
        """``text`` for an extended ACK, bounded and valid UTF-8; "" without ext_ack."""
        if not peer.ext_ack:
            return ""
        return text.encode("utf-8", "replace")[:MAX_EXT_MESSAGE].decode("utf-8", "ignore")

    def _reply(self, peer: Peer, data: bytes) -> None:
        peer.replies.append(data)
        peer.reply_bytes += len(data)
        self.reply_peak = max(self.reply_peak, peer.reply_bytes)

    # ------------------------------------------------------------ exit records

    def namespaced_listeners(self) -> list[Peer]:
        """Registered listeners that see through a namespace translation."""
        return [p for p in self.peers.values()
                if p.view is not None and self.listeners.cpus_of(p.id)]

    def unattributed(self) -> int:
        """Exits of namespaced clients' tasks that could not be placed (see
        :mod:`.namespaces`), summed over connected clients."""
        return sum(p.view.unattributed for p in self.peers.values() if p.view is not None)

    def learn_fork(self, pid: int) -> None:
        """Place a new task in the namespaced listeners' views while it lives (fed by
        the proc connector's fork events)."""
        for peer in self.namespaced_listeners():
            assert peer.view is not None
            peer.view.ns_pid(pid)

    def refresh_views(self) -> None:
        """Keep the pid maps of namespaced listeners fresh (rate-limited scans), so
        that short-lived tasks reaped before their record is read can be placed."""
        for peer in self.namespaced_listeners():
            assert peer.view is not None
            peer.view.rescan()

    def publish(self, record: ExitRecord, raw: bytes, owner_sees: bool | None = None) -> None:
        """Queue an exit message for every listener of its CPU allowed to see it (an
        admin, or its owner when ``owner_sees``: see :mod:`.policy`), translated into
        the listener's namespaces where they differ from ours."""
        uid, gid = record.task.ac_uid, record.task.ac_gid
        for pid in self.listeners.for_cpu(record.cpu):
            peer = self.peers.get(pid)
            if peer is None or not (peer.admin or (
                    owner_sees and uid == peer.uid and gid == peer.gid)):
                continue
            if peer.view is not None:
                seen = peer.view.exit(record)
                if seen is None:
                    continue
                self._enqueue(peer, ts.encode_exit(self.family.id, seen))
            else:
                self._enqueue(peer, raw)

    def _enqueue(self, peer: Peer, raw: bytes) -> None:
        if (len(peer.records) >= self.limits.queue_records
                or peer.record_bytes + len(raw) > self.limits.record_bytes):
            peer.dropped_unsent += 1
            peer.dropped += 1
            self.dropped_client_records += 1
        else:
            peer.records.append(raw)
            peer.record_bytes += len(raw)

    def flush(self, peer: Peer) -> bool:
        """Send what is queued without blocking; False when the client has gone."""
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


def cgroup2_counts(fds: list[int]) -> CgroupStats:
    """Task state counts, from /proc, of the cgroup2 directory passed as ``fds[0]``
    (the TASKSTATSD CGROUP command), read as :mod:`pytaskstats.cgroupfd` says; NetlinkError
    EBADF without an fd, EINVAL when it is not a cgroup2 directory."""
    if not fds:
        raise NetlinkError("no fd passed", errno=errno.EBADF)
    if cgroupfd.kind(fds[0]) != "cgroup2":
        raise NetlinkError("not a cgroup2 directory", errno=errno.EINVAL,
                           ext_message="the fd is not a cgroup2 directory (for a cgroup v1 "
                           "directory, use CGROUPSTATS)")
    return ProcSource().count_states(cgroupfd.thread_ids(fds[0], "cgroup.threads"))


def _answer(err: Exception) -> tuple[int, str]:
    """The errno and extended-ACK text answering a failed request (see the module
    docstring); anything unexpected is a bug, said on stderr and answered EIO."""
    if isinstance(err, MaskError | NetlinkError):
        return err.errno, str(err) if isinstance(err, MaskError) else err.ext_message
    if isinstance(err, ProtocolError | ValueError):  # SchemaError is a ValueError
        return errno.EINVAL, str(err)
    if isinstance(err, TaskstatsError):
        return errno_of(err), ""
    print(f"taskstatsd: internal error on a request: {err!r} ({BUG_HINT})", file=sys.stderr)
    return errno.EIO, "internal error"


def _check_fd(peer: Peer, fds: list[int]) -> None:
    """NetlinkError unless an fd was passed and kept for this request: EBADF when
    none was passed, ENFILE when it was closed because max_held_fds were held."""
    if fds:
        return
    if peer.fd_refused:
        raise NetlinkError("passed fd not kept", errno=errno.ENFILE,
                           ext_message="taskstatsd holds too many passed fds "
                           "(max_held_fds): try again")
    raise NetlinkError("no fd passed", errno=errno.EBADF)


def _fds_scarce() -> bool:
    """Whether this process has fewer than FD_RESERVE fds left under its soft
    RLIMIT_NOFILE."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return False
    return len(os.listdir("/proc/self/fd")) - 1 + FD_RESERVE > soft


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
