"""Who may connect to taskstatsd: accepting clients, establishing who they are, and
refusing the ones over a limit.

:class:`Admission` owns the listening socket's accept side: it reads a new
client's credentials (SO_PEERCRED, and its namespaces only while its pidfd says it
is still the process that connected: :mod:`.policy`), fails closed when that cannot
be established, holds back the last connections and fds for root and the admin
group, bounds connections per uid, and tells a refused client why (EUSERS) before
closing.  It survives accept() failing for want of fds or memory by pausing; it
adds admitted peers to the server's peer table and counts what it refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import sys
import time

from .. import netlink as nl
from .namespaces import NsView
from .peers import Limits, Peer
from .policy import PeerCred, Policy, peer_credentials

ACCEPTS_PER_TURN = 16
# accept() failing for want of fds or memory: stop accepting for this long (s)
ACCEPT_PAUSE_S = 0.1
ACCEPT_SCARCE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_NOTICE_S = 60.0  # at most one stderr line about it per this many s
# fds under RLIMIT_NOFILE that non-admin clients may not take: root's connections
# and the daemon's own files (journal, /proc) keep working when users hold the rest
FD_RESERVE = 32


class Admission:
    """Accepts clients on ``sock`` into ``peers`` (id -> Peer) under ``limits``.

    Counters: ``refused`` clients, accept ``failures``; ``paused_until`` is the
    time.monotonic() until which not to accept (the caller may reset it to 0).
    """

    def __init__(self, sock: socket.socket, policy: Policy, limits: Limits,
                 peers: dict[int, Peer]) -> None:
        self.sock, self.policy, self.limits, self.peers = sock, policy, limits, peers
        self.next_id = 1
        self.refused = 0
        self.failures = 0
        self.paused_until = 0.0
        self._notice = 0.0  # time.monotonic() of the next allowed notice

    def accept_some(self) -> list[Peer]:
        """Accept what is pending, at most ACCEPTS_PER_TURN connections (the rest wait
        for the next turn); clients over a limit are refused (see :meth:`accept`).
        When accept() fails for want of fds or memory (EMFILE, ENFILE, ENOBUFS,
        ENOMEM), it is counted and accepting pauses for ACCEPT_PAUSE_S
        (``paused_until``; the caller stops watching the socket till then)."""
        accepted: list[Peer] = []
        for _ in range(ACCEPTS_PER_TURN):
            try:
                peer = self.accept()
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno not in ACCEPT_SCARCE:
                    raise
                self._failed(err)
                break
            if peer is not None:
                accepted.append(peer)
        return accepted

    def _failed(self, err: OSError) -> None:
        """Count a failed accept() and pause accepting; say so on stderr at most
        every ACCEPT_NOTICE_S."""
        now = time.monotonic()
        self.failures += 1
        self.paused_until = now + ACCEPT_PAUSE_S
        if now >= self._notice:
            self._notice = now + ACCEPT_NOTICE_S
            print(f"taskstatsd: cannot accept clients ({err.strerror}): pausing "
                  f"{ACCEPT_PAUSE_S * 1000:.0f} ms (failures so far: "
                  f"{self.failures})", file=sys.stderr, flush=True)

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
        known, view = _identify(cred)
        if not known:  # identity cannot be established: refuse (fail closed)
            self._refuse(conn, "its process could not be identified (it exited?)")
            return None
        admin = self.policy.is_admin(cred)
        refusal = self._refusal(cred.uid, admin)
        if refusal:
            self._refuse(conn, refusal)
            return None
        peer = Peer(conn, self.next_id, cred.pid, cred.uid, cred.gid, admin, view=view,
                    groups=cred.groups)
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
        self.refused += 1
        with contextlib.suppress(OSError):
            conn.send(nl.encode_error(errno.EUSERS, b"", seq=0, pid=0,
                                      ext_message=f"taskstatsd refused the connection: {why}"))
        conn.close()


def _identify(cred: PeerCred) -> tuple[bool, NsView | None]:
    """Whether the client of ``cred`` is still the process that connected, and its
    namespace view (read from /proc, which counts only if its pidfd says so
    afterwards); closes ``cred``'s pidfd."""
    view = None
    try:
        view = NsView.of(cred.pid)
        known = cred.alive()
    except OSError:
        known = False
    finally:
        cred.close()
    return known, view


def _fds_scarce() -> bool:
    """Whether this process has fewer than FD_RESERVE fds left under its soft
    RLIMIT_NOFILE."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return False
    return len(os.listdir("/proc/self/fd")) - 1 + FD_RESERVE > soft
