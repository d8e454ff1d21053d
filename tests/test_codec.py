"""taskstats.py against the gcc-made golden fixtures (tests/fixtures/README.md).

Expected values come from the fixtures' value rule (expected.py), never from
pytaskstats' layout code; struct bytes are found by walking attributes.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable

import pytest

from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.errors import LocalProtocolError, RemoteProtocolError
from pytaskstats.fields import FIELDS, Field, Scope, Timespec, layout
from pytaskstats.records import AGROUP, CgroupStats, ExitRecord, TaskStats
from tests.conftest import fixture_bytes
from tests.fixtures.expected import expected_value, fnv1a32

FAMILY = 27
PORT = 0x1234
REPLIES = [(f"reply_v{v:02d}.bin", v, v) for v in (8, 9, 10, 13, 14, 15, 16, 17)]
REPLIES.append(("reply_v16_padded.bin", 16, 160))
EXITS = [("exit_v16_dual.bin", 16, AGROUP), ("exit_v17_dual.bin", 17, AGROUP),
         ("exit_v8_tgid_version0.bin", 8, 0x01)]
# README "TGID rule": the fields an AGGR_TGID fixture record keeps (others are 0)
TGID_KEPT_SUFFIXES = ("_count", "_delay_total", "_delay_max", "_delay_min")
TGID_KEPT = {"cpu_run_real_total", "cpu_run_virtual_total", "ac_etime", "ac_utime",
             "ac_stime", "nvcsw", "nivcsw"}
STATS_HEADER = 4


# ---------------------------------------------------------------- independent helpers

def nla(atype: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, atype) + payload + b"\0" * (-n % 4)


def nlmsg(mtype: int, seq: int, pid: int, payload: bytes, flags: int = 0) -> bytes:
    n = 16 + len(payload)
    return struct.pack("=IHHII", n, mtype, flags, seq, pid) + payload + b"\0" * (-n % 4)


def genl_msg(cmd: int, attrs: bytes, *, seq: int = 1, pid: int = PORT) -> bytes:
    return nlmsg(FAMILY, seq, pid, bytes([cmd, 1, 0, 0]) + attrs)


def attrs_at(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(type, header offset, nla_len) of each attribute in data[start:end]."""
    out, off = [], start
    while off < end:
        length, atype = struct.unpack_from("=HH", data, off)
        out.append((atype, off, length))
        off += (length + 3) & ~3
    return out


