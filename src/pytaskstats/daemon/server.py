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
import socket
import stat
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import genetlink as genl
from .. import netlink as nl
from .. import taskstats as ts
from ..errors import (
    BUG_HINT,
    AccessDenied,
    NetlinkError,
    NoSuchTask,
    ProtocolError,
    TaskstatsError,
    Unsupported,
)
from ..kernel import Connection
from ..procfs import ProcSource
from ..records import CgroupStats, ExitRecord
from . import protocol
from .listeners import ListenerLists, MaskError, check_cpumask
from .namespaces import NsView
from .policy import Policy, owner_may_see, peer_credentials
from .procmode import ProcfsKernel

MAX_FDS = 4
ADMIN_PERM = 0x01


@dataclass
class Limits:
    """Per-daemon limits: clients, request bytes, queued exit records per client."""

    max_clients: int = 256
    max_request: int = 65536
    queue_records: int = 8192


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
    dropped_unsent: int = 0  # dropped since the last ENOBUFS notice
    dropped: int = 0
    want_write: bool = False
    view: NsView | None = None  # set when the client is in other namespaces


class Server:
    """Accepts clients and answers their requests; see the module docstring."""

    def __init__(self, path: str, kernel: Connection | ProcfsKernel, *, policy: Policy,
                 limits: Limits,
                 status: Callable[[], dict[str, Any]],
                 history: Callable[[dict[str, Any]], list[dict[str, Any]]],
                 possible_cpus: list[int], nr_cpu_ids: int) -> None:
        self.path, self.kernel, self.policy, self.limits = path, kernel, policy, limits
        self.status, self.history = status, history
        self.possible, self.nr_cpu_ids = possible_cpus, nr_cpu_ids
        self.listeners = ListenerLists()
        self.peers: dict[int, Peer] = {}
        self.next_id = 1
        self.dropped_client_records = 0
        self.sock = _listen(path)
        family = kernel.family
        self.family = genl.FamilyInfo(family.id, ts.FAMILY_NAME, family.version, 0, 0,
                                      family.ops)

    # ------------------------------------------------------------ connections

    def accept(self) -> Peer | None:
        """Accept one pending client (None when over the limit or nothing pending)."""
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return None
        if len(self.peers) >= self.limits.max_clients:
            conn.close()
            return None
        conn.setblocking(False)
        try:
            cred = peer_credentials(conn)
        except OSError:
            conn.close()
            return None
        try:  # /proc about the peer counts only if its pidfd says it is still there
            view = NsView.of(cred.pid)
            known = cred.alive()
        except OSError:
            known = False
        finally:
            cred.close()
        if not known:
            conn.close()  # identity cannot be established: refuse (fail closed)
            return None
        peer = Peer(conn, self.next_id, cred.pid, cred.uid, cred.gid,
                    self.policy.is_admin(cred), view=view)
        self.next_id += 1
        self.peers[peer.id] = peer
        return peer

    def drop(self, peer: Peer) -> None:
        """Forget a client: close it and prune it from every CPU's list."""
        self.listeners.prune(peer.id)
        self.peers.pop(peer.id, None)
        peer.sock.close()

    def close(self) -> None:
        """Close every client and the listening socket; remove the socket file."""
        for peer in list(self.peers.values()):
            self.drop(peer)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # ------------------------------------------------------------ requests

    def readable(self, peer: Peer) -> bool:
        """Read and answer one datagram; False when the client has gone."""
        try:
            data, fds, flags, _ = socket.recv_fds(peer.sock, self.limits.max_request + 1,
                                                  MAX_FDS, socket.MSG_TRUNC)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data and not fds:
            return False
        try:
            if flags & socket.MSG_CTRUNC:
                self._error(peer, errno.EINVAL, data, "too many file descriptors")
            elif len(data) > self.limits.max_request:
                self._error(peer, errno.EMSGSIZE, data, "request too large")
            else:
                self.handle(peer, data, fds)
        finally:
            for fd in fds:
                os.close(fd)
        return self.flush(peer)

    def handle(self, peer: Peer, data: bytes, fds: list[int]) -> None:
        """Answer every message of one datagram."""
        try:
            messages = nl.split_messages(data)
        except ProtocolError as err:
            self._error(peer, errno.EINVAL, data, str(err))
            return
        if not messages:
            self._error(peer, errno.EINVAL, data, "no netlink message")
        for msg in messages:
            header = bytes(data[msg.start - nl.HEADER.size: msg.start])
            try:
                self._dispatch(peer, msg, fds)
            except ProtocolError as err:
                self._error(peer, errno.EINVAL, header, str(err), msg.seq)
            except MaskError as err:
                self._error(peer, err.errno, header, str(err), msg.seq)
            except NetlinkError as err:
                self._error(peer, err.errno, header, "", msg.seq)
            except TaskstatsError as err:
                self._error(peer, _errno_of(err), header, "", msg.seq)
            except (ValueError, TypeError) as err:  # bad parameters of a daemon request
                self._error(peer, errno.EINVAL, header, str(err), msg.seq)
            except Exception as err:  # a client frame must never stop the daemon
                print(f"taskstatsd: internal error on a request: {err!r} ({BUG_HINT})",
                      file=sys.stderr)
                self._error(peer, errno.EIO, header, "internal error", msg.seq)

    def _dispatch(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        if msg.type == genl.GENL_ID_CTRL:
            self._family(peer, msg)
        elif msg.type == self.family.id:
            self._taskstats(peer, msg, fds)
        elif msg.type == protocol.FAMILY_ID:
            self._extension(peer, msg)
        elif msg.type >= nl.NLMSG_MIN_TYPE:
            raise NetlinkError("unknown family", errno=errno.ENOENT)
        # NOOP/DONE/ERROR from a client are ignored, as the kernel does

    def _family(self, peer: Peer, msg: nl.Message) -> None:
        name = genl.decode_get_family(msg)
        if name == ts.FAMILY_NAME:
            info = self.family
        elif name == protocol.FAMILY_NAME:
            info = genl.FamilyInfo(protocol.FAMILY_ID, name, 1, 0, 0, protocol.OPS)
        else:
            raise NetlinkError(f"no family {name}", errno=errno.ENOENT)
        self._reply(peer, genl.encode_family(info, seq=msg.seq, pid=peer.id))
        self._ack(peer, msg)

    def _taskstats(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        req = ts.decode_request(msg)
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
            cpus = check_cpumask(req.value, self.possible, self.nr_cpu_ids)
            if req.op == "register":
                self.listeners.register(peer.id, cpus)
                if peer.view:
                    peer.view.rescan(force=True)
            else:
                self.listeners.deregister(peer.id, cpus)
        elif req.op == "cgroup":
            if not fds:
                raise NetlinkError("no fd passed", errno=errno.EBADF)
            stats_cg = cgroup_counts(self.kernel, fds[0])
            self._reply(peer, ts.encode_cgroupstats_reply(
                self.family.id, ts.CgroupStatsReply(msg.seq, stats_cg), pid=peer.id))
        else:
            raise NetlinkError("no attribute", errno=errno.EINVAL)
        self._ack(peer, msg)

    def _query(self, peer: Peer, scope: str, ident: int) -> Any:
        stats = self.kernel.query(scope, ident)
        if peer.admin:
            return stats
        # the /proc rule (see .policy): what /proc/PID/io would show this client
        if not owner_may_see(ident, peer.uid, peer.gid):
            raise NetlinkError("not the client's task", errno=errno.EPERM)
        return stats

    def _extension(self, peer: Peer, msg: nl.Message) -> None:
        cmd, _ = genl.genl_header(msg)
        params = protocol.decode_json(msg)
        if not isinstance(params, dict):
            raise ProtocolError("request parameters must be a JSON object")
        if cmd == protocol.CMD_STATUS:
            self._reply(peer, protocol.encode_reply(self.status(), seq=msg.seq, pid=peer.id))
        elif cmd == protocol.CMD_HISTORY:
            if not peer.admin:
                params["uid"] = peer.uid
            for part in protocol.encode_rows(self.history(params), seq=msg.seq, pid=peer.id):
                self._reply(peer, part)
        else:
            raise NetlinkError(f"unknown command {cmd}", errno=errno.EOPNOTSUPP)

    def _ack(self, peer: Peer, msg: nl.Message) -> None:
        if msg.flags & nl.NLM_F_ACK:
            header = bytes(msg.data[msg.start - nl.HEADER.size: msg.start])
            self._reply(peer, nl.encode_error(0, header, seq=msg.seq, pid=peer.id))

    def _error(self, peer: Peer, err: int, header: bytes, text: str, seq: int = 0) -> None:
        self._reply(peer, nl.encode_error(err, header[:nl.HEADER.size], seq=seq, pid=0,
                                          ext_message=text))

    def _reply(self, peer: Peer, data: bytes) -> None:
        peer.replies.append(data)

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

    def publish(self, record: ExitRecord, raw: bytes) -> None:
        """Queue an exit message for every listener of its CPU allowed to see it,
        translated into the listener's namespaces where they differ from ours."""
        uid = record.task.ac_uid
        for pid in self.listeners.for_cpu(record.cpu):
            peer = self.peers.get(pid)
            if peer is None or not (peer.admin or uid == peer.uid):
                continue
            if peer.view is not None:
                seen = peer.view.exit(record)
                if seen is None:
                    continue
                self._enqueue(peer, ts.encode_exit(self.family.id, seen))
            else:
                self._enqueue(peer, raw)

    def _enqueue(self, peer: Peer, raw: bytes) -> None:
        if len(peer.records) >= self.limits.queue_records:
            peer.dropped_unsent += 1
            peer.dropped += 1
            self.dropped_client_records += 1
        else:
            peer.records.append(raw)

    def flush(self, peer: Peer) -> bool:
        """Send what is queued without blocking; False when the client has gone."""
        try:
            while peer.replies:
                peer.sock.send(peer.replies[0])
                peer.replies.popleft()
            if peer.dropped_unsent:
                peer.sock.send(nl.encode_error(
                    errno.ENOBUFS, b"", seq=0, pid=0, ext_offset=peer.dropped_unsent,
                    ext_message=f"{peer.dropped_unsent} exit records dropped: client too slow"))
                peer.dropped_unsent = 0
            while peer.records:
                peer.sock.send(peer.records[0])
                peer.records.popleft()
        except BlockingIOError:
            peer.want_write = True
            return True
        except OSError:
            return False
        peer.want_write = False
        return True


def cgroup_counts(kernel: Connection | ProcfsKernel, fd: int) -> CgroupStats:
    """cgroupstats of the directory open as ``fd``: the kernel's for cgroup v1; counted
    from /proc for cgroup2, which the kernel refuses (see docs/procfs.md)."""
    where = f"/proc/self/fd/{fd}"
    if os.path.exists(f"{where}/cgroup.threads"):
        return ProcSource().cgroup(os.readlink(where))
    return kernel.cgroup(fd)


def _errno_of(err: TaskstatsError) -> int:
    if isinstance(err, NoSuchTask):
        return errno.ESRCH
    if isinstance(err, AccessDenied):
        return errno.EPERM
    if isinstance(err, Unsupported):
        return errno.ENOENT
    return errno.EIO


def _listen(path: str) -> socket.socket:
    """Bind the client socket at ``path``, reachable by every local user."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # a stale socket from a previous run
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.bind(path)
    os.chmod(path, 0o666)
    sock.listen(128)
    sock.setblocking(False)
    return sock
