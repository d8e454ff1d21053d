"""taskstatsd answers raw frames as the kernel does: each probe goes to a real
NETLINK_GENERIC socket and to the daemon's socket in the same test, with the same
ack options (none, NETLINK_CAP_ACK, NETLINK_EXT_ACK, both: on the daemon through
TASKSTATSD SET_OPTIONS), and the answers must be byte-identical but for nlmsg_pid."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from pytaskstats import extproto
from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.kernel import Connection

from .daemon_util import RunningDaemon

pytestmark = pytest.mark.kernel
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
OPTIONS = {"none": (), "cap_ack": (NETLINK_CAP_ACK,), "ext_ack": (NETLINK_EXT_ACK,),
           "both": (NETLINK_CAP_ACK, NETLINK_EXT_ACK)}
NO_TASK = 0x7FFFFFFF  # beyond pid_max


def _probes(fam: int) -> dict[str, bytes]:
    """Request datagrams (seq 7); ``fam`` is the TASKSTATS family id."""
    me = os.getpid()
    pid = nl.encode_u32(ts.ATTR_PID, me)
    get = genl.encode(fam, ts.CMD_GET, pid, seq=7)
    return {
        "unknown command 7": genl.encode(fam, 7, pid, seq=7),
        "CMD_NEW": genl.encode(fam, ts.CMD_NEW, pid, seq=7),
        "cgroupstats NEW": genl.encode(fam, ts.CGROUPSTATS_CMD_NEW, b"", seq=7),
        "2-byte PID": genl.encode(fam, ts.CMD_GET, nl.encode_attr(ts.ATTR_PID, b"\1\0"), seq=7),
        "empty PID": genl.encode(fam, ts.CMD_GET, nl.encode_attr(ts.ATTR_PID, b""), seq=7),
        "2-byte cgroup fd": genl.encode(fam, ts.CGROUPSTATS_CMD_GET,
                                        nl.encode_attr(1, b"\1\0"), seq=7, flags=5),
        "no attribute": genl.encode(fam, ts.CMD_GET, b"", seq=7),
        "unknown attribute only": genl.encode(fam, ts.CMD_GET, nl.encode_u32(9, 1), seq=7),
        "no such task": genl.encode(fam, ts.CMD_GET, nl.encode_u32(ts.ATTR_PID, NO_TASK),
                                    seq=7),
        "no such task + trailing bytes": genl.encode(
            fam, ts.CMD_GET, nl.encode_u32(ts.ATTR_PID, NO_TASK) + b"\x10\0\1\0\0\0\0\0",
            seq=7, flags=5),
        "attribute past the end": genl.encode(fam, ts.CMD_GET, b"\x10\0\1\0\1\0\0\0", seq=7),
        "GETFAMILY by id": genl.encode(genl.GENL_ID_CTRL, genl.CTRL_CMD_GETFAMILY,
                                       nl.encode_attr(1, struct.pack("=H", fam)), seq=7),
        "GETFAMILY unknown id": genl.encode(genl.GENL_ID_CTRL, genl.CTRL_CMD_GETFAMILY,
                                            nl.encode_attr(1, struct.pack("=H", 0x7FF0)),
                                            seq=7),
        "GETFAMILY 1-byte id": genl.encode(genl.GENL_ID_CTRL, genl.CTRL_CMD_GETFAMILY,
                                           nl.encode_attr(1, b"\x1f"), seq=7),
        "GETFAMILY name without NUL": genl.encode(genl.GENL_ID_CTRL, genl.CTRL_CMD_GETFAMILY,
                                                  nl.encode_attr(2, b"TASKSTATS"), seq=7),
        "GETFAMILY nothing": genl.encode(genl.GENL_ID_CTRL, genl.CTRL_CMD_GETFAMILY, b"",
                                         seq=7),
        "GETFAMILY bad name + id": genl.encode(
            genl.GENL_ID_CTRL, genl.CTRL_CMD_GETFAMILY,
            nl.encode_str(2, "NOPE") + nl.encode_attr(1, struct.pack("=H", fam)), seq=7),
        "nlctrl command 7": genl.encode(genl.GENL_ID_CTRL, 7, b"", seq=7),
        "no genlmsghdr": nl.encode_message(fam, nl.NLM_F_REQUEST, 7, 0, b"\1"),
        "unknown family": nl.encode_message(0x7FFE, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 7, 0,
                                            b"\1\1\0\0"),
        "dump": genl.encode(fam, ts.CMD_GET, pid, seq=7, flags=nl.NLM_F_REQUEST | 0x300),
        "no NLM_F_REQUEST": genl.encode(fam, ts.CMD_GET, pid, seq=7, flags=0),
        "no NLM_F_REQUEST, NLM_F_ACK": genl.encode(fam, 7, pid, seq=7, flags=nl.NLM_F_ACK),
        "NOOP with NLM_F_ACK": nl.encode_message(nl.NLMSG_NOOP, 5, 7, 0, b""),
        "nlmsg_len 8 stops the walk": (genl.encode(fam, 7, b"", seq=6)
                                       + struct.pack("=IHHII", 8, fam, 1, 7, 0) + get),
        "truncated": get[:-4],
        "claims more than sent": struct.pack("=IHHII", 100, fam, 1, 7, 0) + b"\0" * 8,
        "stray bytes after": genl.encode(fam, 7, b"", seq=7) + b"\1\2\3",
        "two bytes": b"\1\2",
    }


def _kernel(opts: tuple[int, ...]) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 16)
    sock.bind((0, 0))
    for opt in opts:
        sock.setsockopt(SOL_NETLINK, opt, 1)
    return sock


def _daemon(path: str, opts: tuple[int, ...]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.connect(path)
    sock.send(extproto.encode_request(extproto.CMD_SET_OPTIONS, {
        "cap_ack": NETLINK_CAP_ACK in opts, "ext_ack": NETLINK_EXT_ACK in opts}, seq=1,
        flags=nl.NLM_F_REQUEST | nl.NLM_F_ACK))
    assert len(_exchange(sock, b"")) == 1  # the ACK
    return sock


def _exchange(sock: socket.socket, data: bytes) -> list[bytes]:
    """Send ``data``, then a NOOP+ACK marker; the messages answered before the
    marker's ACK, each with nlmsg_pid zeroed (the kernel's port id, the daemon's
    connection id) and a stats record's changing counters cut off."""
    marker = nl.encode_message(nl.NLMSG_NOOP, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 999, 0, b"")
    if data:
        sock.send(data)
    sock.send(marker)
    sock.settimeout(5)
    out: list[bytes] = []
    while True:
        raw = sock.recv(1 << 17)
        for msg in nl.split_messages(raw):
            whole = bytearray(raw[msg.start - 16:msg.end])
            whole[12:16] = b"\0\0\0\0"
            if msg.seq == 999:
                return out
            out.append(bytes(whole[:32]) if msg.type >= nl.NLMSG_MIN_TYPE else bytes(whole))