def stats_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every STATS payload inside the AGGR nests of one message."""
    spans = []
    for atype, off, length in attrs_at(data, 20, len(data)):
        if atype in (ts.TYPE_AGGR_PID, ts.TYPE_AGGR_TGID):
            spans += [(o + 4, o + n) for t, o, n in attrs_at(data, off + 4, off + length)
                      if t == ts.TYPE_STATS]
    return spans


def patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, *values)
    return bytes(buf)


def tgid_kept(name: str) -> bool:
    return name.endswith(TGID_KEPT_SUFFIXES) or name in TGID_KEPT


def expected_field(f: Field, version: int, *, flag: int = 0x21, group: bool = False) -> object:
    """What the decoder must give for field ``f`` of a fixture record of ``version``."""
    if f.version > version:
        return None
    if f.name == "version":
        return version
    if group:  # not carried by TGID records -> None; carried -> README TGID rule
        if not f.tgid or f.ctype == "timespec":  # TGID timespecs are {0,0}: not set
            return None
        return expected_value(f.name, f.ctype) if tgid_kept(f.name) else 0
    special: dict[str, object] = {"ac_flag": flag, "ac_nice": -5, "ac_sched": 3,
                                  "ac_comm": f"fixture-v{version:02d}",
                                  "ac_exe_dev": os.makedev(259, 300)}
    if f.name in special:
        return special[f.name]
    if f.ctype == "timespec":
        return Timespec(fnv1a32(f.name), fnv1a32(f.name) % 10**9)
    return expected_value(f.name, f.ctype)


def mismatches(stats: TaskStats, version: int, *, flag: int = 0x21,
               group: bool = False) -> dict[str, tuple[object, object]]:
    out: dict[str, tuple[object, object]] = {}
    for f in FIELDS:
        want = expected_field(f, version, flag=flag, group=group)
        if stats[f.position] != want or type(stats[f.position]) is not type(want):
            out[f.name] = (stats[f.position], want)
    return out


def decode_one(data: bytes) -> ts.Event:
    events = ts.decode(data, FAMILY)
    assert len(events) == 1
    return events[0]


def decode_stats_reply(data: bytes) -> TaskStats:
    reply = decode_one(data)
    assert isinstance(reply, ts.StatsReply)
    return reply.stats


# ---------------------------------------------------------------- golden replies

@pytest.mark.parametrize(("name", "version", "seq"), REPLIES)
def test_reply_fixture(name: str, version: int, seq: int) -> None:
    data = fixture_bytes(name)
    reply = decode_one(data)
    assert isinstance(reply, ts.StatsReply)
    assert (reply.seq, reply.scope, reply.id) == (seq, "pid", 4242)
    stats = reply.stats
    assert mismatches(stats, version) == {}
    assert (stats.scope, stats.source, stats.extra) == ("pid", "kernel", b"")
    assert stats.payload_len == layout(version).size == stats_spans(data)[0][1] - stats_spans(
        data)[0][0]
    if version >= 12:
        assert (stats.exe_major, stats.exe_minor) == (259, 300)


def test_v15_interleaved_layout() -> None:
    stats = decode_stats_reply(fixture_bytes("reply_v15.bin"))
    rule = {n: expected_value(n, "u64") for n in
            ("cpu_delay_max", "cpu_delay_min", "blkio_count", "irq_delay_min", "ac_etime")}
    assert {n: getattr(stats, n) for n in rule} == rule
    assert (stats.ac_comm, stats.ac_uid) == ("fixture-v15", fnv1a32("ac_uid"))


@pytest.mark.parametrize(("name", "version", "flag"), EXITS)
def test_exit_fixture(name: str, version: int, flag: int) -> None:
    event = decode_one(fixture_bytes(name))
    assert isinstance(event, ExitRecord)
    assert (event.pid, event.tgid, event.seq, event.cpu) == (4243, 4242, 7 if version > 8 else 8,
                                                              None)
    assert event.ended_process is True
    assert event.group is not None
    assert (event.task.scope, event.group.scope) == ("pid", "tgid")
    assert event.task.ac_flag == flag
    assert mismatches(event.task, version, flag=flag) == {}
    # non-TGID fields are None (not 0); version 0 in the v8 file -> the task's version
    assert mismatches(event.group, version, group=True) == {}
    for name_ in ("ac_comm", "ac_pid", "ac_uid", "read_bytes", "hiwater_rss", "ac_flag"):
        assert getattr(event.group, name_) is None


def _first_aggr_only(data: bytes) -> bytes:
    """The message cut down to its first top-level attribute (the AGGR_PID nest)."""
    (_, off, length) = attrs_at(data, 20, len(data))[0]
    body = data[16:off + ((length + 3) & ~3)]
    return patch(data[:16], 0, "=I", 16 + len(body)) + body


@pytest.mark.parametrize(("name", "flag", "ended", "tgid"), [
    ("exit_v16_dual.bin", AGROUP, True, fnv1a32("ac_tgid")),
    ("exit_v16_dual.bin", 0x01, False, fnv1a32("ac_tgid")),
    ("exit_v8_tgid_version0.bin", AGROUP, None, None),  # no AGROUP before v12
])
def test_exit_without_group_record(name: str, flag: int, ended: bool | None,
                                   tgid: int | None) -> None:
    data = _first_aggr_only(fixture_bytes(name))
    # ac_flag is at offset 8 of every struct version (§2.1)
    event = decode_one(patch(data, stats_spans(data)[0][0] + 8, "=B", flag))
    assert isinstance(event, ExitRecord)
    assert (event.group, event.pid, event.tgid, event.ended_process) == (None, 4243, tgid, ended)


def test_tgid_query_reply() -> None:
    """reply_v16 with AGGR_PID/PID renamed AGGR_TGID/TGID: a thread group record."""
    data = fixture_bytes("reply_v16.bin")
    (_, nest, length) = attrs_at(data, 20, len(data))[0]
    (_, pid_attr, _) = attrs_at(data, nest + 4, nest + length)[0]
    data = patch(patch(data, nest + 2, "=H", ts.TYPE_AGGR_TGID), pid_attr + 2, "=H", ts.TYPE_TGID)
    reply = decode_one(data)
    assert isinstance(reply, ts.StatsReply)
    assert (reply.seq, reply.scope, reply.id, reply.stats.scope) == (16, "tgid", 4242, "tgid")
    assert reply.stats.ac_comm is None and reply.stats.ac_pid is None
    carried = {f.name for f in FIELDS if f.tgid and f.version <= 16}
    assert set(reply.stats.carried()) == carried
    assert {f.name: reply.stats[f.position] for f in FIELDS if f.tgid} == {
        f.name: expected_field(f, 16) for f in FIELDS if f.tgid}


def test_cgroupstats_fixture() -> None:
    assert decode_one(fixture_bytes("cgroupstats.bin")) == ts.CgroupStatsReply(
        99, CgroupStats(3, 1, 2, 4, 5))


# ---------------------------------------------------------------- re-encoding

def _records(event: ts.Event) -> list[TaskStats]:
    if isinstance(event, ts.StatsReply):
        return [event.stats]
    assert isinstance(event, ExitRecord) and event.group is not None
    return [event.task, event.group]


@pytest.mark.parametrize("name", [r[0] for r in REPLIES] + [e[0] for e in EXITS[:2]])
def test_encode_stats_gives_the_fixture_struct(name: str) -> None:
    data = fixture_bytes(name)
    records = _records(decode_one(data))
    assert [ts.encode_stats(r) for r in records] == [data[a:b] for a, b in stats_spans(data)]


def test_encode_datagrams_reproduce_fixtures() -> None:
    for name, _, _ in REPLIES[:-1]:
        reply = decode_one(fixture_bytes(name))
        assert isinstance(reply, ts.StatsReply)
        assert ts.encode_stats_reply(FAMILY, reply, pid=PORT) == fixture_bytes(name), name
    for name, _, _ in EXITS[:2]:
        event = decode_one(fixture_bytes(name))
        assert isinstance(event, ExitRecord)
        assert ts.encode_exit(FAMILY, event) == fixture_bytes(name), name
    cg = decode_one(fixture_bytes("cgroupstats.bin"))
    assert isinstance(cg, ts.CgroupStatsReply)
    assert ts.encode_cgroupstats_reply(FAMILY, cg, pid=PORT) == fixture_bytes("cgroupstats.bin")


def test_encode_exit_v8_stamps_the_group_version() -> None:
    """The only difference from the fixture: the group record's version 0 becomes 8."""
    data = fixture_bytes("exit_v8_tgid_version0.bin")
    event = decode_one(data)
    assert isinstance(event, ExitRecord)
    group_start = stats_spans(data)[1][0]
    assert data[group_start:group_start + 2] == b"\0\0"
    assert ts.encode_exit(FAMILY, event) == patch(data, group_start, "=H", 8)


