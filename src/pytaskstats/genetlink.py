"""Generic netlink, sans-IO: genlmsghdr and the nlctrl family lookup, both directions."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import netlink as nl
from .errors import RemoteProtocolError

GENL_ID_CTRL = 0x10
GENL_HEADER = struct.Struct("=BBH")  # cmd, version, reserved
CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_HDRSIZE = 4
CTRL_ATTR_MAXATTR = 5
CTRL_ATTR_OPS = 6
CTRL_ATTR_OP_ID = 1
CTRL_ATTR_OP_FLAGS = 2
GENL_NAMSIZ = 16
# nlctrl's policy for GETFAMILY (net/netlink/genetlink.c): checked before the handler
CTRL_POLICY = {CTRL_ATTR_FAMILY_ID: nl.attr_policy("u16"),
               CTRL_ATTR_FAMILY_NAME: nl.attr_policy("nul_string", GENL_NAMSIZ - 1)}


class FamilyInfo(NamedTuple):
    """What nlctrl says of a family: its dynamic id, version and operations.

    ``ops`` maps command number to the op flags (GENL_ADMIN_PERM = 0x01 ...).
    """

    id: int
    name: str
    version: int = 0
    hdrsize: int = 0
    maxattr: int = 0
    ops: tuple[tuple[int, int], ...] = ()


def encode(family: int, cmd: int, attrs: bytes, *, seq: int, flags: int = nl.NLM_F_REQUEST,
           pid: int = 0, version: int = 1) -> bytes:
    """A complete generic netlink message: nlmsghdr + genlmsghdr + attributes."""
    return nl.encode_message(family, flags, seq, pid, GENL_HEADER.pack(cmd, version, 0) + attrs)


def genl_header(msg: nl.Message) -> tuple[int, int]:
    """Return (cmd, version) of a generic netlink message."""
    if msg.end - msg.start < GENL_HEADER.size:
        raise RemoteProtocolError(f"generic netlink message of {msg.end - msg.start} bytes "
                                  "has no genlmsghdr")
    cmd, version, _ = GENL_HEADER.unpack_from(msg.data, msg.start)
    return int(cmd), int(version)


def encode_get_family(name: str, *, seq: int, pid: int = 0) -> bytes:
    """CTRL_CMD_GETFAMILY for ``name``."""
    return encode(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, nl.encode_str(CTRL_ATTR_FAMILY_NAME, name),
                  seq=seq, pid=pid)


def encode_family(info: FamilyInfo, *, seq: int, pid: int) -> bytes:
    """CTRL_CMD_NEWFAMILY describing ``info`` (the reply a kernel or taskstatsd sends)."""
    ops = b"".join(
        nl.encode_attr(i + 1, nl.encode_u32(CTRL_ATTR_OP_ID, op) + nl.encode_u32(
            CTRL_ATTR_OP_FLAGS, flags))
        for i, (op, flags) in enumerate(info.ops))
    attrs = (nl.encode_str(CTRL_ATTR_FAMILY_NAME, info.name)
             + nl.encode_attr(CTRL_ATTR_FAMILY_ID, struct.pack("=H", info.id))
             + nl.encode_u32(CTRL_ATTR_VERSION, info.version)
             + nl.encode_u32(CTRL_ATTR_HDRSIZE, info.hdrsize)
             + nl.encode_u32(CTRL_ATTR_MAXATTR, info.maxattr)
             + nl.encode_attr(CTRL_ATTR_OPS, ops))
    return encode(GENL_ID_CTRL, CTRL_CMD_NEWFAMILY, attrs, seq=seq, pid=pid, flags=0, version=2)


def decode_get_family(msg: nl.Message) -> str:
    """The family name asked for by a CTRL_CMD_GETFAMILY request."""
    cmd, _ = genl_header(msg)
    if cmd != CTRL_CMD_GETFAMILY:
        raise RemoteProtocolError(f"nlctrl command {cmd} is not GETFAMILY")
    for atype, a, b in nl.iter_attrs(msg.data, msg.start + GENL_HEADER.size, msg.end):
        if atype == CTRL_ATTR_FAMILY_NAME:
            return nl.get_str(msg.data, a, b)
    raise RemoteProtocolError("GETFAMILY request without a family name")


def decode_family_query(msg: nl.Message) -> tuple[int | str | None, str]:
    """What a CTRL_CMD_GETFAMILY request asks for, read as nlctrl reads it: the family
    name when given (it wins over an id), else the family id, else None (nlctrl
    answers EINVAL); and the parse warning (see :func:`~pytaskstats.netlink.parse_attrs`).
    Raises :class:`~pytaskstats.netlink.PolicyError` as nlctrl's policy does."""
    found, warning = nl.parse_attrs(msg, msg.start + GENL_HEADER.size, CTRL_POLICY)
    if CTRL_ATTR_FAMILY_NAME in found:
        return nl.get_str(msg.data, *found[CTRL_ATTR_FAMILY_NAME]), warning
    if CTRL_ATTR_FAMILY_ID in found:
        return nl.get_u16(msg.data, *found[CTRL_ATTR_FAMILY_ID], "CTRL_ATTR_FAMILY_ID"), warning
    return None, warning


def _decode_ops(data: bytes | memoryview, start: int, end: int) -> tuple[tuple[int, int], ...]:
    ops = []
    for _, a, b in nl.iter_attrs(data, start, end):
        op_id = flags = 0
        for atype, c, d in nl.iter_attrs(data, a, b):
            if atype == CTRL_ATTR_OP_ID:
                op_id = nl.get_u32(data, c, d, "op id")
            elif atype == CTRL_ATTR_OP_FLAGS:
                flags = nl.get_u32(data, c, d, "op flags")
        ops.append((op_id, flags))
    return tuple(ops)


def decode_family(msg: nl.Message) -> FamilyInfo:
    """Decode a CTRL_CMD_NEWFAMILY reply; unknown attributes are skipped."""
    cmd, _ = genl_header(msg)
    if cmd != CTRL_CMD_NEWFAMILY:
        raise RemoteProtocolError(f"nlctrl reply has command {cmd}, expected NEWFAMILY")
    data = msg.data
    fields: dict[str, object] = {}
    for atype, a, b in nl.iter_attrs(data, msg.start + GENL_HEADER.size, msg.end):
        if atype == CTRL_ATTR_FAMILY_ID:
            fields["id"] = nl.get_u16(data, a, b, "CTRL_ATTR_FAMILY_ID")
        elif atype == CTRL_ATTR_FAMILY_NAME:
            fields["name"] = nl.get_str(data, a, b)
        elif atype == CTRL_ATTR_VERSION:
            fields["version"] = nl.get_u32(data, a, b, "CTRL_ATTR_VERSION")
        elif atype == CTRL_ATTR_HDRSIZE:
            fields["hdrsize"] = nl.get_u32(data, a, b, "CTRL_ATTR_HDRSIZE")
        elif atype == CTRL_ATTR_MAXATTR:
            fields["maxattr"] = nl.get_u32(data, a, b, "CTRL_ATTR_MAXATTR")
        elif atype == CTRL_ATTR_OPS:
            fields["ops"] = _decode_ops(data, a, b)
    if "id" not in fields or "name" not in fields:
        raise RemoteProtocolError("nlctrl reply lacks the family id or name")
    return FamilyInfo(**fields)  # type: ignore[arg-type]
