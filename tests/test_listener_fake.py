"""kernel.Listener against the fake kernel (tests/fakekernel.py), without root: the
registration messages, exits routed by CPU, overruns counted exactly as Lost,
truncated and malformed datagrams, adopted sockets, closing; and, as root, the fake
side by side with the live kernel."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytaskstats import ExitRecord, Lost
from pytaskstats import genetlink as genl
from pytaskstats import kernel as kernel_mod
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.errors import NetlinkError
from pytaskstats.kernel import lookup_family
from pytaskstats.listener import Listener
from pytaskstats.transport import NetlinkSocket

from .conftest import require_kernel
from .fakekernel import TRUESIZE, FakeKernel, big_datagram, record, stats_size

FAMILY = 31


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKernel]:
    """The fake kernel, installed, with CPUs 0-3 possible (here and in sysfs as the
    Listener reads it); the test fails if the client sent it anything odd."""
    possible = tmp_path / "possible"
    possible.write_text("0-3\n")
    monkeypatch.setattr(kernel_mod, "POSSIBLE_CPUS", str(possible))
    fake = FakeKernel(family_id=FAMILY, cpus=range(4)).install(monkeypatch)
    yield fake
    fake.close()
    assert fake.problems == [], "the client sent requests the fake kernel objects to"


def registered(kernel: FakeKernel) -> dict[int, int]:
    """cpu -> how many sockets listen to it."""
    return {cpu: len(socks) for cpu, socks in kernel.listeners.items() if socks}


def test_registration_message_bytes(kernel: FakeKernel) -> None:
    with Listener(cpus=[0, 1, 2]) as listener:
        assert listener.masks() == ["0-2"]
        # after the family lookup (seq 1): REGISTER_CPUMASK "0-2", NUL-terminated,
        # padded, with NLM_F_REQUEST | NLM_F_ACK, genl cmd GET version 1
        register = struct.pack("=IHHIIBBHHH", 28, FAMILY, 5, 2, 0, 1, 1, 0, 8, 3) + b"0-2\0"
        assert kernel.datagrams[1] == register
        assert registered(kernel) == {0: 1, 1: 1, 2: 1}
    deregister = struct.pack("=IHHIIBBHHH", 28, FAMILY, 5, 3, 0, 1, 1, 0, 8, 4) + b"0-2\0"
    assert kernel.datagrams[-1] == deregister
    assert registered(kernel) == {} and all(s.closed for s in kernel.sockets)


def test_groups_split_the_cpus(kernel: FakeKernel) -> None:
    with Listener(per_cpu=True) as listener:
        assert listener.masks() == ["0", "1", "2", "3"] and len(listener.fds) == 4
    with Listener(groups=3) as listener:
        assert listener.masks() == ["0-1", "2", "3"]
        assert listener.source == "kernel"


def test_exits_come_from_the_socket_of_their_cpu(kernel: FakeKernel) -> None:
    for pid in (41, 42, 43):
        kernel.add_task(pid)
    group = record(43, scope="tgid")
    with Listener(cpus=[0, 1], per_cpu=True) as listener:
        first = kernel.exit(41, cpu=1)
        second = kernel.exit(42, cpu=0)
        last = kernel.exit(43, cpu=1, group=group)
        got = listener.poll(0)
        assert sorted(e.pid for e in got if isinstance(e, ExitRecord)) == [41, 42, 43]
        by_pid = {e.pid: e for e in got if isinstance(e, ExitRecord)}
        assert by_pid[41].cpu == 1 and by_pid[42].cpu == 0
        assert by_pid[41].task == first.task and by_pid[42].task == second.task
        assert by_pid[43].group == last.group and by_pid[43].ended_process
        assert by_pid[41].seq == 0 and by_pid[43].seq == 1  # the CPU's own counter
        assert listener.received == 3 and listener.lost == 0
        assert listener.poll(0) == []


def test_an_overrun_is_counted_exactly(kernel: FakeKernel) -> None:
    for pid in range(100, 110):
        kernel.add_task(pid, version=17)
    with Listener(cpus=[0], rcvbuf=4096) as listener:  # 8 KiB: three records fit
        for pid in range(100, 110):
            kernel.exit(pid, cpu=0)
        assert listener.fill(0) == pytest.approx(3 * TRUESIZE / 8192)
        events = listener.drain()
        assert events[0] == Lost(records=7, reason="overrun", cpus="0")
        assert [e.pid for e in events[1:] if isinstance(e, ExitRecord)] == [100, 101, 102]
        assert events[1].task.payload_len == stats_size(17)  # type: ignore[union-attr]
        assert (listener.received, listener.lost, listener.drops()) == (3, 7, [7])
        kernel.add_task(111)
        kernel.exit(111, cpu=0)  # read empty, the socket takes records again
        assert [e.pid for e in listener.drain() if isinstance(e, ExitRecord)] == [111]


def test_truncated_and_malformed_datagrams_are_lost_records(kernel: FakeKernel) -> None:
    with Listener(cpus=[0]) as listener:
        sock = kernel.sockets[-1]
        sock.deliver(big_datagram(70000))
        sock.deliver(ts.encode_exit(FAMILY, ExitRecord(task=record(5), pid=5))[:-8])
        # taskstatsd's notice that it dropped 4 records for this slow client
        sock.deliver(nl.encode_error(errno.ENOBUFS, b"", seq=0, pid=0, ext_offset=4))
        assert listener.drain() == [Lost(1, "truncated", "0"), Lost(1, "malformed", "0"),
                                    Lost(4, "overrun", "0")]
        assert listener.lost == 6


def test_drain_raw_keeps_the_bytes_and_honours_its_limit(kernel: FakeKernel) -> None:
    for pid in (7, 8, 9):
        kernel.add_task(pid)
    with Listener(cpus=[2]) as listener:
        exits = [kernel.exit(pid, cpu=2) for pid in (7, 8, 9)]
        got = listener.drain_raw(0, limit=2)
        assert [e for e, _ in got] == [ExitRecord(task=x.task, pid=x.pid, tgid=x.tgid,
                                                  cpu=2, seq=x.seq) for x in exits[:2]]
        assert got[0][1] == ts.encode_exit(FAMILY, exits[0])
        assert [e.pid for e, _ in listener.drain_raw(0)] == [9]  # type: ignore[union-attr]


def test_iterating_yields_exits_as_they_come(kernel: FakeKernel) -> None:
    kernel.add_task(60)
    with Listener(cpus=[3]) as listener:
        kernel.exit(60, cpu=3)
        event = next(iter(listener))
        assert isinstance(event, ExitRecord) and event.pid == 60 and event.cpu == 3


def test_other_socket_errors_are_raised(kernel: FakeKernel) -> None:
    with Listener(cpus=[0]) as listener:
        kernel.sockets[-1].error = errno.ECONNRESET
        with pytest.raises(NetlinkError, match="exit listener: Connection reset"):
            listener.drain()


def test_a_refused_registration_closes_every_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeKernel(initial_ns=False, cpus=range(4)).install(monkeypatch)
    with pytest.raises(NetlinkError, match="initial user and PID namespaces"):
        Listener(cpus=[0, 1], per_cpu=True)
    assert kernel.sockets and all(s.closed for s in kernel.sockets)
    kernel.close()


@pytest.mark.parametrize(("mask", "err"), [("4", errno.ERANGE), ("2", errno.EINVAL)])
def test_impossible_cpus_get_the_kernels_errno(monkeypatch: pytest.MonkeyPatch, mask: str,
                                               err: int) -> None:
    """Beyond nr_cpu_ids, cpulist_parse() says ERANGE; a hole in the possible CPUs
    is EINVAL (not a subset)."""
    kernel = FakeKernel(cpus=[0, 1, 3]).install(monkeypatch)
    with pytest.raises(NetlinkError) as caught:
        Listener(cpus=mask)
    assert caught.value.errno == err and f"register cpumask {mask}" in str(caught.value)
    assert kernel.problems == []
    kernel.close()


def test_close_without_deregistering_leaves_the_kernel_to_prune(kernel: FakeKernel) -> None:
    kernel.add_task(70)
    listener = Listener(cpus=[0])
    listener.close(deregister=False)
    assert registered(kernel) == {0: 1}
    kernel.exit(70, cpu=0)  # ECONNREFUSED: the kernel forgets the closed socket
    assert registered(kernel) == {}


def test_a_failing_deregistration_still_closes(kernel: FakeKernel) -> None:
    listener = Listener(cpus=[0])
    kernel.sockets[-1].error = errno.ECONNRESET
    listener.close()
    assert all(s.closed for s in kernel.sockets)


def test_adopted_sockets_keep_their_queue(kernel: FakeKernel) -> None:
    """A successor adopts a registered socket (systemd's fd store): what queued
    meanwhile reaches it; registering again is a no-op."""
    for pid in range(80, 83):
        kernel.add_task(pid)
    first = Listener(cpus=[0, 1])
    fds = dict(zip(first.masks(), first.fds, strict=True))
    before = first.drops()
    for pid in range(80, 83):
        kernel.exit(pid, cpu=1)
    second = Listener(cpus=[0, 1], adopt=fds)
    assert second.fds == list(fds.values()) and registered(kernel) == {0: 1, 1: 1}
    assert second.account_drops(before) == []
    assert [e.pid for e in second.drain() if isinstance(e, ExitRecord)] == [80, 81, 82]
    second.close()
    first.close(deregister=False)


def test_adopted_sockets_keep_their_drop_count(kernel: FakeKernel) -> None:
    """Exits dropped between the handover and the adoption are counted as Lost."""
    for pid in range(80, 86):
        kernel.add_task(pid)
    first = Listener(cpus=[0, 1], rcvbuf=4096)
    fds = dict(zip(first.masks(), first.fds, strict=True))
    before = first.drops()
    for pid in range(80, 86):
        kernel.exit(pid, cpu=1)  # 3 queue, 3 are dropped
    second = Listener(cpus=[0, 1], rcvbuf=4096, adopt=fds)
    assert second.fds == list(fds.values()) and registered(kernel) == {0: 1, 1: 1}
    assert second.account_drops(before) == [Lost(3, "overrun", "0-1")]
    pids = [e.pid for e in second.drain() if isinstance(e, ExitRecord)]
    assert pids == [80, 81, 82] and second.lost == 3
    second.close()
    first.close(deregister=False)


def test_the_checker_catches_a_careless_request(kernel: FakeKernel) -> None:
    """The fake's strict check can fail: a stale sequence number, a stray nlmsg_pid,
    a GET with two attributes, an unterminated cpumask and trailing junk."""
    with Listener(cpus=[0]) as listener:
        sock = listener.conns[0].sock
        twice = nl.encode_u32(ts.ATTR_PID, 1) + nl.encode_u32(ts.ATTR_TGID, 1)
        unterminated = nl.encode_attr(ts.ATTR_REGISTER_CPUMASK, b"0")
        sock.send(genl.encode(FAMILY, ts.CMD_GET, twice, seq=1, pid=12345)
                  + genl.encode(FAMILY, ts.CMD_GET, unterminated, seq=sock.next_seq())
                  + b"junk")
        problems = list(kernel.problems)
        kernel.problems.clear()
    assert len(problems) == 5, problems
    assert "not whole messages" in problems[0]
    assert "not fresh" in problems[1] and "nlmsg_pid 12345" in problems[2]
    assert "exactly one of attributes" in problems[3]
    assert "not one NUL-terminated string" in problems[4]


# ---------------------------------------------------------------- against the real kernel

@pytest.mark.kernel
def test_the_fake_answers_as_the_live_kernel_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Family lookup, a GET of our own pid (with an ACK) and an unknown family, asked
    of the live kernel and of a fake that speaks its family id and struct version:
    the same fields, the same datagram sizes and headers."""
    require_kernel()  # (the marker's gate alone does not skip it: see conftest)
    live = _exchange(NetlinkSocket(1 << 16))
    family, version = live["family"], live["version"]
    assert isinstance(family, genl.FamilyInfo) and isinstance(version, int)
    fake = FakeKernel(family_id=family.id).install(monkeypatch)
    fake.add_task(os.getpid(), version=version)
    fake.add_group(os.getpid(), version=version)
    try:
        assert _exchange(NetlinkSocket(1 << 16)) == live
    finally:
        fake.close()


def _exchange(sock: NetlinkSocket) -> dict[str, object]:
    """What a kernel answers, minus what differs between two (record values)."""
    try:
        family = lookup_family(sock)
        out: dict[str, object] = {"family": family}
        for seq, request in enumerate([
                ts.encode_get_pid(family.id, os.getpid(), seq=10),
                ts.encode_get_tgid(family.id, os.getpid(), seq=11, ack=True),
                genl.encode_get_family("NO_SUCH_FAMILY", seq=12)], start=10):
            sock.send(request)
            for k in range(2 if seq == 11 else 1):
                n = sock.recv()
                data = bytes(sock.view[:n])
                header = list(nl.HEADER.unpack_from(data))
                header[4] = header[4] == sock.portid
                out[f"{seq}.{k}"] = (n, header, data[16:36] if n > 36 else data[16:])
                if seq == 10:
                    (reply,) = ts.decode(data, family.id)
                    assert isinstance(reply, ts.StatsReply)
                    out["version"] = reply.stats.version
                    out["payload_len"] = reply.stats.payload_len
        return out
    finally:
        sock.close()
