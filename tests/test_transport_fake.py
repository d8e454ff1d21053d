"""The kernel client over taskstatsd's Unix socket, and the proc connector's socket,
against the fakes (tests/fakedaemon.py, tests/fakekernel.py), without root: the
options sent first, queries and refusals by policy, the extension commands with
their errors, passed fds, a refused connection, a daemon that hangs up."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytaskstats import AccessDenied, ExitRecord, Unsupported
from pytaskstats import kernel as kernel_mod
from pytaskstats import netlink as nl
from pytaskstats.errors import NetlinkError, RemoteProtocolError, TaskstatsError
from pytaskstats.kernel import Connection
from pytaskstats.listener import Listener
from pytaskstats.records import CgroupStats
from pytaskstats.transport import ConnectorSocket

from .fakedaemon import FakeDaemon, protocol
from .fakekernel import FakeKernel, with_seq

PATH = "/run/fake/taskstatsd.sock"


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeDaemon]:
    """The fake taskstatsd at PATH; the test fails if the client sent it anything odd."""
    possible = tmp_path / "possible"
    possible.write_text("0-3\n")
    monkeypatch.setattr(kernel_mod, "POSSIBLE_CPUS", str(possible))
    fake = FakeDaemon(PATH, cpus=range(4))
    fake.install(monkeypatch)
    yield fake
    fake.close()
    assert fake.problems == [], "the client sent requests the fake daemon objects to"


def test_a_connection_asks_for_capped_acks_with_texts_first(daemon: FakeDaemon) -> None:
    want = daemon.add_task(os.getpid())
    with Connection(socket_path=PATH) as conn:
        assert conn.source == "daemon" and conn.family == daemon.family
        got = conn.query("pid", os.getpid())
    assert got == want._replace(source="daemon")
    options = json.dumps({"cap_ack": True, "ext_ack": True}, sort_keys=True)
    assert daemon.requests[0] == (f"extension {protocol.CMD_SET_OPTIONS}", options)
    assert daemon.sockets[0].cap_ack and daemon.sockets[0].ext_ack


def test_a_refusal_by_policy_carries_the_daemons_text(daemon: FakeDaemon) -> None:
    daemon.add_task(1)
    daemon.errors["pid", 1] = errno.EPERM
    with Connection(socket_path=PATH) as conn:
        with pytest.raises(AccessDenied, match="taskstatsd's policy refused it") as caught:
            conn.query("pid", 1)
        assert caught.value.pid == 1
        got = conn.query_many("pid", [1], skip_denied=True)
        assert got == {} and got.denied == (1,)


def test_status_history_and_their_errors(daemon: FakeDaemon) -> None:
    daemon.rows = [{"pid": n} for n in range(3)]
    daemon.note = "answer cut at 3 rows"
    with Connection(socket_path=PATH) as conn:
        daemon.tamper = lambda replies: [with_seq(replies[0], 4242), *replies]
        assert conn.extension(protocol.CMD_STATUS, {}) == daemon.status
        daemon.tamper = None
        rows = conn.extension(protocol.CMD_HISTORY, {"limit": 3})
        assert list(rows) == daemon.rows and rows.note == "answer cut at 3 rows"
        with pytest.raises(NetlinkError, match="unknown parameter 'bad'") as caught:
            conn.extension(protocol.CMD_HISTORY, {"bad": 1})
    assert caught.value.errno == errno.EINVAL


def test_cgroup2_counts_come_for_a_passed_fd(daemon: FakeDaemon, tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        daemon.cgroup2[fd] = {"nr_sleeping": 1, "nr_running": 2, "nr_stopped": 3,
                              "nr_uninterruptible": 4, "nr_io_wait": 5}
        with Connection(socket_path=PATH) as conn:
            assert conn.cgroup2(fd) == CgroupStats(1, 2, 3, 4, 5, source="daemon")
            daemon.cgroup2[fd] = {"nr_sleeping": -1}
            with pytest.raises(RemoteProtocolError, match="not a JSON object"):
                conn.cgroup2(fd)
            daemon.cgroups[fd] = CgroupStats(5, 4, 3, 2, 1)  # v1 counts, by the kernel
            assert conn.cgroup(fd) == CgroupStats(5, 4, 3, 2, 1, source="daemon")
    finally:
        os.close(fd)


def test_a_listener_through_the_daemon(daemon: FakeDaemon) -> None:
    daemon.add_task(99)
    with Listener(cpus=[0, 1], socket_path=PATH) as listener:
        assert listener.source == "daemon" and listener.fill(0) == 0.0
        assert listener.drops() == [0]
        daemon.exit(99, cpu=1)
        (event,) = listener.poll(0)
        assert isinstance(event, ExitRecord) and event.pid == 99
        assert event.task.source == "daemon"


@pytest.mark.parametrize("closed_first", [True, False])
def test_a_refused_connection_says_why(daemon: FakeDaemon, closed_first: bool) -> None:
    """Read after a failed send, or as the answer to the first request."""
    daemon.refusal = "too many clients of uid 1000 (at most 16)"
    daemon.refusal_closes = closed_first
    with pytest.raises(TaskstatsError, match=r"too many clients of uid 1000 \(at most 16\)"):
        Connection(socket_path=PATH)


def test_a_daemon_that_hangs_up(daemon: FakeDaemon) -> None:
    daemon.add_task(5)
    with Connection(socket_path=PATH) as conn:
        daemon.hang_up()
        with pytest.raises(TaskstatsError, match="taskstatsd closed the connection"):
            conn.query("pid", 5)
    with Connection(socket_path=PATH) as conn:
        daemon.tamper = lambda replies: []  # it reads the request, then stops
        daemon.after = daemon.hang_up
        with pytest.raises(TaskstatsError, match="taskstatsd closed the connection"):
            conn.query("pid", 5)
    daemon.tamper = daemon.after = None
    with Connection(socket_path=PATH) as conn:  # a last word that is no refusal
        daemon.tamper = lambda replies: [nl.encode_error(errno.ENOMEM, b"", seq=0, pid=0)]
        daemon.after = daemon.hang_up
        with pytest.raises(TaskstatsError, match="taskstatsd closed the connection"):
            conn.query("pid", 5)


def test_no_daemon_at_the_path(daemon: FakeDaemon) -> None:
    with pytest.raises(TaskstatsError, match=r"cannot reach taskstatsd at /nowhere\.sock"):
        Connection(socket_path="/nowhere.sock")


# ---------------------------------------------------------------- the proc connector

def test_the_proc_connector_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeKernel().install(monkeypatch)
    sock = ConnectorSocket(1 << 20)
    assert sock.drops() == 0 and len(kernel.datagrams) == 1  # the listen request
    sock.close()
    kernel.connector_refused = True
    with pytest.raises(Unsupported, match="the proc connector refused us"):
        ConnectorSocket()
    kernel.privileged = False
    with pytest.raises(Unsupported, match="no proc connector"):
        ConnectorSocket()
    kernel.close()
