"""Netlink framing, sans-IO: nlmsghdr, attributes, errors and acks.

Pure functions over bytes; nothing here touches a socket.  All integers are in
host byte order (netlink is a local protocol).  Decoders raise
:class:`~pytaskstats.errors.RemoteProtocolError` for malformed input and nothing
else.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import LocalProtocolError, RemoteProtocolError

# nlmsghdr types and flags (linux/netlink.h)
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSG_MIN_TYPE = 0x10  # first type number of a family
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = 0x3FFF
NLMSGERR_ATTR_MSG = 1
NLMSGERR_ATTR_OFFS = 2

HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
ATTR = struct.Struct("=HH")  # nla_len, nla_type
U32 = struct.Struct("=I")
U16 = struct.Struct("=H")
I32 = struct.Struct("=i")


def align4(n: int) -> int:
    """Round ``n`` up to netlink's 4-byte alignment."""
    return (n + 3) & ~3


class Message(NamedTuple):
    """One netlink message: header fields and the payload's bounds in ``data``."""

    type: int
    flags: int
    seq: int
    pid: int
    data: bytes | memoryview
    start: int  # offset of the payload in data
    end: int  # end of the payload (nlmsg_len bound)

    @property
    def payload(self) -> bytes:
        """The payload as bytes (a copy)."""
        return bytes(self.data[self.start:self.end])


class ErrorReply(NamedTuple):
    """An NLMSG_ERROR: ``error`` is the positive errno, 0 for an ACK."""

    error: int
    seq: int
    ext_message: str
    ext_offset: int | None


def encode_message(msg_type: int, flags: int, seq: int, pid: int, payload: bytes) -> bytes:
    """Frame ``payload`` in an nlmsghdr, padded to 4 bytes."""
    length = HEADER.size + len(payload)
    if length > 0xFFFFFFFF:
        raise LocalProtocolError("netlink message too long")
    pad = b"\0" * (align4(length) - length)
    return HEADER.pack(length, msg_type, flags, seq & 0xFFFFFFFF, pid) + payload + pad


def split_messages(data: bytes | memoryview, size: int | None = None) -> list[Message]:
    """Split one datagram (its first ``size`` bytes) into its netlink messages."""
    end = len(data) if size is None else size
    out: list[Message] = []
    off = 0
    while end - off >= HEADER.size:
        length, mtype, flags, seq, pid = HEADER.unpack_from(data, off)
        if length < HEADER.size or off + length > end:
            raise RemoteProtocolError(
                f"netlink message at offset {off} claims {length} bytes, "
                f"{end - off} available (truncated or corrupt datagram)")
        out.append(Message(mtype, flags, seq, pid, data, off + HEADER.size, off + length))
        off += align4(length)
    if off < end and any(bytes(data[off:end])):
        raise RemoteProtocolError(f"{end - off} stray bytes after the last netlink message")
    return out


def encode_attr(attr_type: int, payload: bytes) -> bytes:
    """One attribute TLV, padded to 4 bytes."""
    length = ATTR.size + len(payload)
    if length > 0xFFFF:
        raise LocalProtocolError(f"attribute {attr_type} too long ({length} bytes)")
    return ATTR.pack(length, attr_type) + payload + b"\0" * (align4(length) - length)


def encode_u32(attr_type: int, value: int) -> bytes:
    """A u32 attribute."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise LocalProtocolError(f"attribute {attr_type}: {value} does not fit in a u32")
    return encode_attr(attr_type, U32.pack(value))


def encode_str(attr_type: int, value: str) -> bytes:
    """A NUL-terminated string attribute."""
    return encode_attr(attr_type, value.encode() + b"\0")


def iter_attrs(data: bytes | memoryview, start: int, end: int) -> list[tuple[int, int, int]]:
    """The attributes in ``data[start:end]`` as (type, payload start, payload end).

    The type is masked with NLA_TYPE_MASK.  A length field that points outside the
    bounds raises RemoteProtocolError naming the offset.
    """
    out = []
    off = start
    unpack = ATTR.unpack_from
    while end - off >= 4:
        length, atype = unpack(data, off)
        if length < 4 or off + length > end:
            raise RemoteProtocolError(
                f"attribute type {atype & NLA_TYPE_MASK} at offset {off} has length {length}, "
                f"{end - off} bytes left")
        out.append((atype & NLA_TYPE_MASK, off + 4, off + length))
        off += (length + 3) & ~3
    if off < end:
        raise RemoteProtocolError(f"{end - off} trailing bytes cannot hold an attribute")
    return out


def get_u32(data: bytes | memoryview, start: int, end: int, what: str) -> int:
    """Read a u32 attribute payload; longer payloads are accepted as the kernel does."""
    if end - start < 4:
        raise RemoteProtocolError(f"{what}: expected a u32, got {end - start} bytes")
    return int(U32.unpack_from(data, start)[0])


def get_u16(data: bytes | memoryview, start: int, end: int, what: str) -> int:
    """Read a u16 attribute payload."""
    if end - start < 2:
        raise RemoteProtocolError(f"{what}: expected a u16, got {end - start} bytes")
    return int(U16.unpack_from(data, start)[0])


def get_str(data: bytes | memoryview, start: int, end: int) -> str:
    """Read a string attribute payload up to its first NUL."""
    raw = bytes(data[start:end])
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_error(msg: Message) -> ErrorReply:
    """Decode an NLMSG_ERROR message (an ACK when ``error == 0``)."""
    data, start, end = msg.data, msg.start, msg.end
    if end - start < 4 + HEADER.size:
        raise RemoteProtocolError(f"NLMSG_ERROR of {end - start} bytes is too short")
    error = -int(I32.unpack_from(data, start)[0])
    if error < 0:
        raise RemoteProtocolError(f"NLMSG_ERROR carries a positive error code {-error}")
    orig_len = int(U32.unpack_from(data, start + 4)[0])
    text, offset = "", None
    if msg.flags & NLM_F_ACK_TLVS:
        tlv = start + 4 + (HEADER.size if msg.flags & NLM_F_CAPPED else align4(orig_len))
        for atype, a, b in iter_attrs(data, min(tlv, end), end):
            if atype == NLMSGERR_ATTR_MSG:
                text = get_str(data, a, b)
            elif atype == NLMSGERR_ATTR_OFFS:
                offset = get_u32(data, a, b, "extended ack offset")
    return ErrorReply(error, msg.seq, text, offset)


def encode_error(error: int, request_header: bytes, *, seq: int, pid: int,
                 ext_message: str = "", ext_offset: int | None = None) -> bytes:
    """An NLMSG_ERROR (``error`` positive, 0 for an ACK) echoing a capped request
    header, with extended-ACK attributes when a message or offset is given."""
    header = request_header[:HEADER.size].ljust(HEADER.size, b"\0")
    tlvs = encode_str(NLMSGERR_ATTR_MSG, ext_message) if ext_message else b""
    if ext_offset is not None:
        tlvs += encode_u32(NLMSGERR_ATTR_OFFS, ext_offset)
    flags = NLM_F_CAPPED | (NLM_F_ACK_TLVS if tlvs else 0)
    return encode_message(NLMSG_ERROR, flags, seq, pid, I32.pack(-error) + header + tlvs)
