"""The client side of taskstatsd: a Unix SOCK_SEQPACKET socket speaking the kernel's
generic netlink framing, with the kernel's semantics and an access policy.

Each client connection is a "port".  Requests are answered as kernel/taskstats.c
answers them (family lookup, GET by pid/tgid, REGISTER/DEREGISTER_CPUMASK with
per-CPU listener lists, CGROUPSTATS with an fd passed by SCM_RIGHTS); malformed
or oversized frames get an NLMSG_ERROR with the kernel's errno.  Exit records
are fanned out to the listeners of the CPU the task exited on; a slow client
loses its own records (counted, and told with an ENOBUFS notice carrying the
count in the extended-ACK offset), never delaying anyone else.

:class:`Server` is the face the daemon's event loop uses.  It owns the socket, the
peer table and a client's turn (reading datagrams and the fds passed with them,
answering a bounded number of messages, sending), and composes the parts: who may
connect (:mod:`.admission`), the peer and its limits (:mod:`.peers`), answering
requests (:mod:`.dispatch`, :mod:`.extension`, :mod:`.replies`) and the exit-record
fan-out (:mod:`.fanout`).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from .. import extproto
from .. import genetlink as genl
from .. import netlink as nl
from .. import taskstats as ts
from ..backends import Answers
from .admission import Admission
from .dispatch import Dispatcher
from .extension import Extension, cgroup2_counts
from .fanout import Fanout
from .journal_queries import Scope
from .listeners import ListenerLists
from .peers import Batch, Limits, Peer, flush
from .policy import Policy
from .replies import Replies
from .socketfile import BoundSocket

__all__ = ["Batch", "Limits", "Peer", "Server", "cgroup2_counts"]

MAX_FDS = 4  # fds read with one datagram (more: EINVAL, all closed)


class Server:
    """Accepts clients and answers their requests; see the module docstring.

    Counters for the status document: ``held_fds`` passed fds kept for pending
    batches (<= max_held_fds), ``refused_fds`` closed because that many were held,
    and the parts' counters below (``refused_clients``, ``accept_failures``,
    ``dropped_client_records``, ``reply_peak``).
    """

    def __init__(self, path: str, kernel: Answers, *, policy: Policy,
                 limits: Limits,
                 status: Callable[[dict[str, Any]], dict[str, Any]],
                 history: Callable[[dict[str, Any], Scope | None],
                                   tuple[list[dict[str, Any]], str]],
                 possible_cpus: list[int], nr_cpu_ids: int) -> None:
        self.path, self.kernel, self.policy, self.limits = path, kernel, policy, limits
        self.listeners = ListenerLists()
        self.peers: dict[int, Peer] = {}
        self.held_fds = 0
        self.refused_fds = 0
        self.bound = BoundSocket(path)
        self.sock = self.bound.sock
        family = kernel.family
        self.family = genl.FamilyInfo(family.id, ts.FAMILY_NAME, family.version, 0, 0,
                                      family.ops)
        self.replies = Replies(limits)
        self.admission = Admission(self.sock, policy, limits, self.peers)
        self.fanout = Fanout(self.peers, self.listeners, limits, self.family.id)
        extension = Extension(status=status, history=history, listeners=self.listeners,
                              limits=limits, replies=self.replies)
        self.dispatcher = Dispatcher(family=self.family, kernel=kernel,
                                     listeners=self.listeners, possible=possible_cpus,
                                     nr_cpu_ids=nr_cpu_ids, replies=self.replies,
                                     extension=extension)
        # what the event loop calls that one part does alone (bound, not wrapped:
        # publish runs per exit record); see each for its contract
        self.accept_some = self.admission.accept_some
        self.handle = self.dispatcher.handle
        self.publish = self.fanout.publish
        self.namespaced_listeners = self.fanout.namespaced_listeners
        self.unattributed = self.fanout.unattributed
        self.learn_fork = self.fanout.learn_fork
        self.refresh_views = self.fanout.refresh_views
        self.flush = flush

    # ------------------------------------------------------------ counters

    @property
    def refused_clients(self) -> int:
        """Connections refused (see :mod:`.admission`)."""
        return self.admission.refused

    @property
    def accept_failures(self) -> int:
        """accept() calls failed for want of fds or memory."""
        return self.admission.failures

    @property
    def accept_paused_until(self) -> float:
        """time.monotonic() until which not to accept; set 0 to accept again."""
        return self.admission.paused_until

    @accept_paused_until.setter
    def accept_paused_until(self, until: float) -> None:
        self.admission.paused_until = until

    @property
    def dropped_client_records(self) -> int:
        """Exit records dropped for clients too slow, in all."""
        return self.fanout.dropped

    @property
    def reply_peak(self) -> int:
        """The most reply bytes any client had queued."""
        return self.replies.peak

    # ------------------------------------------------------------ connections

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

    # ------------------------------------------------------------ a client's turn

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
        ahead: Batch | None = None  # the batch whose next GETs were fetched ahead
        try:
            while budget > 0 and peer.reply_bytes < self.limits.reply_bytes \
                    and time.monotonic() < until:
                if peer.batch is None:
                    alive = self._receive(peer)
                    if not alive:
                        return False
                    if peer.batch is None:
                        break
                if peer.batch is not ahead:
                    ahead = peer.batch
                    self.dispatcher.prefetch(peer, ahead.peek(budget))
                frame = peer.batch.next_frame()
                if frame is None:
                    self._end_batch(peer)
                    continue
                self.handle(peer, frame, peer.batch.fds)
                budget -= 1
        finally:
            self.dispatcher.prefetched.clear()
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
            self.replies.error(peer, errno.EINVAL, data, "too many file descriptors")
        elif len(data) > self.limits.max_request:
            self.replies.error(peer, errno.EMSGSIZE, data, "request too large")
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


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
