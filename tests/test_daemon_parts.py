"""The parts of taskstatsd's server, in-process and without root: request dispatch
against /proc (ProcfsKernel), the shape of acks and errors, a batch's frames, the
exit-record fan-out and its drop notice, admission limits, and history scopes.

The daemon tests (test_daemon*.py) drive the same code through a running taskstatsd;
these pin what each part decides on its own."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from pytaskstats import extproto as protocol
from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.daemon.admission import Admission
from pytaskstats.daemon.dispatch import Dispatcher
from pytaskstats.daemon.extension import Extension, scope_of
from pytaskstats.daemon.fanout import Fanout
from pytaskstats.daemon.journal_queries import Scope
from pytaskstats.daemon.listeners import ListenerLists
from pytaskstats.daemon.peers import Batch, Limits, Peer, flush
from pytaskstats.daemon.policy import Policy
from pytaskstats.daemon.procmode import ProcfsKernel
from pytaskstats.daemon.replies import MAX_EXT_MESSAGE, Replies
from pytaskstats.procfs import ProcSource
from pytaskstats.records import ExitRecord, TaskStats
from pytaskstats.taskstats import StatsReply

NOBODY = 65534  # a uid that owns none of this test's tasks


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected SOCK_SEQPACKET pair: (the server's end, the client's end)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def _peer(sock: socket.socket, *, admin: bool = True, uid: int | None = None,
          ident: int = 1) -> Peer:
    uid = os.getuid() if uid is None else uid
    return Peer(sock, ident, os.getpid(), uid, os.getgid() if uid == os.getuid() else uid,
                admin)


class _Parts:
    """A dispatcher over /proc with its replies, as the Server wires them."""

    def __init__(self, kernel: Any = None, limits: Limits | None = None) -> None:
        self.kernel = kernel or ProcfsKernel(ProcSource())
        self.limits = limits or Limits()
        self.replies = Replies(self.limits)
        self.listeners = ListenerLists()
        fam = self.kernel.family
        self.family = genl.FamilyInfo(fam.id, ts.FAMILY_NAME, fam.version, 0, 0, fam.ops)
        extension = Extension(status=lambda params: {"params": params},
                              history=lambda params, scope: ([], ""),
                              listeners=self.listeners, limits=self.limits,
                              replies=self.replies)
        self.dispatcher = Dispatcher(family=self.family, kernel=self.kernel,
                                     listeners=self.listeners, possible=[0, 1],
                                     nr_cpu_ids=2, replies=self.replies,
                                     extension=extension)

    def answers(self, peer: Peer, request: bytes) -> list[nl.Message]:
        """The messages queued for ``peer`` in answer to ``request``."""
        peer.replies.clear()
        self.dispatcher.handle(peer, request, [])
        return [m for data in peer.replies for m in nl.walk(data)]

    def error(self, peer: Peer, request: bytes) -> nl.ErrorReply:
        """The one NLMSG_ERROR answering ``request``."""
        (msg,) = self.answers(peer, request)
        assert msg.type == nl.NLMSG_ERROR
        return nl.decode_error(msg)


def _missing_pid() -> int:
    """A pid no task has now (checked in /proc, from the top of the range)."""
    with open("/proc/sys/kernel/pid_max") as f:
        top = int(f.read())
    return next(p for p in range(top - 1, 1, -1) if not os.path.exists(f"/proc/{p}"))


def test_get_by_pid_answers_the_tasks_record(pair: tuple[socket.socket, socket.socket]
                                             ) -> None:
    parts = _Parts()
    peer = _peer(pair[0])
    (msg,) = parts.answers(peer, ts.encode_get_pid(parts.family.id, os.getpid(), seq=7))
    (event,) = ts.decode(b"".join(peer.replies), parts.family.id)
    assert isinstance(event, StatsReply)
    assert (msg.seq, msg.pid, event.stats.ac_pid) == (7, peer.id, os.getpid())


def test_get_with_ack_is_answered_then_acked(pair: tuple[socket.socket, socket.socket]
                                             ) -> None:
    parts = _Parts()
    request = ts.encode_get_pid(parts.family.id, os.getpid(), seq=3, ack=True)
    reply, ack = parts.answers(_peer(pair[0]), request)
    assert reply.type == parts.family.id
    assert ack.type == nl.NLMSG_ERROR and nl.decode_error(ack).error == 0


@pytest.mark.parametrize(("admin", "target", "code"), [
    (True, "missing", errno.ESRCH),
    (False, "init", errno.EPERM),  # not the client's task: the /proc rule
])
def test_get_failures_carry_the_kernels_errno(
        pair: tuple[socket.socket, socket.socket], admin: bool, target: str, code: int
) -> None:
    parts = _Parts()
    pid = _missing_pid() if target == "missing" else 1
    peer = _peer(pair[0], admin=admin, uid=None if admin else NOBODY)
    got = parts.error(peer, ts.encode_get_pid(parts.family.id, pid, seq=5))
    assert (got.error, got.seq) == (code, 5)


def test_an_unexpected_failure_is_eio_and_said_on_stderr(
        pair: tuple[socket.socket, socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken(ProcfsKernel):
        def query(self, scope: str, ident: int) -> TaskStats:
            raise RuntimeError("boom")

    parts = _Parts(Broken(ProcSource()))
    peer = _peer(pair[0])
    peer.ext_ack = True
    got = parts.error(peer, ts.encode_get_pid(parts.family.id, os.getpid(), seq=1))
    assert (got.error, got.ext_message) == (errno.EIO, "internal error")
    assert "internal error on a request: RuntimeError('boom')" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "family_id"), [
    (ts.FAMILY_NAME, None), (protocol.FAMILY_NAME, protocol.FAMILY_ID)])
def test_family_lookup_finds_both_families(pair: tuple[socket.socket, socket.socket],
                                           name: str, family_id: int | None) -> None:
    parts = _Parts()
    (msg,) = parts.answers(_peer(pair[0]), genl.encode_get_family(name, seq=2))
    info = genl.decode_family(msg)
    assert (info.name, info.id) == (name, family_id or parts.family.id)


def test_family_lookup_of_an_unknown_name_is_enoent(
        pair: tuple[socket.socket, socket.socket]) -> None:
    parts = _Parts()
    got = parts.error(_peer(pair[0]), genl.encode_get_family("NO_SUCH_FAMILY", seq=2))
    assert got.error == errno.ENOENT


def test_a_dump_is_eopnotsupp_and_an_unknown_type_enoent(
        pair: tuple[socket.socket, socket.socket]) -> None:
    parts = _Parts()
    peer = _peer(pair[0])
    dump = genl.encode(parts.family.id, ts.CMD_GET, b"", seq=1,
                       flags=nl.NLM_F_REQUEST | nl.NLM_F_DUMP)
    assert parts.error(peer, dump).error == errno.EOPNOTSUPP
    other = genl.encode(0x7ABC, ts.CMD_GET, b"", seq=1)
    assert parts.error(peer, other).error == errno.ENOENT


def test_a_message_without_the_request_flag_is_only_acked(
        pair: tuple[socket.socket, socket.socket]) -> None:
    parts = _Parts()
    peer = _peer(pair[0])
    get = ts.encode_get_pid(parts.family.id, os.getpid(), seq=4)
    flags_at = 6  # nlmsghdr: len u32, type u16, flags u16
    plain = get[:flags_at] + nl.NLM_F_ACK.to_bytes(2, "little") + get[flags_at + 2:]
    assert parts.error(peer, plain).error == 0
    silent = get[:flags_at] + b"\0\0" + get[flags_at + 2:]
    assert parts.answers(peer, silent) == []


def test_extension_status_is_answered_as_json(pair: tuple[socket.socket, socket.socket]
                                              ) -> None:
    parts = _Parts()
    request = protocol.encode_request(protocol.CMD_STATUS, {"flush": True}, seq=9)
    (msg,) = parts.answers(_peer(pair[0]), request)
    assert protocol.decode_json(msg) == {"params": {"flush": True}}


def test_an_error_echoes_the_request_unless_capped(pair: tuple[socket.socket, socket.socket]
                                                   ) -> None:
    replies = Replies(Limits())
    peer = _peer(pair[0])
    request = ts.encode_get_pid(0x7F01, 1, seq=1)
    replies.error(peer, errno.EINVAL, request, "why")
    peer.cap_ack = True
    replies.error(peer, errno.EINVAL, request, "why")
    whole, capped = (nl.walk(data)[0] for data in peer.replies)
    assert whole.end - whole.start == 4 + len(request)
    assert capped.flags & nl.NLM_F_CAPPED and capped.end - capped.start == 4 + nl.HEADER.size
    assert replies.peak == len(peer.replies[0]) + len(peer.replies[1])


@pytest.mark.parametrize("ext_ack", [False, True])
def test_extended_ack_text_only_when_asked_and_bounded(
        pair: tuple[socket.socket, socket.socket], ext_ack: bool) -> None:
    replies = Replies(Limits())
    peer = _peer(pair[0])
    peer.ext_ack = ext_ack
    replies.error(peer, errno.EINVAL, ts.encode_get_pid(0x7F01, 1, seq=1), "é" * 2000,
                  offset=20)
    got = nl.decode_error(nl.walk(peer.replies[0])[0])
    if ext_ack:
        assert got.ext_offset == 20
        assert 0 < len(got.ext_message.encode()) <= MAX_EXT_MESSAGE
    else:
        assert (got.ext_message, got.ext_offset) == ("", None)


def test_a_batch_yields_whole_frames_then_the_malformed_rest_once() -> None:
    one = ts.encode_get_pid(0x7F01, 1, seq=1)
    two = ts.encode_get_pid(0x7F01, 2, seq=2)
    batch = Batch(one + two + b"\0" * 4, [])
    assert [batch.next_frame(), batch.next_frame(), batch.next_frame()] == [one, two, None]
    broken = Batch(one + b"\xff" * 20, [])
    assert [broken.next_frame(), broken.next_frame(), broken.next_frame()] == [
        one, b"\xff" * 20, None]


def _exit_record(uid: int) -> tuple[ExitRecord, bytes]:
    task = ProcSource().pid(os.getpid())._replace(ac_uid=uid, ac_gid=uid)
    record = ExitRecord(task=task, pid=os.getpid(), tgid=os.getpid(), cpu=0)
    return record, ts.encode_exit(0x7F01, record)


def test_fanout_drops_past_the_queue_bound_and_flush_says_how_many(
        pair: tuple[socket.socket, socket.socket]) -> None:
    peers = {1: _peer(pair[0])}
    listeners = ListenerLists()
    listeners.register(1, [0])
    fanout = Fanout(peers, listeners, Limits(queue_records=2), 0x7F01)
    record, raw = _exit_record(0)
    for _ in range(5):
        fanout.publish(record, raw)
    assert (len(peers[1].records), peers[1].dropped, fanout.dropped) == (2, 3, 3)
    assert flush(peers[1])
    notice = nl.decode_error(nl.walk(pair[1].recv(65536))[0])
    assert (notice.error, notice.ext_offset) == (errno.ENOBUFS, 3)
    assert [pair[1].recv(65536) for _ in range(2)] == [raw, raw]


@pytest.mark.parametrize(("owner_sees", "uid", "delivered"), [
    (True, NOBODY, 1), (None, NOBODY, 0), (True, NOBODY + 1, 0)])
def test_fanout_gives_a_non_admin_only_its_own_visible_exits(
        pair: tuple[socket.socket, socket.socket], owner_sees: bool | None, uid: int,
        delivered: int) -> None:
    peers = {1: _peer(pair[0], admin=False, uid=NOBODY)}
    listeners = ListenerLists()
    listeners.register(1, [0, 1])
    record, raw = _exit_record(uid)
    Fanout(peers, listeners, Limits(), 0x7F01).publish(record, raw, owner_sees)
    assert len(peers[1].records) == delivered


@pytest.mark.parametrize(("held", "admin", "refused"), [
    ([], False, ""),
    ([0] * 4, False, "kept for root"),  # the last admin_reserved connections
    ([0] * 4, True, ""),
    ([0] * 6, True, "all 6 client connections"),
    ([NOBODY] * 2, False, f"uid {NOBODY} holds 2 connections"),
])
def test_admission_limits(pair: tuple[socket.socket, socket.socket], held: list[int],
                          admin: bool, refused: str) -> None:
    peers = {i: _peer(pair[0], uid=uid, ident=i) for i, uid in enumerate(held)}
    limits = Limits(max_clients=6, admin_reserved=2, max_clients_per_uid=2)
    admission = Admission(pair[0], Policy(), limits, peers)
    why = admission._refusal(NOBODY, admin)
    assert (refused in why) if refused else why == ""


def test_history_scope_of_admins_and_users(pair: tuple[socket.socket, socket.socket]
                                           ) -> None:
    assert scope_of(_peer(pair[0])) is None
    assert scope_of(_peer(pair[0], admin=False, uid=NOBODY)) == Scope(NOBODY, NOBODY, None, 0)
