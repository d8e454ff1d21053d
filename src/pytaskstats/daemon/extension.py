"""taskstatsd's own requests: the TASKSTATSD family (see :mod:`pytaskstats.extproto`).

:class:`Extension` answers STATUS, HISTORY, SET_OPTIONS and CGROUP, each with its
JSON parameters checked by :func:`.schema.check` before use.  It decides what a
client may see of them (:mod:`.policy`): the status document (only admins may ask
for a journal flush, and non-admin or namespaced clients get their own view) and
the journal rows (a :class:`~.journal_queries.Scope` per client, rows translated
into a namespaced client's pids).  The documents themselves come from callables the
daemon passes in; :func:`cgroup2_counts` counts a cgroup2 directory's task states.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from typing import Any

from .. import cgroupfd, extproto
from .. import genetlink as genl
from .. import netlink as nl
from ..errors import NetlinkError
from ..procfs import ProcSource
from ..records import CgroupStats
from . import schema
from .journal_queries import Scope
from .listeners import ListenerLists
from .peers import Limits, Peer, passed_fd
from .policy import client_status
from .replies import Replies, ext

# the status document for given parameters
StatusSource = Callable[[dict[str, Any]], dict[str, Any]]
# journal rows and a note (say, that the answer was cut) for parameters and a scope
HistorySource = Callable[[dict[str, Any], Scope | None], tuple[list[dict[str, Any]], str]]


class Extension:
    """Answers TASKSTATSD requests into ``replies``; ``listeners`` tells whether a
    client listens (for its status)."""

    def __init__(self, *, status: StatusSource, history: HistorySource,
                 listeners: ListenerLists, limits: Limits, replies: Replies) -> None:
        self.status, self.history = status, history
        self.listeners, self.limits, self.replies = listeners, limits, replies

    def handle(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        """Answer one TASKSTATSD request (NetlinkError for an unknown command,
        SchemaError for bad parameters)."""
        cmd, _ = genl.genl_header(msg)
        if cmd not in schema.SCHEMAS:
            raise NetlinkError(f"unknown command {cmd}", errno=errno.EOPNOTSUPP)
        params = schema.check(cmd, extproto.decode_json(msg))
        if cmd == extproto.CMD_STATUS:
            self.replies.reply(peer, extproto.encode_reply(
                self.status_of(peer, params), seq=msg.seq, pid=peer.id))
        elif cmd == extproto.CMD_HISTORY:
            self._history(peer, params, msg.seq)
        elif cmd == extproto.CMD_SET_OPTIONS:
            peer.cap_ack = params.get("cap_ack", peer.cap_ack)
            peer.ext_ack = params.get("ext_ack", peer.ext_ack)
        else:
            passed_fd(peer, fds)
            counts = cgroup2_counts(fds, None if peer.admin else
                                    cgroupfd.Reader(peer.uid, peer.gid, peer.groups))
            self.replies.reply(peer, extproto.encode_reply(
                {k: v for k, v in counts._asdict().items() if k.startswith("nr_")},
                seq=msg.seq, pid=peer.id))

    def _history(self, peer: Peer, params: dict[str, Any], seq: int) -> None:
        """The journal rows ``peer`` may see, in its pids, in parts of at most
        ``history_bytes`` in all."""
        rows, note = self.history(params, scope_of(peer))
        if peer.view is not None:
            rows = [peer.view.row(row) for row in rows]
        for part in extproto.encode_rows(rows, seq=seq, pid=peer.id, note=ext(peer, note),
                                         max_bytes=self.limits.history_bytes,
                                         notes=peer.ext_ack):
            self.replies.reply(peer, part)

    def status_of(self, peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
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


def scope_of(peer: Peer) -> Scope | None:
    """The journal rows ``peer`` may read (see :mod:`.policy`); None: all."""
    view = peer.view
    pidns = view.chain if view is not None and view.level > 0 else None
    if peer.admin and pidns is None:
        return None
    uid, gid = (None, None) if peer.admin else (peer.uid, peer.gid)
    return Scope(uid, gid, pidns, view.level if pidns is not None and view else 0)


def cgroup2_counts(fds: list[int], reader: cgroupfd.Reader | None = None) -> CgroupStats:
    """Task state counts, from /proc, of the cgroup2 directory passed as ``fds[0]``
    (the TASKSTATSD CGROUP command), read as :mod:`pytaskstats.cgroupfd` says for
    ``reader`` (None: an admin); NetlinkError EBADF without an fd or with an O_PATH
    one (it proves no access: the daemon would read a directory the client may not
    open), EINVAL when it is not a cgroup2 directory, EACCES when ``reader`` may not
    read its thread list."""
    if not fds:
        raise NetlinkError("no fd passed", errno=errno.EBADF)
    if fcntl.fcntl(fds[0], fcntl.F_GETFL) & os.O_PATH:
        raise NetlinkError("an O_PATH fd", errno=errno.EBADF,
                           ext_message="an O_PATH fd proves no access to the directory: "
                           "pass one opened for reading")
    if cgroupfd.kind(fds[0]) != "cgroup2":
        raise NetlinkError("not a cgroup2 directory", errno=errno.EINVAL,
                           ext_message="the fd is not a cgroup2 directory (for a cgroup v1 "
                           "directory, use CGROUPSTATS)")
    return ProcSource().count_states(cgroupfd.thread_ids(fds[0], "cgroup.threads", reader))
