"""kernel.Connection against the fake kernel (tests/fakekernel.py), without root:
the family lookup, single queries in every struct version, error translation, the
pipelined bulk query (window, reordering, retries after a timeout or an overrun,
vanished and refused tasks), MSG_TRUNC and cgroupstats."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from pytaskstats import AccessDenied, NoSuchTask, Unsupported
from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.errors import NetlinkError, RemoteProtocolError, TaskstatsError
from pytaskstats.fields import Scope
from pytaskstats.kernel import Connection
from pytaskstats.records import CgroupStats

from .fakekernel import TRUESIZE, FakeKernel, Tamper, big_datagram, stats_size, with_seq

ME = os.getpid()


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    """The fake kernel, installed; the test fails if the client sent it anything a
    careful client would not."""
    fake = FakeKernel(cpus=range(4)).install(monkeypatch)
    yield fake
    fake.close()
    assert fake.problems == [], "the client sent requests the fake kernel objects to"


def seq_of(datagram: bytes) -> int:
    return nl.split_messages(datagram)[0].seq


def ack_of(datagram: bytes) -> bytes:
    """An ACK (error 0) with the sequence number and port of ``datagram``."""
    msg = nl.split_messages(datagram)[0]
    return nl.encode_error(0, datagram[:16], seq=msg.seq, pid=msg.pid)


def once(kernel: FakeKernel, tamper: Tamper) -> Tamper:
    """``tamper`` for the next request datagram only."""
    def first(replies: list[bytes]) -> list[bytes]:
        kernel.tamper = None
        return tamper(replies)
    return first


def gets(kernel: FakeKernel) -> list[tuple[str, int | str]]:
    return [(r.op, r.value) for r in kernel.requests if isinstance(r, ts.Request)]


# ---------------------------------------------------------------- family lookup

def test_family_lookup_reads_what_nlctrl_says(kernel: FakeKernel) -> None:
    with Connection() as conn:
        assert conn.family == kernel.family
        assert conn.source == "kernel" and conn.sock.portid == ME  # autobind: our pid
        assert conn.sock.rcvbuf == 2 << 20 and conn.window == 256  # SO_RCVBUFFORCE, 1 MiB
    assert kernel.requests == [("getfamily", "TASKSTATS")]
    assert kernel.sockets[0].closed


def test_a_second_socket_gets_another_port(kernel: FakeKernel) -> None:
    with Connection() as one, Connection() as two:
        assert one.sock.portid == ME and two.sock.portid not in (0, ME)


def test_no_taskstats_family_is_unsupported(kernel: FakeKernel) -> None:
    kernel.family = None
    with pytest.raises(Unsupported, match="no TASKSTATS generic netlink family"):
        Connection()
    assert kernel.sockets[0].closed


def test_no_netlink_at_all_is_unsupported(kernel: FakeKernel) -> None:
    kernel.refuse_sockets = errno.EAFNOSUPPORT
    with pytest.raises(Unsupported, match="no AF_NETLINK; use the procfs source"):
        Connection()


def test_family_lookup_skips_stray_answers(kernel: FakeKernel) -> None:
    kernel.tamper = lambda replies: [with_seq(replies[0], 999), ack_of(replies[0]), *replies]
    with Connection() as conn:
        assert conn.family == kernel.family


def test_family_lookup_without_an_answer_times_out(kernel: FakeKernel) -> None:
    kernel.tamper = lambda replies: []
    with pytest.raises(TaskstatsError, match="family lookup: no answer from the kernel"):
        Connection(timeout=0.5)


def test_unprivileged_connection_works_but_queries_are_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeKernel(privileged=False).install(monkeypatch)
    kernel.add_task(ME)
    with Connection() as conn:
        assert conn.sock.rcvbuf == 2 * 212992  # SO_RCVBUF, capped by rmem_max
        assert conn.window == 2 * 212992 // 4096
        with pytest.raises(AccessDenied, match="needs CAP_NET_ADMIN") as err:
            conn.query("pid", ME)
    assert err.value.pid == ME
    kernel.close()


# ---------------------------------------------------------------- single queries

@pytest.mark.parametrize("version", [8, 10, 14, 15, 16, 17])
def test_query_decodes_the_version_the_kernel_speaks(kernel: FakeKernel, version: int) -> None:
    want = kernel.add_task(4321, version=version, comm="worker")
    with Connection() as conn:
        got = conn.query("pid", 4321)
    assert got == want and got.version == version and got.ac_comm == "worker"
    assert got.payload_len == stats_size(version)
    assert (got.ac_btime64 is None) == (version < 10)
    assert (got.cpu_delay_max is None) == (version < 15)
    assert gets(kernel) == [("pid", 4321)]


def test_thread_group_query(kernel: FakeKernel) -> None:
    want = kernel.add_group(777)
    with Connection() as conn:
        got = conn.query("tgid", 777)
    assert got == want and got.scope == "tgid" and got.ac_comm is None
    assert gets(kernel) == [("tgid", 777)]


@pytest.mark.parametrize(("err", "cls", "fragment"), [
    (errno.ESRCH, NoSuchTask, "no such task"),
    (errno.EPERM, AccessDenied, "needs CAP_NET_ADMIN"),
    (errno.EINVAL, NetlinkError, "invalid argument"),
    (errno.EBUSY, NetlinkError, "Device or resource busy"),
])
@pytest.mark.parametrize("scope", ["pid", "tgid"])
def test_errors_become_exceptions_naming_the_task(
        kernel: FakeKernel, scope: Scope, err: int, cls: type[TaskstatsError],
        fragment: str) -> None:
    kernel.add_task(55)
    kernel.add_group(55)
    if err != errno.ESRCH:
        kernel.errors[scope, 55] = err
    else:
        kernel.tasks.clear()
        kernel.groups.clear()
    with Connection() as conn, pytest.raises(cls, match=fragment) as caught:
        conn.query(scope, 55)
    if err != errno.EINVAL:  # (errors._einval names only the operation)
        assert f"query {scope} 55" in str(caught.value)
    assert getattr(caught.value, scope) == 55
    if isinstance(caught.value, NetlinkError):
        assert caught.value.errno == err and caught.value.seq == 2


def test_query_sets_aside_exits_and_stale_replies(kernel: FakeKernel) -> None:
    want = kernel.add_task(ME)
    kernel.add_task(900)
    with Connection() as conn:
        conn.register("0")
        exited = kernel.exit(900, cpu=0)
        kernel.tamper = lambda replies: [with_seq(replies[0], 1), *replies]
        assert conn.query("pid", ME) == want
        assert list(conn.pending_exits) == [exited]


def test_a_query_answered_without_a_record_is_a_protocol_error(kernel: FakeKernel) -> None:
    kernel.add_task(ME)
    with Connection() as conn:
        kernel.tamper = lambda replies: [ack_of(r) for r in replies]
        with pytest.raises(RemoteProtocolError, match="answered the pid query with no record"):
            conn.query("pid", ME)


def test_a_query_without_an_answer_times_out(kernel: FakeKernel) -> None:
    kernel.add_task(ME)
    with Connection(timeout=0.5) as conn:
        kernel.tamper = lambda replies: []
        with pytest.raises(TaskstatsError, match="query: no answer from the kernel within"):
            conn.query("pid", ME)
        assert kernel.sockets[0].timeouts == 1


def test_a_truncated_datagram_is_a_protocol_error(kernel: FakeKernel) -> None:
    kernel.add_task(ME)
    with Connection() as conn:
        kernel.tamper = lambda replies: [big_datagram(70000)]
        with pytest.raises(RemoteProtocolError, match="70000 bytes truncated to 65536"):
            conn.query("pid", ME)


def test_an_overrun_during_a_query_says_records_were_lost(kernel: FakeKernel) -> None:
    kernel.add_task(ME)
    for pid in range(100, 110):
        kernel.add_task(pid)
    with Connection(rcvbuf=4096) as conn:  # 8 KiB: three replies fit
        conn.register("0")
        for pid in range(100, 110):
            kernel.exit(pid, cpu=0)
        assert conn.sock.drops() == 7
        with pytest.raises(NetlinkError, match="receive buffer overrun") as caught:
            conn.query("pid", ME)
    assert caught.value.errno == errno.ENOBUFS


def test_sequence_numbers_wrap_past_zero(kernel: FakeKernel) -> None:
    want = kernel.add_task(ME)
    with Connection() as conn:
        conn.sock.seq = 0xFFFFFFFD
        assert conn.query("pid", ME) == want
        assert conn.query("pid", ME) == want
        assert conn.sock.seq == 1
    assert [r.seq for r in kernel.requests if isinstance(r, ts.Request)] == [0xFFFFFFFE, 1]


# ---------------------------------------------------------------- bulk queries

def test_bulk_query_keeps_within_its_window(kernel: FakeKernel) -> None:
    want = {pid: kernel.add_task(pid) for pid in range(1000, 1050)}
    with Connection(rcvbuf=16384) as conn:  # 32 KiB: a window of 8
        assert conn.window == 8
        sent_before = len(kernel.datagrams)
        assert conn.query_many("pid", want) == want
        assert conn.sock.drops() == 0
    bulk = kernel.datagrams[sent_before:]
    assert all(len(nl.walk(d)) <= 8 for d in bulk)
    assert sorted(v for op, v in gets(kernel) if op == "pid") == sorted(want)


def test_bulk_query_leaves_out_vanished_and_refused_tasks(kernel: FakeKernel) -> None:
    want = {pid: kernel.add_task(pid) for pid in (10, 11, 12)}
    kernel.add_task(13)
    kernel.errors["pid", 13] = errno.EPERM
    with Connection() as conn:
        got = conn.query_many("pid", [10, 99, 11, 12, 98])
        assert got == want and got.denied == () and sorted(got.vanished) == [98, 99]
        got = conn.query_many("pid", [10, 13, 11, 12], skip_denied=True)
        assert got == want and got.denied == (13,)
        with pytest.raises(AccessDenied) as caught:
            conn.query_many("pid", [10, 13])
        assert caught.value.pid == 13


def test_bulk_query_error_names_the_thread_group(kernel: FakeKernel) -> None:
    kernel.add_group(20)
    kernel.errors["tgid", 20] = errno.EBUSY
    with Connection() as conn, pytest.raises(NetlinkError, match="query tgid 20") as caught:
        conn.query_many("tgid", [20])
    assert caught.value.tgid == 20 and caught.value.errno == errno.EBUSY


def test_bulk_query_matches_replies_out_of_order(kernel: FakeKernel) -> None:
    want = {pid: kernel.add_task(pid) for pid in range(200, 230)}
    kernel.tamper = lambda replies: replies[::-1]
    with Connection() as conn:
        assert conn.query_many("pid", want) == want


def test_bulk_query_asks_again_for_a_reply_lost_to_a_timeout(kernel: FakeKernel) -> None:
    want = {pid: kernel.add_task(pid) for pid in range(300, 310)}
    with Connection(timeout=0.5) as conn:
        # the first batch: one reply comes with a sequence number nobody asked for
        kernel.tamper = once(kernel, lambda replies: [with_seq(replies[0], 12345),
                                                      *replies[1:]])
        first = conn.sock.seq + 1
        result = conn.query_many("pid", want)
        assert result == want
        assert kernel.sockets[0].timeouts == 1
    asked = [v for op, v in gets(kernel)]
    assert asked == [*range(300, 310), 300]  # only the lost one again
    assert [r.seq for r in kernel.requests if isinstance(r, ts.Request)][-1] == first + 10


def test_bulk_query_gives_up_after_one_retry(kernel: FakeKernel) -> None:
    for pid in range(300, 305):
        kernel.add_task(pid)
    with Connection(timeout=0.5) as conn:
        kernel.tamper = lambda replies: replies[1:]
        with pytest.raises(TaskstatsError, match=r"bulk pid query: \d+ replies did not come"):
            conn.query_many("pid", range(300, 305))


def test_bulk_query_keeps_the_replies_queued_before_an_overrun(kernel: FakeKernel) -> None:
    """ENOBUFS comes before the replies already queued: those still answer."""
    want = {pid: kernel.add_task(pid) for pid in range(400, 440)}
    with Connection() as conn:
        conn.sock.sock.error = errno.ENOBUFS  # type: ignore[attr-defined]
        assert conn.query_many("pid", want) == want
    assert sorted(v for op, v in gets(kernel)) == sorted(want)


def test_bulk_query_survives_an_overrun_with_replies_still_queued(kernel: FakeKernel) -> None:
    """As the live kernel behaves (probed on 6.18): after an overrun the socket stays
    congested, dropping every reply, until a recv finds its queue empty; ENOBUFS is
    reported before the replies already queued."""
    want = {pid: kernel.add_task(pid) for pid in range(500, 540)}
    with Connection() as conn:
        sock = kernel.sockets[0]
        full, sock.rcvbuf = sock.rcvbuf, 6 * TRUESIZE  # pressure on the first batch only

        def relieve() -> None:
            sock.rcvbuf, kernel.after = full, None

        kernel.after = relieve
        assert conn.query_many("pid", want) == want
        assert sock.drops == 2 * 34  # each lost reply, and its EAGAIN error after it
    asked = [v for op, v in gets(kernel)]
    assert asked == [*range(500, 540), *range(506, 540)]  # six fit: the rest again


def test_bulk_query_reads_past_a_second_overrun_while_draining(kernel: FakeKernel) -> None:
    want = {pid: kernel.add_task(pid) for pid in range(600, 610)}
    with Connection() as conn:
        conn.sock.sock.error = errno.ENOBUFS  # type: ignore[attr-defined]
        conn.sock.sock.more_errors = [errno.ENOBUFS]  # type: ignore[attr-defined]
        assert conn.query_many("pid", want) == want
        conn.sock.sock.error = errno.ENOBUFS  # type: ignore[attr-defined]
        conn.sock.sock.more_errors = [errno.ECONNRESET]  # type: ignore[attr-defined]
        with pytest.raises(NetlinkError, match="bulk query: Connection reset"):
            conn.query_many("pid", want)


def test_bulk_query_reports_other_socket_errors(kernel: FakeKernel) -> None:
    kernel.add_task(ME)
    with Connection() as conn:
        conn.sock.sock.error = errno.ECONNRESET  # type: ignore[attr-defined]
        with pytest.raises(NetlinkError, match="bulk query: Connection reset"):
            conn.query_many("pid", [ME])


def test_bulk_query_sets_aside_exit_records(kernel: FakeKernel) -> None:
    want = {pid: kernel.add_task(pid) for pid in (1, 2)}
    kernel.add_task(3)
    with Connection() as conn:
        conn.register("1")
        exited = kernel.exit(3, cpu=1)
        assert conn.query_many("pid", want) == want
        assert list(conn.pending_exits) == [exited]


def test_bulk_query_of_nothing_sends_nothing(kernel: FakeKernel) -> None:
    with Connection() as conn:
        before = len(kernel.datagrams)
        assert conn.query_many("pid", []) == {}
        assert len(kernel.datagrams) == before


def test_bulk_requests_are_byte_identical_to_single_ones(kernel: FakeKernel) -> None:
    kernel.add_task(ME)
    with Connection() as conn:
        conn.query_many("pid", [ME])
        conn.query("pid", ME)
    family = conn.family.id
    bulk, single = kernel.datagrams[-2:]
    assert bulk == ts.encode_get_pid(family, ME, seq=2)
    assert single == ts.encode_get_pid(family, ME, seq=3)


# ---------------------------------------------------------------- cgroupstats

def test_cgroupstats_needs_no_privilege(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeKernel(privileged=False).install(monkeypatch)
    kernel.cgroups[7] = CgroupStats(1, 2, 3, 4, 5)
    with Connection() as conn:
        assert conn.cgroup(7) == CgroupStats(1, 2, 3, 4, 5)
    (request,) = [r for r in kernel.requests if isinstance(r, ts.Request)]
    assert (request.op, request.value, request.flags) == ("cgroup", 7, nl.NLM_F_REQUEST
                                                          | nl.NLM_F_ACK)
    assert kernel.problems == []
    kernel.close()


def test_cgroupstats_of_a_bad_fd_gets_only_the_ack(kernel: FakeKernel) -> None:
    with Connection() as conn, pytest.raises(TaskstatsError, match="no answer for fd 9"):
        conn.cgroup(9)


def test_cgroupstats_of_a_cgroup2_directory_says_v1_only(kernel: FakeKernel) -> None:
    kernel.cgroups[8] = errno.EINVAL
    with Connection() as conn, pytest.raises(NetlinkError, match="cgroup v1 directories"):
        conn.cgroup(8)


# ---------------------------------------------------------------- the kernel's own rules

def test_the_fake_answers_a_bad_attribute_as_the_kernel_does(kernel: FakeKernel) -> None:
    """A PID attribute of 2 bytes fails the policy (ERANGE), echoing the request;
    a message without NLM_F_REQUEST is not processed; the checker notes both."""
    with Connection() as conn:
        family = conn.family.id
        bad = genl.encode(family, ts.CMD_GET, nl.encode_attr(ts.ATTR_PID, b"\1\0"), seq=5)
        conn.sock.send(bad)
        n = conn.sock.recv()
        (reply,) = ts.decode(conn.sock.view, family, n)
        assert isinstance(reply, nl.ErrorReply) and reply.error == errno.ERANGE
        assert bytes(conn.sock.view[20:20 + len(bad)]) == bad  # echoed whole
        conn.sock.send(genl.encode(family, ts.CMD_GET, nl.encode_u32(ts.ATTR_PID, ME),
                                   seq=6, flags=0))
        with pytest.raises(BlockingIOError):
            conn.sock.sock.recv_into(conn.sock.buffer, 0, 0x40)  # MSG_DONTWAIT
    assert len(kernel.problems) == 2
    assert "a u32 of 2 bytes" in kernel.problems[0] and "flags 0x0" in kernel.problems[1]
    kernel.problems.clear()
