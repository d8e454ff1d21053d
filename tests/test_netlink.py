"""netlink.py: nlmsghdr framing, attribute TLVs, errors and acks (bytes built by hand)."""

from __future__ import annotations

import errno
import struct

import pytest

from pytaskstats import netlink as nl
from pytaskstats.errors import LocalProtocolError, RemoteProtocolError


def nla(atype: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, atype) + payload + b"\0" * (-n % 4)


def nlmsg(mtype: int, flags: int, seq: int, pid: int, payload: bytes) -> bytes:
    n = 16 + len(payload)
    return struct.pack("=IHHII", n, mtype, flags, seq, pid) + payload + b"\0" * (-n % 4)


@pytest.mark.parametrize(("n", "aligned"), [(0, 0), (1, 4), (3, 4), (4, 4), (5, 8), (17, 20)])
def test_align4(n: int, aligned: int) -> None:
    assert nl.align4(n) == aligned


@pytest.mark.parametrize(("encoded", "expected"), [
    (nl.encode_attr(7, b""), b"\x04\x00\x07\x00"),
    (nl.encode_attr(1, b"abc"), b"\x07\x00\x01\x00abc\x00"),
    (nl.encode_attr(2, b"abcd"), b"\x08\x00\x02\x00abcd"),
    (nl.encode_u32(1, 0x01020304), b"\x08\x00\x01\x00\x04\x03\x02\x01"),
    (nl.encode_str(3, "0-3"), b"\x08\x00\x03\x000-3\x00"),
    (nl.encode_str(4, "0-15"), b"\x09\x00\x04\x000-15\x00\x00\x00\x00"),
])
def test_encode_attr_alignment(encoded: bytes, expected: bytes) -> None:
    assert encoded == expected


@pytest.mark.parametrize("value", [-1, 2**32])
def test_encode_u32_out_of_range(value: int) -> None:
    with pytest.raises(LocalProtocolError):
        nl.encode_u32(1, value)


def test_encode_attr_too_long() -> None:
    with pytest.raises(LocalProtocolError):
        nl.encode_attr(1, b"\0" * 0xFFFC)


def test_iter_attrs_walks_aligned_and_masks_flags() -> None:
    data = b"junk" + nla(1, b"a") + nla(2 | nl.NLA_F_NESTED, nla(5, b"xyzw")) + nla(6, b"")
    attrs = list(nl.iter_attrs(data, 4, len(data)))
    assert attrs == [(1, 8, 9), (2, 16, 24), (6, 28, 28)]
    assert list(nl.iter_attrs(data, 16, 24)) == [(5, 20, 24)]


@pytest.mark.parametrize(("data", "fragment"), [
    (struct.pack("=HH", 3, 1) + b"\0\0\0\0", "has length 3"),
    (struct.pack("=HH", 12, 1) + b"\0\0\0\0", "has length 12"),
    (nla(1, b"abcd") + b"\0\0", "2 trailing bytes"),
], ids=["below-4", "past-end", "trailing"])
def test_iter_attrs_rejects_bad_lengths(data: bytes, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment):
        list(nl.iter_attrs(data, 0, len(data)))


@pytest.mark.parametrize(("payload", "value"), [
    (struct.pack("=I", 4242), 4242),
    (struct.pack("=IH", 7, 9), 7),  # longer is accepted, as the kernel does
])
def test_get_u32(payload: bytes, value: int) -> None:
    data = b"xx" + payload
    assert nl.get_u32(data, 2, len(data), "PID") == value


def test_get_u32_too_short_names_the_attribute() -> None:
    with pytest.raises(RemoteProtocolError, match="PID: expected a u32, got 3 bytes"):
        nl.get_u32(b"\0\0\0", 0, 3, "PID")


def test_get_u16() -> None:
    assert nl.get_u16(b"\x1b\x00\xff\xff", 0, 4, "id") == 27
    with pytest.raises(RemoteProtocolError, match="family id: expected a u16, got 1 bytes"):
        nl.get_u16(b"\x1b", 0, 1, "family id")


