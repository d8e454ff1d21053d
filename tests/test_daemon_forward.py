"""taskstatsd's GET path against the fake kernel, in-process: the kernel's reply
bytes forwarded with seq and port id patched are what re-encoding the record gives;
fetching a turn's GETs ahead (one pipelined datagram to the kernel) and the plain
GET's short cut answer exactly what asking one by one, walking each message,
answers: records, errors, the policy's refusals, acks."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from pytaskstats import kernel as kernel_mod
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.daemon import dispatch as dispatch_mod
from pytaskstats.daemon.dispatch import Dispatcher
from pytaskstats.daemon.extension import Extension
from pytaskstats.daemon.listeners import ListenerLists
from pytaskstats.daemon.peers import Batch, Limits, Peer
from pytaskstats.daemon.replies import Replies
from pytaskstats.kernel import Connection

from .fakekernel import FakeKernel

ME = os.getpid()
NOBODY = 65534
TASKS = (ME, 1, *range(6000, 6010))


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    fake = FakeKernel(cpus=range(2)).install(monkeypatch)
    for pid in TASKS:
        fake.add_task(pid, comm=f"t{pid}")
    fake.add_group(ME)
    yield fake
    fake.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield Peer(ours, 7, ME, os.getuid(), os.getgid(), True)
    ours.close()
    theirs.close()


def dispatcher(conn: Connection) -> Dispatcher:
    limits = Limits()
    replies = Replies(limits)
    listeners = ListenerLists()
    extension = Extension(status=lambda params: {}, history=lambda params, scope: ([], ""),
                          listeners=listeners, limits=limits, replies=replies)
    return Dispatcher(family=conn.family, kernel=conn, listeners=listeners, possible=[0, 1],
                      nr_cpu_ids=2, replies=replies, extension=extension)


def get(family: int, scope: str, ident: int, seq: int, *, ack: bool = False) -> bytes:
    encode = ts.encode_get_pid if scope == "pid" else ts.encode_get_tgid
    return encode(family, ident, seq=seq, ack=ack)


def answers(disp: Dispatcher, peer: Peer, frames: list[bytes], *, ahead: bool,
            walk: bool = False) -> list[bytes]:
    """What ``peer`` is sent for ``frames``: fetched ahead or asked one by one; with
    ``walk``, each message through the general path (no plain-GET short cut)."""
    peer.replies.clear()
    if ahead:
        disp.prefetch(peer, frames)
    for frame in frames:
        if walk:
            for msg in nl.walk(frame):
                disp._message(peer, msg, [])
        else:
            disp.handle(peer, frame, [])
    disp.prefetched.clear()
    return list(peer.replies)


def every_way(kernel: FakeKernel, peer: Peer, frames: list[bytes],
              monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The answers, checked equal whichever way they are produced."""
    with monkeypatch.context() as patch:
        patch.setattr(kernel_mod, "learn", lambda *a, **k: None)
        patch.setattr(kernel_mod, "esrch", lambda *a, **k: None)
        with Connection() as conn:  # never learns a shape: records re-encoded
            disp = dispatcher(conn)
            strict = answers(disp, peer, frames, ahead=False, walk=True)
            assert answers(disp, peer, frames, ahead=True) == strict
    with Connection() as conn:
        disp = dispatcher(conn)
        assert answers(disp, peer, frames, ahead=False) == strict  # learns on the way
        assert conn.shapes
        assert answers(disp, peer, frames, ahead=False) == strict
        assert answers(disp, peer, frames, ahead=True) == strict
        assert answers(disp, peer, frames, ahead=True, walk=True) == strict
    return strict