# ---------------------------------------------------------------- version and length

def _reply_with_stats(stats: bytes, *, seq: int = 3) -> bytes:
    nest = nla(ts.TYPE_PID, struct.pack("=I", 4242)) + nla(ts.TYPE_STATS, stats)
    return genl_msg(ts.CMD_NEW, nla(ts.TYPE_AGGR_PID, nest), seq=seq)


def _fixture_stats(name: str) -> bytes:
    data = fixture_bytes(name)
    a, b = stats_spans(data)[0]
    return data[a:b]


def test_future_version_decodes_known_prefix_and_keeps_extra() -> None:
    tail = bytes(range(100))
    struct18 = patch(_fixture_stats("reply_v17.bin"), 0, "=H", 18) + tail
    stats = decode_stats_reply(_reply_with_stats(struct18))
    assert stats.version == 18
    assert {k: v for k, v in mismatches(stats, 17).items() if k != "version"} == {}
    assert (stats.extra, stats.payload_len) == (tail, 788)
    assert ts.encode_stats(stats) == struct18


NAMES = tuple(f.name for f in FIELDS)
V15_HEAD = ("version", "ac_exitcode", "ac_flag", "ac_nice", "cpu_count", "cpu_delay_total",
            "cpu_delay_max", "cpu_delay_min", "blkio_count", "blkio_delay_total",
            "blkio_delay_max", "blkio_delay_min", "swapin_count", "swapin_delay_total")