@pytest.mark.parametrize("option", OPTIONS)
def test_the_daemon_answers_as_the_kernel(daemon: RunningDaemon, option: str) -> None:
    with Connection() as conn, _kernel(OPTIONS[option]) as kernel, \
            _daemon(daemon.socket, OPTIONS[option]) as ours:
        answers = {name: (_exchange(kernel, data), _exchange(ours, data))
                   for name, data in _probes(conn.family.id).items()}
    assert {k: v for k, v in answers.items() if v[0] != v[1]} == {}
    assert answers["GETFAMILY by id"][0] and not answers["no NLM_F_REQUEST"][0]


def test_cgroupstats_on_cgroup2_is_einval_and_counted_by_the_extension(
        daemon: RunningDaemon) -> None:
    with Connection() as conn:
        family = conn.family.id
    fd = os.open("/sys/fs/cgroup/unified", os.O_RDONLY | os.O_DIRECTORY)
    request = ts.encode_cgroup_get(family, fd, seq=7)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16) as kernel:
            kernel.send(request)
            (from_kernel,) = ts.decode(kernel.recv(65536), family)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(5)
            s.connect(daemon.socket)
            socket.send_fds(s, [request], [fd])
            (from_daemon,) = ts.decode(s.recv(65536), family)
        assert isinstance(from_kernel, nl.ErrorReply) and from_kernel.error == 22
        assert from_daemon == from_kernel
        with Connection(socket_path=daemon.socket) as conn:
            counts = conn.cgroup2(fd)
        assert counts.source == "daemon" and counts.nr_sleeping + counts.nr_running > 0
    finally:
        os.close(fd)


@pytest.mark.parametrize("flags", [nl.NLM_F_REQUEST, nl.NLM_F_REQUEST | nl.NLM_F_ACK])
@pytest.mark.parametrize("path", ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/unified", "/"])
def test_cgroupstats_of_an_o_path_fd_is_answered_as_the_kernel_does(
        daemon: RunningDaemon, path: str, flags: int) -> None:
    """The kernel's fdget() skips O_PATH files: it answers such an fd with nothing but
    the ACK asked for (once answered EIO by taskstatsd, whatever the directory)."""
    if not os.path.isdir(path):
        pytest.skip(f"no {path} here")
    with Connection() as conn:
        family = conn.family.id
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    request = genl.encode(family, ts.CGROUPSTATS_CMD_GET, nl.encode_u32(1, fd), seq=7,
                          flags=flags)
    try:
        with _kernel(()) as kernel, _daemon(daemon.socket, ()) as ours:
            from_kernel = _exchange(kernel, request)
            ours.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      struct.pack("=i", fd))])
            from_daemon = _exchange(ours, b"")
    finally:
        os.close(fd)
    bare_ack = [nl.encode_message(nl.NLMSG_ERROR, 0x100, 7, 0,
                                  struct.pack("=i", 0) + request[:16])]
    assert from_kernel == (bare_ack if flags & nl.NLM_F_ACK else [])  # as described
    assert from_daemon == from_kernel