def test_forwarded_replies_are_the_reencoded_ones(kernel: FakeKernel, peer: Peer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    family = kernel.family.id if kernel.family else 0
    frames = [get(family, "pid", pid, 100 + k) for k, pid in enumerate(TASKS)]
    frames.append(get(family, "tgid", ME, 999))
    got = every_way(kernel, peer, frames, monkeypatch)
    want = [ts.encode_stats_reply(family, ts.StatsReply(100 + k, "pid", pid, kernel.add_task(
        pid, comm=f"t{pid}")), pid=peer.id) for k, pid in enumerate(TASKS)]
    want.append(ts.encode_stats_reply(family, ts.StatsReply(999, "tgid", ME, kernel.add_group(
        ME)), pid=peer.id))
    assert got == want


def test_a_learned_shape_is_forwarded_without_encoding(
        kernel: FakeKernel, peer: Peer, monkeypatch: pytest.MonkeyPatch) -> None:
    family = kernel.family.id if kernel.family else 0
    frames = [get(family, "pid", pid, 50 + k) for k, pid in enumerate(TASKS)]
    with Connection() as conn:
        disp = dispatcher(conn)
        first = answers(disp, peer, frames[:1], ahead=False)
        encoded: list[Any] = []
        real = ts.encode_stats_reply

        def counting(family: int, reply: ts.StatsReply, *, pid: int) -> bytes:
            if pid == peer.id:  # the daemon's encoding (the fake kernel's goes to ME)
                encoded.append(reply)
            return real(family, reply, pid=pid)

        monkeypatch.setattr(ts, "encode_stats_reply", counting)
        sent_before = len(kernel.datagrams)
        rest = answers(disp, peer, frames, ahead=True)
    assert encoded == [] and rest[0] == first[0] and len(rest) == len(TASKS)
    assert len(kernel.datagrams) - sent_before == 1  # the whole turn in one datagram


def test_errors_and_refusals_are_answered_alike(kernel: FakeKernel, peer: Peer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    family = kernel.family.id if kernel.family else 0
    kernel.errors["pid", 6003] = errno.EBUSY
    del kernel.tasks[6005]
    frames = [get(family, "pid", pid, 10 + k, ack=pid == 6007)
              for k, pid in enumerate((*TASKS, 0, 424242))]
    got = every_way(kernel, peer, frames, monkeypatch)
    errors = [nl.decode_error(m).error for data in got for m in nl.walk(data)
              if m.type == nl.NLMSG_ERROR]
    assert errors == [errno.EBUSY, errno.ESRCH, 0, errno.ESRCH, errno.ESRCH]  # (the fake: no pid 0)
    peer.admin, peer.uid, peer.gid = False, NOBODY, NOBODY
    got = every_way(kernel, peer, frames, monkeypatch)
    errors = [nl.decode_error(m).error for data in got for m in nl.walk(data)
              if m.type == nl.NLMSG_ERROR]
    assert errors.count(errno.EPERM) >= 2 and errno.ESRCH in errors and errno.EBUSY in errors


def test_odd_gets_take_the_general_path(kernel: FakeKernel, peer: Peer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    family = kernel.family.id if kernel.family else 0
    plain = get(family, "pid", ME, 5)

    def poke(offset: int, fmt: str, value: int) -> bytes:
        return plain[:offset] + struct.pack(fmt, value) + plain[offset + struct.calcsize(fmt):]

    frames = [
        poke(6, "=H", 0),  # not a request
        poke(6, "=H", nl.NLM_F_REQUEST | nl.NLM_F_DUMP),
        poke(6, "=H", nl.NLM_F_REQUEST | 0x08),  # NLM_F_ECHO
        poke(16, "=B", ts.CMD_NEW),
        poke(17, "=B", 9),  # another genl version: the kernel does not mind
        poke(22, "=H", ts.ATTR_PID | 0x8000),  # NLA_F_NESTED
        poke(20, "=H", 6),  # attribute shorter than its u32
        poke(0, "=I", 24),  # the message shorter than the datagram
        poke(22, "=H", ts.ATTR_REGISTER_CPUMASK),
        plain + get(family, "pid", 1, 6),  # two in one frame
    ]
    every_way(kernel, peer, frames, monkeypatch)


def test_peek_leaves_the_frames_in_place() -> None:
    data = b"".join(ts.encode_get_pid(31, pid, seq=pid) for pid in (1, 2, 3))
    batch = Batch(data, [])
    assert batch.peek(2) == [data[:28], data[28:56]]
    assert batch.peek(9) == [data[:28], data[28:56], data[56:]]
    assert batch.next_frame() == data[:28]
    assert batch.peek(9) == [data[28:56], data[56:]]


@pytest.mark.parametrize("ahead", [False, True])
def test_a_pid_that_changes_owner_around_the_read_is_refused(
        kernel: FakeKernel, peer: Peer, monkeypatch: pytest.MonkeyPatch, ahead: bool) -> None:
    """/proc's rule is asked before and after the kernel's read: a task that was not the
    client's before it (another user's, whose pid the client's own task took by the
    time of the second check) is refused, whether fetched ahead or alone."""
    family = kernel.family.id if kernel.family else 0
    peer.admin, peer.uid, peer.gid = False, NOBODY, NOBODY
    read: set[int] = set()  # the pids the kernel was asked about: theirs until then
    monkeypatch.setattr(dispatch_mod, "owner_may_see", lambda pid, *a: pid in read)
    frames = [get(family, "pid", TASKS[0], 1), get(family, "pid", TASKS[1], 2)]
    with Connection() as conn:
        one, many = conn.query_reply, conn.query_replies

        def reply(scope: Any, ident: int) -> Any:
            read.add(ident)
            return one(scope, ident)

        def replies(scope: Any, ids: list[int]) -> Any:
            read.update(ids)
            return many(scope, ids)
        monkeypatch.setattr(conn, "query_reply", reply)
        monkeypatch.setattr(conn, "query_replies", replies)
        got = answers(dispatcher(conn), peer, frames, ahead=ahead)
    errors = [nl.decode_error(m).error for data in got for m in nl.walk(data)
              if m.type == nl.NLMSG_ERROR]
    assert errors == [errno.EPERM, errno.EPERM]