# (fixture, version, STATS payload cut, the fields that fit), from the §2.1/§2.3 offsets
SHORT = [
    ("reply_v16.bin", 16, 300, NAMES[:NAMES.index("ac_utimescaled") + 1]),  # 288..296
    ("reply_v15.bin", 15, 100, V15_HEAD),  # swapin_delay_max is at 96..104
    ("reply_v15.bin", 15, 160, (*V15_HEAD, "swapin_delay_max", "swapin_delay_min",
                                "cpu_run_real_total", "cpu_run_virtual_total", "ac_comm")),
    ("reply_v17.bin", 17, 600, NAMES[:NAMES.index("blkio_delay_max_ts") + 1]),  # 576..592
    ("reply_v08.bin", 8, 2, ("version",)),
]


@pytest.mark.parametrize(("name", "version", "cut", "present"), SHORT,
                         ids=[f"{r[0][:-4]}-{r[2]}" for r in SHORT])
def test_short_payload_decodes_the_fields_that_fit(name: str, version: int, cut: int,
                                                   present: tuple[str, ...]) -> None:
    stats = decode_stats_reply(_reply_with_stats(_fixture_stats(name)[:cut]))
    want = {f.name: expected_field(f, version) if f.name in present else None for f in FIELDS}
    assert {f.name: stats[f.position] for f in FIELDS} == want
    assert stats.payload_len == cut


@pytest.mark.parametrize("version", [0, 1])
def test_unsupported_version_raises(version: int) -> None:
    data = _reply_with_stats(patch(_fixture_stats("reply_v16.bin"), 0, "=H", version))
    with pytest.raises(RemoteProtocolError, match=f"version {version}"):
        ts.decode(data, FAMILY)


def test_version0_outside_an_exit_is_rejected() -> None:
    """The v8 exit with its AGGR_PID renamed: a lone version-0 TGID record has no hint."""
    data = fixture_bytes("exit_v8_tgid_version0.bin")
    (atype, off, _) = attrs_at(data, 20, len(data))[0]
    assert atype == ts.TYPE_AGGR_PID
    with pytest.raises(RemoteProtocolError, match="version 0"):
        ts.decode(patch(data, off + 2, "=H", 42), FAMILY)


# ---------------------------------------------------------------- datagram framing

def test_several_messages_in_one_datagram() -> None:
    data = fixture_bytes("exit_v16_dual.bin") + fixture_bytes("reply_v08.bin") + fixture_bytes(
        "cgroupstats.bin")
    assert [type(e) for e in ts.decode(data, FAMILY)] == [ExitRecord, ts.StatsReply,
                                                          ts.CgroupStatsReply]


