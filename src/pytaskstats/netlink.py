"""Netlink framing, sans-IO: nlmsghdr, attributes, errors and acks.

Pure functions over bytes; nothing here touches a socket.  All integers are in
host byte order (netlink is a local protocol).  Decoders raise
:class:`~pytaskstats.errors.RemoteProtocolError` for malformed input and nothing
else.
"""

from __future__ import annotations

import errno
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
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH, in a request
NLM_F_CAPPED = 0x100  # in an NLMSG_ERROR
NLM_F_ACK_TLVS = 0x200
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = 0x3FFF
NLMSGERR_ATTR_MSG = 1
NLMSGERR_ATTR_OFFS = 2
NLMSGERR_ATTR_POLICY = 4
# the kernel's extended-ACK texts, word for word (lib/nlattr.c)
POLICY_FAILED = "Attribute failed policy validation"
LEFTOVER = "bytes leftover after parsing attributes"

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
    out, off = _scan(data, end)
    if end - off >= HEADER.size:
        length = HEADER.unpack_from(data, off)[0]
        raise RemoteProtocolError(
            f"netlink message at offset {off} claims {length} bytes, "
            f"{end - off} available (truncated or corrupt datagram)")
    if off < end and any(bytes(data[off:end])):
        raise RemoteProtocolError(f"{end - off} stray bytes after the last netlink message")
    return out


def walk(data: bytes | memoryview, size: int | None = None) -> list[Message]:
    """The messages of a request datagram as the kernel walks it (netlink_rcv_skb):
    a header whose nlmsg_len is under 16 or runs past the end stops the walk
    silently, keeping the messages before it; fewer than 16 bytes left are ignored.
    At most len(data) // 16 messages."""
    return _scan(data, len(data) if size is None else size)[0]


def _scan(data: bytes | memoryview, end: int) -> tuple[list[Message], int]:
    """The whole messages in ``data[:end]`` up to the first header that is not one
    (nlmsg_len under 16 or past ``end``), and the offset where the scan stopped."""
    out: list[Message] = []
    off = 0
    while end - off >= HEADER.size:
        length, mtype, flags, seq, pid = HEADER.unpack_from(data, off)
        if length < HEADER.size or off + length > end:
            break
        out.append(Message(mtype, flags, seq, pid, data, off + HEADER.size, off + length))
        off += align4(length)
    return out, off


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


class PolicyError(RemoteProtocolError):
    """An attribute the kernel's policy check refuses before any handler runs:
    ``errno`` (ERANGE or EINVAL), ``offset`` of the attribute from the start of its
    message, and ``policy``, the NLMSGERR_ATTR_POLICY nest describing the rule."""

    def __init__(self, err: int, offset: int, policy: bytes) -> None:
        super().__init__(POLICY_FAILED)
        self.errno, self.offset, self.policy = err, offset, policy


class AttrPolicy(NamedTuple):
    """One entry of an attribute policy (struct nla_policy), as a liberal
    (non-strict) generic netlink family checks it.

    ``kind``: "u16", "u32", "string" or "nul_string"; ``max_len``: the longest
    string accepted (0: any); ``nest``: the rule as the kernel reports it in an
    extended ACK (NLMSGERR_ATTR_POLICY contents).
    """

    kind: str
    max_len: int
    nest: bytes


# NL_ATTR_TYPE_* and NL_POLICY_TYPE_ATTR_* of linux/netlink.h
_NL_ATTR_TYPE = {"u16": 3, "u32": 4, "string": 11, "nul_string": 12}
_POLICY_TYPE, _POLICY_MIN_U, _POLICY_MAX_U, _POLICY_MAX_LENGTH = 1, 4, 5, 7
_U64 = struct.Struct("=Q")


def attr_policy(kind: str, max_len: int = 0) -> AttrPolicy:
    """The policy entry of an attribute of ``kind`` (see :class:`AttrPolicy`)."""
    nest = b""
    if kind in ("u16", "u32"):
        top = 0xFFFF if kind == "u16" else 0xFFFFFFFF
        nest = (encode_attr(_POLICY_MIN_U, _U64.pack(0))
                + encode_attr(_POLICY_MAX_U, _U64.pack(top)))
    elif max_len:
        nest = encode_u32(_POLICY_MAX_LENGTH, max_len)
    nest += encode_u32(_POLICY_TYPE, _NL_ATTR_TYPE[kind])
    return AttrPolicy(kind, max_len, nest)


