"""Request dispatch: one client datagram answered message by message, as the kernel
answers it.

:class:`Dispatcher` walks a datagram as netlink_rcv_skb() does, routes each request
by family (nlctrl, TASKSTATS, and TASKSTATSD to :class:`.extension.Extension`) and
answers the first two itself: the family lookup, GET by pid/tgid (within the /proc
rule for non-admins, translated for namespaced clients), REGISTER/DEREGISTER_CPUMASK
and CGROUPSTATS with a passed fd.  A failure becomes NLMSG_ERROR with the kernel's
errno (:func:`_answer`: the one place a request's exception becomes an errno); a
success is acked when asked.  Nothing a client sends may stop the daemon.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
from typing import Any

from .. import cgroupfd, extproto
from .. import genetlink as genl
from .. import netlink as nl
from .. import taskstats as ts
from ..backends import Answers
from ..errors import BUG_HINT, NetlinkError, ProtocolError, TaskstatsError, errno_of
from ..fields import Scope as IdScope
from ..records import TaskStats
from .extension import Extension
from .listeners import ListenerLists, MaskError, check_cpumask, cpumask_maxlen, cpumask_payload
from .peers import Peer, passed_fd
from .policy import owner_may_see
from .replies import Replies

_GET = ts.GET_U32  # a GET with one u32 attribute: the messages a bulk query sends
_GET_SIZE = _GET.size
_ATTR_SCOPE: dict[int, IdScope] = {ts.ATTR_PID: "pid", ts.ATTR_TGID: "tgid"}
_SEQ_PORT = struct.Struct("=II")


class Dispatcher:
    """Answers ``family`` (TASKSTATS as the daemon serves it) from ``kernel``,
    registers listeners in ``listeners`` for the CPUs of ``possible`` (of
    ``nr_cpu_ids``), and hands TASKSTATSD requests to ``extension``."""

    def __init__(self, *, family: genl.FamilyInfo, kernel: Answers,
                 listeners: ListenerLists, possible: list[int], nr_cpu_ids: int,
                 replies: Replies, extension: Extension) -> None:
        self.family, self.kernel, self.listeners = family, kernel, listeners
        self.possible, self.nr_cpu_ids = possible, nr_cpu_ids
        self.replies, self.extension = replies, extension
        self._warning = ""  # the current message's parse warning (extended ACK)
        # (scope, id) -> the kernel's answer, fetched ahead for this turn (prefetch)
        self.prefetched: dict[tuple[IdScope, int], bytes | TaskStats] = {}
        # id -> whether the peer might see it before the kernel was asked (see _get)
        self.seen_before: dict[int, bool] = {}

    def handle(self, peer: Peer, data: bytes, fds: list[int]) -> None:
        """Answer every message of one datagram, walked as the kernel walks it (a
        malformed header ends the walk silently: :func:`~pytaskstats.netlink.walk`)."""
        if len(data) == _GET_SIZE:
            length, mtype, flags, seq, _, cmd, _, _, alen, atype, ident = _GET.unpack(data)
            if (length == _GET_SIZE and mtype == self.family.id and cmd == ts.CMD_GET
                    and alen == 8 and atype in _ATTR_SCOPE
                    and flags & ~nl.NLM_F_ACK == nl.NLM_F_REQUEST):
                self._plain_get(peer, data, seq=seq, scope=_ATTR_SCOPE[atype], ident=ident)
                return
        for msg in nl.walk(data):
            self._message(peer, msg, fds)

    def _plain_get(self, peer: Peer, data: bytes, *, seq: int, scope: IdScope,
                   ident: int) -> None:
        """A GET in its usual form (one message of one u32 PID or TGID attribute,
        flags REQUEST and maybe ACK), answered as :meth:`_message` answers it, without
        the walk: nothing in it can fail the attribute policy or warn."""
        try:
            self._get(peer, seq, scope, ident)
        except Exception as err:  # a client frame must never stop the daemon
            code, text = _answer(err)
            self.replies.error(peer, code, data, text, seq)
        else:
            if data[6] & nl.NLM_F_ACK:
                self.replies.ack(peer, nl.walk(data)[0], "")

    def _message(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        """One message, as netlink_rcv_skb() treats it: without NLM_F_REQUEST, or of
        a control type, it is not processed (only acked, with NLM_F_ACK); a failure
        is answered with NLMSG_ERROR; a success is acked with NLM_F_ACK."""
        self._warning = ""
        if not msg.flags & nl.NLM_F_REQUEST or msg.type < nl.NLMSG_MIN_TYPE:
            self.replies.ack(peer, msg, self._warning)
            return
        request = bytes(msg.data[msg.start - nl.HEADER.size: msg.end])
        try:
            self._dispatch(peer, msg, fds)
        except nl.PolicyError as err:
            self.replies.error(peer, err.errno, request, str(err), msg.seq,
                               offset=err.offset, policy=err.policy)
        except Exception as err:  # a client frame must never stop the daemon
            code, text = _answer(err)
            self.replies.error(peer, code, request, text or self._warning, msg.seq)
        else:
            self.replies.ack(peer, msg, self._warning)

    def _dispatch(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        if msg.type not in (genl.GENL_ID_CTRL, self.family.id, extproto.FAMILY_ID):
            raise NetlinkError(f"no family {msg.type}", errno=errno.ENOENT)
        if msg.end - msg.start < genl.GENL_HEADER.size:
            raise NetlinkError("no genlmsghdr", errno=errno.EINVAL)
        if msg.type == extproto.FAMILY_ID:
            self.extension.handle(peer, msg, fds)
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
        self.replies.reply(peer, genl.encode_family(info, seq=msg.seq, pid=peer.id))

    def _taskstats(self, peer: Peer, msg: nl.Message, fds: list[int]) -> None:
        """TASKSTATS_CMD_GET (by pid, tgid, cpumask) and CGROUPSTATS_CMD_GET."""
        cmd, _ = genl.genl_header(msg)
        if cmd not in (ts.CMD_GET, ts.CGROUPSTATS_CMD_GET):
            raise NetlinkError(f"no taskstats command {cmd}", errno=errno.EOPNOTSUPP)
        req = ts.decode_request(msg)
        self._warning = req.warning
        if req.op in ("pid", "tgid"):
            assert isinstance(req.value, int)
            self._get(peer, msg.seq, req.op, req.value)
        elif req.op in ("register", "deregister"):
            assert isinstance(req.value, str)
            self._cpumask(peer, msg, req.op)
        elif req.op == "cgroup":
            self._cgroupstats(peer, msg.seq, fds)
        else:
            raise NetlinkError("no attribute", errno=errno.EINVAL)

    def prefetch(self, peer: Peer, frames: list[bytes]) -> None:
        """Ask the kernel at once (pipelined) for the plain GETs by pid or tgid among
        ``frames``, the messages of ``peer`` about to be answered.  Each is still
        answered in its turn by :meth:`_get`, from what came; an id that came with
        an error is asked alone then, so errors are the kernel's own.  Not for a
        namespaced peer (its ids are translated first).  What a previous call
        fetched is forgotten."""
        self.prefetched.clear()
        self.seen_before.clear()
        if peer.view is not None or len(frames) < 2:
            return
        wanted: dict[IdScope, list[int]] = {"pid": [], "tgid": []}
        for frame in frames:
            if len(frame) != _GET_SIZE:
                continue
            _, mtype, flags, _, _, cmd, _, _, alen, atype, ident = _GET.unpack(frame)
            if (mtype == self.family.id and cmd == ts.CMD_GET and alen == 8
                    and flags & nl.NLM_F_REQUEST and atype in _ATTR_SCOPE):
                wanted[_ATTR_SCOPE[atype]].append(ident)
        for scope, ids in wanted.items():
            if ids:
                if not peer.admin:
                    self.seen_before.update((i, self._sees(peer, i)) for i in ids)
                for ident, got in self.kernel.query_replies(scope, ids).items():
                    self.prefetched[scope, ident] = got

    def _get(self, peer: Peer, seq: int, scope: IdScope, ident: int) -> None:
        """The stats of task or thread group ``ident`` as ``peer`` numbers it: the
        kernel's reply forwarded with seq and port id patched when it has the
        usual shape and needs no translation, else the record encoded."""
        view = peer.view
        if view is None:
            got = self.prefetched.pop((scope, ident), None)
            before = self.seen_before.pop(ident, peer.admin)
            if got is None:
                before = self._sees(peer, ident)
                got = self.kernel.query_reply(scope, ident)
            # the kernel's error first (ESRCH); then /proc's rule, before and after the
            # read: a pid reused between the check and the read cannot pass both
            self._may_see(peer, ident)
            if not before:
                raise NetlinkError("not the client's task", errno=errno.EPERM)
            if isinstance(got, bytes):
                self.replies.reply(peer, got[:8] + _SEQ_PORT.pack(seq, peer.id) + got[16:])
                return
            stats = got
        else:
            stats = view.stats(self._query(peer, scope, view.host_pid(ident)))
        reply = ts.StatsReply(seq, scope, ident, stats)
        self.replies.reply(peer, ts.encode_stats_reply(self.family.id, reply, pid=peer.id))

    def _cpumask(self, peer: Peer, msg: nl.Message, op: str) -> None:
        """Register ``peer`` as a listener of a cpumask's CPUs, or deregister it."""
        cpus = check_cpumask(cpumask_payload(msg, op), self.possible, self.nr_cpu_ids,
                             cpumask_maxlen(self.nr_cpu_ids))
        if op == "register":
            self.listeners.register(peer.id, cpus)
            if peer.view:
                peer.view.rescan(force=True)
        else:
            self.listeners.deregister(peer.id, cpus)

    def _cgroupstats(self, peer: Peer, seq: int, fds: list[int]) -> None:
        """CGROUPSTATS of the cgroup v1 directory passed as an fd; an O_PATH fd is
        answered with nothing but the ACK asked for, as the kernel (fdget() skips
        O_PATH files), whatever it names."""
        fd = passed_fd(peer, fds)
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_PATH:
            return
        if cgroupfd.kind(fd) == "cgroup2":  # the kernel counts v1 only
            raise NetlinkError("a cgroup2 directory", errno=errno.EINVAL)
        stats = self.kernel.cgroup(fd)
        self.replies.reply(peer, ts.encode_cgroupstats_reply(
            self.family.id, ts.CgroupStatsReply(seq, stats), pid=peer.id))

    def _query(self, peer: Peer, scope: IdScope, ident: int) -> Any:
        stats = self.kernel.query(scope, ident)
        self._may_see(peer, ident)
        return stats

    @staticmethod
    def _sees(peer: Peer, ident: int) -> bool:
        """Whether ``peer`` may see task ``ident`` now (admins: always)."""
        return peer.admin or owner_may_see(ident, peer.uid, peer.gid)

    @staticmethod
    def _may_see(peer: Peer, ident: int) -> None:
        """EPERM unless ``peer`` may see task ``ident`` (host numbering): the /proc
        rule (see .policy), what /proc/PID/io would show it; the id is all it reads."""
        if not peer.admin and not owner_may_see(ident, peer.uid, peer.gid):
            raise NetlinkError("not the client's task", errno=errno.EPERM)


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