@pytest.mark.parametrize("tail", [fixture_bytes("reply_v16.bin")[:40], b"\x01\x02\x03\x04"])
def test_trailing_partial_message(tail: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        ts.decode(fixture_bytes("reply_v16.bin") + tail, FAMILY)


def test_size_bounds_the_datagram() -> None:
    data = fixture_bytes("reply_v16.bin")
    buffer = memoryview(bytearray(data + b"\xff" * 64))  # as the kernel client's recv_into
    events = ts.decode(buffer, FAMILY, len(data))
    assert events == ts.decode(data, FAMILY)


def _error(code: int, flags: int = nl.NLM_F_CAPPED, tlvs: bytes = b"") -> bytes:
    request = struct.pack("=IHHII", 28, FAMILY, nl.NLM_F_REQUEST, 12, 0)
    return nlmsg(nl.NLMSG_ERROR, 12, PORT, struct.pack("=i", code) + request + tlvs, flags)


@pytest.mark.parametrize(("data", "expected"), [
    (_error(0), nl.ErrorReply(0, 12, "", None)),
    (_error(-errno.ESRCH), nl.ErrorReply(errno.ESRCH, 12, "", None)),
    (_error(-errno.EINVAL, nl.NLM_F_CAPPED | nl.NLM_F_ACK_TLVS,
            nla(nl.NLMSGERR_ATTR_MSG, b"missing attribute\0")
            + nla(nl.NLMSGERR_ATTR_OFFS, struct.pack("=I", 20))),
     nl.ErrorReply(errno.EINVAL, 12, "missing attribute", 20)),
    (nlmsg(nl.NLMSG_DONE, 12, PORT, b"\0\0\0\0", nl.NLM_F_MULTI), ts.Done(12)),
], ids=["ack", "esrch", "extack", "done"])
def test_error_ack_and_done(data: bytes, expected: object) -> None:
    assert ts.decode(data, FAMILY) == [expected]


# ---------------------------------------------------------------- requests

def _request(data: bytes) -> ts.Request:
    (msg,) = nl.split_messages(data)
    return ts.decode_request(msg)


@pytest.mark.parametrize(("data", "op", "value", "ack"), [
    (ts.encode_get_pid(FAMILY, 4242, seq=5), "pid", 4242, False),
    (ts.encode_get_tgid(FAMILY, 77, seq=5, ack=True), "tgid", 77, True),
    (ts.encode_register(FAMILY, "0-3,5", seq=5), "register", "0-3,5", True),
    (ts.encode_deregister(FAMILY, "1", seq=5), "deregister", "1", True),
    (ts.encode_cgroup_get(FAMILY, 9, seq=5), "cgroup", 9, True),
])
def test_request_round_trip(data: bytes, op: str, value: int | str, ack: bool) -> None:
    req = _request(data)
    assert (req.op, req.value, req.seq) == (op, value, 5)
    assert req.flags == nl.NLM_F_REQUEST | (nl.NLM_F_ACK if ack else 0)
    assert req.header == data[:16]


ALL_ATTRS = {"tgid": nla(ts.ATTR_TGID, struct.pack("=I", 2)),
             "pid": nla(ts.ATTR_PID, struct.pack("=I", 1)),
             "deregister": nla(ts.ATTR_DEREGISTER_CPUMASK, b"4\0"),
             "register": nla(ts.ATTR_REGISTER_CPUMASK, b"3\0")}


@pytest.mark.parametrize(("present", "op"), [
    (("tgid", "pid", "deregister", "register"), "register"),
    (("tgid", "pid", "deregister"), "deregister"),
    (("tgid", "pid"), "pid"),
    (("tgid",), "tgid"),
    ((), ""),
])
def test_request_dispatch_order(present: tuple[str, ...], op: str) -> None:
    attrs = nla(99, b"ignored") + b"".join(ALL_ATTRS[k] for k in present)
    assert _request(genl_msg(ts.CMD_GET, attrs)).op == op


@pytest.mark.parametrize(("cmd", "atype", "first", "last", "value"), [
    (ts.CMD_GET, ts.ATTR_PID, struct.pack("=I", 1), struct.pack("=I", 2), 2),
    (ts.CMD_GET, ts.ATTR_TGID, struct.pack("=I", 1), struct.pack("=I", 2), 2),
    (ts.CMD_GET, ts.ATTR_REGISTER_CPUMASK, b"0\0", b"1-2\0", "1-2"),
    (ts.CGROUPSTATS_CMD_GET, ts.CGROUPSTATS_ATTR_FD, struct.pack("=I", 3),
     struct.pack("=I", 4), 4),
], ids=["pid", "tgid", "register", "cgroup-fd"])
def test_request_duplicate_attribute_last_wins(cmd: int, atype: int, first: bytes, last: bytes,
                                               value: int | str) -> None:
    """The kernel's nla_parse stores tb[type] = nla for each attribute: the last one wins."""
    assert _request(genl_msg(cmd, nla(atype, first) + nla(atype, last))).value == value


SCOPES = [("pid", ts.encode_get_pid), ("tgid", ts.encode_get_tgid)]


@pytest.mark.parametrize(("scope", "slow"), SCOPES)
@pytest.mark.parametrize(("family", "ident", "seq"), [
    (27, 4242, 1), (0xFFFF, 2**32 - 1, 2**31),
    (27, 4242, 2**32 + 7),  # a long-lived counter: encode_message keeps seq & 0xFFFFFFFF
])
def test_encode_get_fast_is_byte_identical(scope: Scope, slow: Callable[..., bytes], family: int,
                                           ident: int, seq: int) -> None:
    assert ts.encode_get_fast(scope)(family, ident, seq) == slow(family, ident, seq=seq)


@pytest.mark.parametrize(("scope", "slow"), SCOPES)
def test_get_encoders_reject_ids_beyond_u32(scope: Scope, slow: Callable[..., bytes]) -> None:
    with pytest.raises(LocalProtocolError):
        slow(FAMILY, 2**32, seq=1)
    with pytest.raises(LocalProtocolError):
        ts.encode_get_fast(scope)(FAMILY, 2**32, 1)


# ---------------------------------------------------------------- malformed replies

def _nest_off(data: bytes) -> int:
    return attrs_at(data, 20, len(data))[0][1]


def _stats_hdr(data: bytes) -> int:
    return stats_spans(data)[0][0] - STATS_HEADER


V16 = fixture_bytes("reply_v16.bin")
CG = fixture_bytes("cgroupstats.bin")
MALFORMED: list[tuple[str, bytes, str]] = [
    ("nlmsg_len<16", patch(V16, 0, "=I", 12), "claims 12 bytes"),
    ("nlmsg_len>datagram", patch(V16, 0, "=I", len(V16) + 4), "claims 600 bytes, 596"),
    ("nla_len<4", patch(V16, _nest_off(V16), "=H", 3), "has length 3"),
    ("nla_len>nest", patch(V16, _stats_hdr(V16), "=H", 572), "type 3 at offset 32"),
    ("aggr-without-stats", genl_msg(ts.CMD_NEW, nla(ts.TYPE_AGGR_PID, nla(ts.TYPE_PID, b"1234"))),
     "AGGR_PID nest lacks its id or STATS"),
    ("aggr-without-id", genl_msg(ts.CMD_NEW, nla(ts.TYPE_AGGR_PID, nla(
        ts.TYPE_STATS, _fixture_stats("reply_v16.bin")))), "lacks its id"),
    ("stats-1-byte", _reply_with_stats(b"\x10"), "STATS payload of 1 bytes"),
    ("short-pid", genl_msg(ts.CMD_NEW, nla(ts.TYPE_AGGR_PID, nla(ts.TYPE_PID, b"12"))),
     "expected a u32, got 2"),
    ("no-genl-header", nlmsg(FAMILY, 1, PORT, b""), "has no genlmsghdr"),
    ("unknown-cmd", patch(V16, 16, "=B", 9), "command 9"),
    ("no-aggr", genl_msg(ts.CMD_NEW, nla(ts.TYPE_NULL, b"")), "without AGGR_PID or AGGR_TGID"),
    ("cgroupstats-short", patch(CG, 20, "=H", 36), "cgroupstats payload of 32 bytes"),
    ("cgroupstats-missing", genl_msg(ts.CGROUPSTATS_CMD_NEW, b""), "without CGROUPSTATS_TYPE"),
    ("nlmsg-error-short", nlmsg(nl.NLMSG_ERROR, 1, 0, b"\xea\xff\xff\xff"), "too short"),
    ("foreign-type", patch(V16, 4, "=H", 28), "unexpected netlink message type 28"),
]


@pytest.mark.parametrize(("data", "fragment"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_reply(data: bytes, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment):
        ts.decode(data, FAMILY)


def _with_unknown_attrs(data: bytes, *, top: bool, nested: bool) -> bytes:
    """Insert type-42 attributes (and a NULL pad) before the nest and/or inside it."""
    off = _nest_off(data)
    nest_len = struct.unpack_from("=H", data, off)[0]
    inner_extra = nla(42, b"\xff" * 5) + nla(ts.TYPE_NULL, b"") if nested else b""
    nest = (struct.pack("=HH", nest_len + len(inner_extra), ts.TYPE_AGGR_PID)
            + inner_extra + data[off + 4:off + nest_len])
    top_extra = nla(42, b"x") + nla(ts.TYPE_NULL, b"") if top else b""
    body = data[16:off] + top_extra + nest + data[off + nest_len:]
    return patch(data[:16], 0, "=I", 16 + len(body)) + body


@pytest.mark.parametrize(("top", "nested"), [(True, False), (False, True), (True, True)])
def test_unknown_attributes_are_skipped(top: bool, nested: bool) -> None:
    assert ts.decode(_with_unknown_attrs(V16, top=top, nested=nested), FAMILY) == ts.decode(
        V16, FAMILY)