@pytest.mark.parametrize(("raw", "text"), [
    (b"TASKSTATS\0", "TASKSTATS"),
    (b"TASKSTATS", "TASKSTATS"),
    (b"ab\0cd\0", "ab"),
    (b"", ""),
])
def test_get_str(raw: bytes, text: str) -> None:
    data = b"--" + raw + b"++"
    assert nl.get_str(data, 2, 2 + len(raw)) == text


def test_encode_message_frames_and_pads() -> None:
    msg = nl.encode_message(27, nl.NLM_F_REQUEST, 5, 77, b"abcde")
    assert msg == struct.pack("=IHHII", 21, 27, 1, 5, 77) + b"abcde\0\0\0"


def test_split_messages() -> None:
    a = nlmsg(27, 0, 1, 10, b"first")
    b = nlmsg(nl.NLMSG_DONE, nl.NLM_F_MULTI, 2, 10, b"\0\0\0\0")
    msgs = nl.split_messages(a + b)
    assert [(m.type, m.flags, m.seq, m.pid, m.payload) for m in msgs] == [
        (27, 0, 1, 10, b"first"), (nl.NLMSG_DONE, nl.NLM_F_MULTI, 2, 10, b"\0\0\0\0")]
    assert msgs[1].start == len(a) + 16
    # size bounds the datagram (recv_into a larger buffer)
    assert [m.seq for m in nl.split_messages(a + b + b"\xff" * 40, len(a + b))] == [1, 2]
    assert nl.split_messages(b"") == []


@pytest.mark.parametrize(("data", "fragment"), [
    (struct.pack("=IHHII", 12, 27, 0, 0, 0), "claims 12 bytes"),
    (struct.pack("=IHHII", 40, 27, 0, 0, 0), "claims 40 bytes, 16 available"),
    (nlmsg(27, 0, 1, 0, b"") + nlmsg(27, 0, 2, 0, b"abcd")[:18],
     "offset 16 claims 20 bytes, 18 available"),
    (nlmsg(27, 0, 1, 0, b"") + b"\x01\x00\x00\x00", "4 stray bytes"),
], ids=["len-below-header", "len-past-datagram", "second-truncated", "stray-bytes"])
def test_split_messages_rejects_broken_framing(data: bytes, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment):
        nl.split_messages(data)


def _error_body(code: int, request: bytes, tlvs: bytes = b"") -> bytes:
    return struct.pack("=i", code) + request + tlvs


REQUEST = nlmsg(27, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 9, 0, b"\x01\x01\0\0" + nla(1, b"\0" * 4))
TLVS = nla(nl.NLMSGERR_ATTR_MSG, b"bad cpumask\0") + nla(nl.NLMSGERR_ATTR_OFFS,
                                                         struct.pack("=I", 24))


@pytest.mark.parametrize(("flags", "body", "expected"), [
    (0, _error_body(0, REQUEST[:16]), nl.ErrorReply(0, 9, "", None)),
    (nl.NLM_F_CAPPED, _error_body(-errno.ESRCH, REQUEST[:16]),
     nl.ErrorReply(errno.ESRCH, 9, "", None)),
    (0, _error_body(-errno.EPERM, REQUEST), nl.ErrorReply(errno.EPERM, 9, "", None)),
    (nl.NLM_F_CAPPED | nl.NLM_F_ACK_TLVS, _error_body(-errno.EINVAL, REQUEST[:16], TLVS),
     nl.ErrorReply(errno.EINVAL, 9, "bad cpumask", 24)),
    (nl.NLM_F_ACK_TLVS, _error_body(-errno.EINVAL, REQUEST, TLVS),
     nl.ErrorReply(errno.EINVAL, 9, "bad cpumask", 24)),
], ids=["ack", "capped", "uncapped", "capped-tlvs", "uncapped-tlvs"])
def test_decode_error(flags: int, body: bytes, expected: nl.ErrorReply) -> None:
    (msg,) = nl.split_messages(nlmsg(nl.NLMSG_ERROR, flags, 9, 123, body))
    assert nl.decode_error(msg) == expected


