"""Hostile frames against a live taskstatsd: the crashes of issue 11 (finding 8)
answered EINVAL with a message naming the parameter, and 100,000 mutated frames
without one "internal error", a lost fd or a dead daemon.  Also the JSON bound and
the schema as pure functions, by hypothesis."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytaskstats import Client, RemoteProtocolError, extproto
from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.daemon import schema
from pytaskstats.kernel import Connection

from .conftest import as_nobody, require_kernel, wait_until
from .daemon_util import RunningDaemon

SEED = 11
FRAMES = 100_000
BATCH = 250


@pytest.fixture
def daemon() -> Iterator[RunningDaemon]:
    """A taskstatsd of the test's own, whose stderr the test reads at the end.  Its
    journal is kept small: it records every exit on the machine, and fuzzed history
    requests scan it (under other runs' storms a large one stalled the test)."""
    require_kernel()
    d = RunningDaemon(None, "--max-journal-mb", "2")
    try:
        yield d
    finally:
        d.close()


def _stderr(daemon: RunningDaemon) -> str:
    """Stop the daemon; its stderr."""
    assert daemon.proc is not None and daemon.proc.stderr is not None
    daemon.proc.terminate()
    out = daemon.proc.stderr.read().decode(errors="replace")
    daemon.proc.stderr.close()
    daemon.proc.wait(timeout=20)
    return out


def _connect(daemon: RunningDaemon) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    s.settimeout(60)  # a loaded machine (a second suite beside) stalls the daemon for seconds
    s.connect(daemon.socket)
    s.send(extproto.encode_request(extproto.CMD_SET_OPTIONS, {"ext_ack": True}, seq=1))
    return s


def _extension(cmd: int, body: bytes, seq: int = 5) -> bytes:
    return genl.encode(extproto.FAMILY_ID, cmd, nl.encode_attr(extproto.ATTR_JSON, body),
                       seq=seq)


CRASHES = {  # issue 11's tracebacks, each now EINVAL naming the parameter
    "since_ns too big for SQLite (OverflowError)": (extproto.CMD_HISTORY,
                                                    b'{"since_ns": 1' + b"0" * 30 + b"}",
                                                    "since_ns"),
    "a list where an int goes (ProgrammingError)": (extproto.CMD_HISTORY, b'{"limit": [1]}',
                                                    "limit"),
    "an int where a string goes (removeprefix)": (extproto.CMD_HISTORY, b'{"sort": 5}',
                                                  "sort"),
    "status with a parameter": (extproto.CMD_STATUS, b'{"since_ns": 1e400}', "since_ns"),
    "deep nesting (RecursionError)": (extproto.CMD_HISTORY, b"[" * 10_000 + b"]" * 10_000,
                                      "nested deeper"),
    "a lone surrogate": (extproto.CMD_HISTORY, b'{"comm": "\\ud800"}', "comm"),
}


def test_bad_extension_parameters_are_einval_with_a_message(daemon: RunningDaemon) -> None:
    with _connect(daemon) as s:
        for name, (cmd, body, fragment) in CRASHES.items():
            s.send(_extension(cmd, body))
            (reply,) = ts.decode(s.recv(1 << 17), 0x7FFF)
            assert isinstance(reply, nl.ErrorReply), name
            assert (reply.error, fragment in reply.ext_message) == (errno.EINVAL, True), name
    assert "internal error" not in _stderr(daemon)


AS_NOBODY = """
import sys
from pytaskstats import Client, NetlinkError
from pytaskstats import extproto
with Client("daemon", socket_path=sys.argv[1]) as c:
    for params in ({"sort": 5}, {"since_ns": 10 ** 30}, {"uid": [0]}):
        try:
            c.history(**params)
        except NetlinkError as err:
            print(err.errno, err.ext_message.split(":")[0])
"""


def test_an_unprivileged_client_gets_einval_naming_the_parameter(
        daemon: RunningDaemon, nobody_env: dict[str, str]) -> None:
    """Through the Client, which opts in to extended ACKs for the messages."""
    done = as_nobody(nobody_env, "-c", AS_NOBODY, daemon.socket)
    assert done.stdout.splitlines() == ["22 sort", "22 since_ns", "22 uid"], done.stderr
    assert "internal error" not in _stderr(daemon)


def _bases(family: int, rng: random.Random) -> list[bytes]:
    """Well-formed requests of every kind the fuzz mutates."""
    docs = [{}, {"since_ns": rng.randrange(-2**70, 2**70)}, {"sort": "-pid", "limit": 3},
            {"fields": ["ac_utime"], "bucket_s": 60}, {"group_by": "comm"},
            {"cap_ack": True}, {"comm": ["x"]}, {"totals": True, "uid": 0}]
    ext = [_extension(cmd, json.dumps(rng.choice(docs)).encode(), seq=rng.randrange(1 << 32))
           for cmd in (1, 2, 4, 5, 9)]
    return [ts.encode_get_pid(family, os.getpid(), seq=3),
            ts.encode_get_tgid(family, 1, seq=3, ack=True),
            ts.encode_register(family, "0", seq=3), ts.encode_deregister(family, "0", seq=3),
            ts.encode_cgroup_get(family, 3, seq=3),
            genl.encode_get_family(ts.FAMILY_NAME, seq=3),
            genl.encode(genl.GENL_ID_CTRL, 3, nl.encode_attr(1, struct.pack("=H", family)),
                        seq=3), *ext]


def _mutate(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randrange(1, 4)):
        how = rng.randrange(6)
        if how == 0 and data:  # flip a byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == 1:  # truncate
            del data[rng.randrange(len(data) + 1):]
        elif how == 2:  # insert junk
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randrange(1, 12))
        elif how == 3 and len(data) >= 4:  # lie about nlmsg_len
            data[0:4] = struct.pack("=I", rng.randrange(0, len(data) + 64))
        elif how == 4 and len(data) >= 16:  # flags: no REQUEST, ACK, DUMP...
            data[6:8] = struct.pack("=H", rng.choice((0, 1, 4, 5, 0x301, 0xFFFF)))
        elif how == 5:  # two frames in one datagram
            data += frame
    return bytes(data) or b"\0"  # an empty SEQPACKET datagram reads as EOF


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_100k_mutated_frames_break_nothing(daemon: RunningDaemon) -> None:
    rng = random.Random(SEED)
    with Connection() as conn:
        family = conn.family.id
    bases = _bases(family, rng)
    with Client("daemon", socket_path=daemon.socket) as c:
        c.pid(os.getpid())  # accepted: its connection is counted
        fds_before = _open_fds(daemon.pid)
    marker = nl.encode_message(nl.NLMSG_NOOP, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 0xABCD, 0, b"")
    with _connect(daemon) as s:
        for _ in range(FRAMES // BATCH):
            for _ in range(BATCH):
                s.send(_mutate(rng.choice(bases), rng))
            s.send(marker)
            _drain_until(s, marker)
    with Client("daemon", socket_path=daemon.socket) as c:
        assert c.pid(os.getpid()).ac_pid == os.getpid()
        wait_until(lambda: _open_fds(daemon.pid) <= fds_before,
                   "the daemon to see the fuzzer hang up", 10)
        assert _open_fds(daemon.pid) == fds_before
    assert "internal error" not in _stderr(daemon)


def _drain_until(s: socket.socket, marker: bytes) -> None:
    """Read replies until the marker's ACK (every reply of the batch came)."""
    while True:
        data = s.recv(1 << 17)
        for msg in nl.walk(data):
            if msg.type == nl.NLMSG_ERROR and data[msg.start + 4:msg.start + 20] == marker:
                return


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30),
       st.integers(0, 200), st.sampled_from(sorted(schema.SCHEMAS)))
def test_json_bound_and_schema_raise_only_their_errors(doc: object, depth: int,
                                                       cmd: int) -> None:
    """Any JSON, however nested, is parsed or refused with RemoteProtocolError (never
    RecursionError); any parsed value passes the schema or raises SchemaError."""
    text = b"[" * depth + json.dumps(doc).encode() + b"]" * depth
    try:
        value = extproto.loads(text)
    except RemoteProtocolError:
        assert extproto.nesting(text) > extproto.MAX_DEPTH  # valid JSON, refused as deep
        return
    with contextlib.suppress(schema.SchemaError):
        schema.check(cmd, value)


@given(st.binary(max_size=300))
def test_loads_refuses_junk_with_protocol_errors_only(junk: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        extproto.loads(junk)