def _violates(policy: AttrPolicy, payload: bytes | memoryview) -> int:
    """The errno the kernel's policy check gives ``payload`` (0: accepted)."""
    size = len(payload)
    if policy.kind in ("u16", "u32"):
        return errno.ERANGE if size < (2 if policy.kind == "u16" else 4) else 0
    if policy.kind == "nul_string":
        window = bytes(payload[:policy.max_len + 1] if policy.max_len else payload)
        return 0 if b"\0" in window else errno.EINVAL
    if size < 1:
        return errno.ERANGE
    if policy.max_len and size - (bytes(payload[-1:]) == b"\0") > policy.max_len:
        return errno.ERANGE
    return 0


def parse_attrs(msg: Message, start: int, policy: dict[int, AttrPolicy]
                ) -> tuple[dict[int, tuple[int, int]], str]:
    """Attributes from ``start`` to the end of ``msg``, read as a liberal generic
    netlink family reads a request: the walk stops at an nla_len under 4 or past the
    end (the rest only earns the warning :data:`LEFTOVER`, returned as the second
    item); type flags are masked off; the last of a type wins; a type in ``policy``
    must pass it, else :class:`PolicyError`; other types are ignored.

    Returns type -> (payload start, payload end) and the warning ("" when none).
    """
    data, end = msg.data, msg.end
    found: dict[int, tuple[int, int]] = {}
    off = start
    while end - off >= ATTR.size:
        length, atype = ATTR.unpack_from(data, off)
        if length < ATTR.size or off + length > end:
            break
        atype &= NLA_TYPE_MASK
        rule = policy.get(atype)
        if rule is not None:
            err = _violates(rule, data[off + ATTR.size:off + length])
            if err:
                raise PolicyError(err, off - msg.start + HEADER.size, rule.nest)
        found[atype] = (off + ATTR.size, off + length)
        off += align4(length)
    return found, LEFTOVER if off < end else ""


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
        echoed = HEADER.size if msg.flags & NLM_F_CAPPED else align4(max(orig_len, HEADER.size))
        tlv = start + 4 + echoed
        for atype, a, b in iter_attrs(data, min(tlv, end), end):
            if atype == NLMSGERR_ATTR_MSG:
                text = get_str(data, a, b)
            elif atype == NLMSGERR_ATTR_OFFS:
                offset = get_u32(data, a, b, "extended ack offset")
    return ErrorReply(error, msg.seq, text, offset)


def encode_error(error: int, request: bytes, *, seq: int, pid: int, capped: bool = True,
                 ext_message: str = "", ext_offset: int | None = None,
                 ext_policy: bytes = b"") -> bytes:
    """An NLMSG_ERROR (``error`` positive, 0 for an ACK) as the kernel's netlink_ack()
    builds it, answering the message at the start of ``request``.

    An ACK, or an error when ``capped`` (NETLINK_CAP_ACK), echoes only the request's
    header and sets NLM_F_CAPPED; an error otherwise echoes the whole message
    (nlmsg_len bytes, padded), flags 0.  A message whose nlmsg_len does not fit
    ``request`` is echoed capped.  Extended-ACK attributes (message, offset, policy
    nest) are added, with NLM_F_ACK_TLVS, for those given (NETLINK_EXT_ACK).
    """
    header = bytes(request[:HEADER.size]).ljust(HEADER.size, b"\0")
    claimed = int(U32.unpack_from(header)[0])
    if error == 0 or capped or not HEADER.size <= claimed <= len(request):
        echo, flags = header, NLM_F_CAPPED
    else:
        echo, flags = bytes(request[:claimed]) + b"\0" * (align4(claimed) - claimed), 0
    tlvs = encode_str(NLMSGERR_ATTR_MSG, ext_message) if ext_message else b""
    if ext_offset is not None:
        tlvs += encode_u32(NLMSGERR_ATTR_OFFS, ext_offset)
    if ext_policy:
        tlvs += encode_attr(NLMSGERR_ATTR_POLICY | NLA_F_NESTED, ext_policy)
    flags |= NLM_F_ACK_TLVS if tlvs else 0
    return encode_message(NLMSG_ERROR, flags, seq, pid, I32.pack(-error) + echo + tlvs)