@pytest.mark.parametrize(("body", "fragment"), [
    (struct.pack("=i", -1), "NLMSG_ERROR of 4 bytes is too short"),
    (_error_body(5, REQUEST[:16]), "positive error code 5"),
])
def test_decode_error_rejects(body: bytes, fragment: str) -> None:
    (msg,) = nl.split_messages(nlmsg(nl.NLMSG_ERROR, 0, 1, 0, body))
    with pytest.raises(RemoteProtocolError, match=fragment):
        nl.decode_error(msg)


@pytest.mark.parametrize("code", [0, errno.ESRCH, errno.EINVAL, errno.ENOBUFS])
@pytest.mark.parametrize("header", [REQUEST, REQUEST[:16], REQUEST[:6]])
def test_encode_error_round_trip(code: int, header: bytes) -> None:
    data = nl.encode_error(code, header, seq=31, pid=4000)
    (msg,) = nl.split_messages(data)
    assert (msg.type, msg.pid) == (nl.NLMSG_ERROR, 4000)
    assert nl.decode_error(msg) == nl.ErrorReply(code, 31, "", None)
    assert msg.payload[4:20] == header[:16].ljust(16, b"\0")


def test_walk_stops_silently_at_a_bad_header() -> None:
    good = nlmsg(0x20, 1, 1, 0, b"\0" * 4)
    bad = struct.pack("=IHHII", 8, 0x20, 1, 2, 0)
    assert [m.seq for m in nl.walk(good + bad + good)] == [1]
    assert [m.seq for m in nl.walk(good + b"\1\2\3")] == [1]
    assert nl.walk(good[:-1]) == [] and nl.walk(b"\xff" * 40) == []


def test_encode_error_echoes_the_whole_request_unless_capped() -> None:
    request = REQUEST + b"\xaa" * 5  # nlmsg_len still says len(REQUEST)
    (whole,) = nl.split_messages(nl.encode_error(errno.ESRCH, request, seq=9, pid=1,
                                                 capped=False))
    assert whole.flags == 0 and whole.payload[4:] == REQUEST
    (capped,) = nl.split_messages(nl.encode_error(errno.ESRCH, request, seq=9, pid=1))
    assert capped.flags == nl.NLM_F_CAPPED and capped.payload[4:] == REQUEST[:16]
    (ack,) = nl.split_messages(nl.encode_error(0, request, seq=9, pid=1, capped=False))
    assert ack.flags == nl.NLM_F_CAPPED  # an ACK is always capped
    (ext,) = nl.split_messages(nl.encode_error(errno.ERANGE, REQUEST, seq=9, pid=1,
                                               capped=False, ext_message="m", ext_offset=20))
    assert ext.flags == nl.NLM_F_ACK_TLVS
    assert nl.decode_error(ext) == nl.ErrorReply(errno.ERANGE, 9, "m", 20)


@pytest.mark.parametrize(("attrs", "err", "offset"), [
    (nl.encode_attr(1, b"\1\0"), errno.ERANGE, 20),
    (nl.encode_u32(1, 5) + nl.encode_attr(1, b""), errno.ERANGE, 28),
    (nl.encode_attr(2, b""), errno.ERANGE, 20),
    (nl.encode_attr(3, b"abc"), errno.EINVAL, 20),
])
def test_parse_attrs_applies_the_policy(attrs: bytes, err: int, offset: int) -> None:
    policy = {1: nl.attr_policy("u32"), 2: nl.attr_policy("string"),
              3: nl.attr_policy("nul_string", 15)}
    (msg,) = nl.split_messages(nlmsg(0x20, 1, 1, 0, b"\0" * 4 + attrs))
    with pytest.raises(nl.PolicyError) as info:
        nl.parse_attrs(msg, msg.start + 4, policy)
    assert (info.value.errno, info.value.offset) == (err, offset)


def test_parse_attrs_is_liberal() -> None:
    attrs = nl.encode_attr(9, b"x") + nl.encode_u32(1 | nl.NLA_F_NESTED, 7) + b"\x10\0\1\0"
    (msg,) = nl.split_messages(nlmsg(0x20, 1, 1, 0, b"\0" * 4 + attrs))
    found, warning = nl.parse_attrs(msg, msg.start + 4, {1: nl.attr_policy("u32")})
    assert nl.get_u32(msg.data, *found[1], "pid") == 7 and warning == nl.LEFTOVER
