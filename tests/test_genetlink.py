"""genetlink.py: genlmsghdr and the nlctrl family lookup, both directions."""

from __future__ import annotations

import struct

import pytest

from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl
from pytaskstats.errors import RemoteProtocolError

TASKSTATS = genl.FamilyInfo(id=27, name="TASKSTATS", version=1, hdrsize=0, maxattr=4,
                            ops=((1, 0xB), (4, 0xA)))


def nla(atype: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, atype) + payload + b"\0" * (-n % 4)


def one(data: bytes) -> nl.Message:
    (msg,) = nl.split_messages(data)
    return msg


def ctrl(cmd: int, attrs: bytes) -> nl.Message:
    payload = struct.pack("=BBH", cmd, 2, 0) + attrs
    return one(struct.pack("=IHHII", 16 + len(payload), genl.GENL_ID_CTRL, 0, 1, 0) + payload)


def test_encode_header() -> None:
    data = genl.encode(27, 2, nla(1, b"\x01\0\0\0"), seq=3, flags=nl.NLM_F_REQUEST, pid=5)
    assert data[:20] == struct.pack("=IHHIIBBH", 28, 27, nl.NLM_F_REQUEST, 3, 5, 2, 1, 0)
    assert genl.genl_header(one(data)) == (2, 1)


def test_genl_header_missing() -> None:
    msg = one(struct.pack("=IHHII", 18, 27, 0, 0, 0) + b"\x02\x01\0\0")
    with pytest.raises(RemoteProtocolError, match="2 bytes has no genlmsghdr"):
        genl.genl_header(msg)


def test_get_family_request() -> None:
    data = genl.encode_get_family("TASKSTATS", seq=1)
    msg = one(data)
    assert msg.type == genl.GENL_ID_CTRL
    assert msg.flags & nl.NLM_F_REQUEST
    assert msg.payload[:4] == bytes([genl.CTRL_CMD_GETFAMILY, 1, 0, 0])
    assert msg.payload[4:] == nla(genl.CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0")
    assert genl.decode_get_family(msg) == "TASKSTATS"


@pytest.mark.parametrize(("msg", "fragment"), [
    (ctrl(genl.CTRL_CMD_NEWFAMILY, nla(genl.CTRL_ATTR_FAMILY_NAME, b"X\0")), "not GETFAMILY"),
    (ctrl(genl.CTRL_CMD_GETFAMILY, nla(genl.CTRL_ATTR_VERSION, b"\1\0\0\0")),
     "without a family name"),
])
def test_decode_get_family_rejects(msg: nl.Message, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment):
        genl.decode_get_family(msg)


@pytest.mark.parametrize("info", [
    TASKSTATS,
    genl.FamilyInfo(id=0xFFFF, name="x", version=3),
    genl.FamilyInfo(id=31, name="TASKSTATS", version=1, ops=((1, 0xB),)),
])
def test_family_round_trip(info: genl.FamilyInfo) -> None:
    msg = one(genl.encode_family(info, seq=4, pid=99))
    assert (msg.type, msg.seq, msg.pid) == (genl.GENL_ID_CTRL, 4, 99)
    assert genl.decode_family(msg) == info


def test_decode_family_as_the_kernel_sends_it() -> None:
    """Hand-built reply: u16 id, unknown attributes (mcast groups, policy) skipped."""
    op = nla(1, nla(genl.CTRL_ATTR_OP_ID, b"\x04\0\0\0") + nla(genl.CTRL_ATTR_OP_FLAGS,
                                                               b"\x0a\0\0\0"))
    attrs = (nla(genl.CTRL_ATTR_FAMILY_ID, b"\x1f\x00")
             + nla(genl.CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0")
             + nla(genl.CTRL_ATTR_VERSION, b"\1\0\0\0")
             + nla(genl.CTRL_ATTR_HDRSIZE, b"\0\0\0\0")
             + nla(genl.CTRL_ATTR_MAXATTR, b"\0\0\0\0")
             + nla(genl.CTRL_ATTR_OPS, op)
             + nla(7, nla(1, b"whatever")) + nla(99, b""))
    info = genl.decode_family(ctrl(genl.CTRL_CMD_NEWFAMILY, attrs))
    assert info == genl.FamilyInfo(31, "TASKSTATS", 1, 0, 0, ((4, 0xA),))


@pytest.mark.parametrize(("msg", "fragment"), [
    (ctrl(genl.CTRL_CMD_GETFAMILY, b""), "expected NEWFAMILY"),
    (ctrl(genl.CTRL_CMD_NEWFAMILY, nla(genl.CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0")),
     "lacks the family id"),
    (ctrl(genl.CTRL_CMD_NEWFAMILY, nla(genl.CTRL_ATTR_FAMILY_ID, b"\x1f")),
     "CTRL_ATTR_FAMILY_ID: expected a u16"),
])
def test_decode_family_rejects(msg: nl.Message, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment):
        genl.decode_family(msg)


def test_decode_family_without_version_raises_protocol_error_only() -> None:
    """Peer-controlled input: a missing attribute is RemoteProtocolError, never TypeError."""
    msg = ctrl(genl.CTRL_CMD_NEWFAMILY, nla(genl.CTRL_ATTR_FAMILY_ID, b"\x1b\x00")
               + nla(genl.CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"))
    try:
        info = genl.decode_family(msg)
    except RemoteProtocolError:
        return
    assert (info.id, info.name) == (27, "TASKSTATS")
