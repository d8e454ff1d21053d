"""An exit message rebuilt from its journal row, and the difference kept when the
message is not what the row rebuilds (pure: bytes and values, no database).

The journal stores no message bytes.  :func:`rebuild` makes the message a row's
columns describe (family and seq from ``nl_family`` and ``nl_seq``): the one
AGGR_PID nest the kernel sends when a task exits and its thread group lives on,
its struct in the layout of its ``version`` at that layout's full size, and the
PRESENT bits of a /proc record (a field within the layout is NULL).  That is every
byte of nearly every exit, so ``extra`` is NULL.  Any other message (an AGGR_TGID
nest, NULL attributes, a non-zero padding byte, bytes past the layout, a comm that
is not UTF-8, a header flag...) keeps :func:`diff`: the message deflated with the
rebuilt bytes as the preset dictionary, a few bytes for a small change, about the
size of what is not in the columns otherwise.  :func:`restore` inverts it exactly.

The rebuild rule is part of the file format: ``extra`` means nothing under another
rule.  So the rule is frozen here (:data:`MAX_VERSION`, :data:`PRESENT_BYTES`), not
taken from the field table's newest layout; changing it needs a schema migration
that re-encodes ``extra``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any

from .. import netlink as nl
from ..errors import ProtocolError
from ..fields import FIELDS, MIN_VERSION, Layout, layout
from ..genetlink import encode as genl_encode
from ..taskstats import (
    CMD_NEW,
    GENL_VERSION,
    TYPE_AGGR_PID,
    TYPE_PID,
    TYPE_PRESENT,
    TYPE_STATS,
)

__all__ = ["MAX_VERSION", "PRESENT_BYTES", "REBUILD", "diff", "rebuild", "restore",
           "with_message"]

REBUILD = ("nl_family", "nl_seq", "extra")  # the exits columns that only the rebuild reads
MAX_VERSION = 17  # newer structs rebuild as this layout; their tail is in ``extra``
PRESENT_BYTES = 10  # the PRESENT bitmap's width (79 fields, as encode_exit writes it)
_WBITS = -15  # raw deflate: no header, no checksum (6 bytes a row)
_NS = 1_000_000_000
_U64 = 1 << 64
_U64_NAMES = frozenset(f.name for f in FIELDS if f.ctype == "u64")
_POSITIONS = tuple((f.name, f.position) for f in FIELDS)
Columns = Mapping[str, Any]  # field and context columns as SQLite returns them


def _flat(lay: Layout, version: int, row: Columns) -> list[Any]:
    """The struct values of ``row`` in ``lay``'s order (NULL: 0)."""
    flat: list[Any] = []
    for f in lay.fields:
        value = version if f.name == "version" else row[f.name]
        if f.ctype == "timespec":
            flat += divmod(value, _NS) if value is not None else (0, 0)
        elif f.ctype == "comm":
            flat.append(b"" if value is None else str(value).encode()[:32])
        elif value is None:
            flat.append(0)
        else:
            flat.append(value + _U64 if value < 0 and f.name in _U64_NAMES else value)
    return flat


def _present(lay: Layout, row: Columns) -> bytes:
    """The PRESENT attribute of a /proc record: none when every plain field of the
    layout has a value (the kernel's records; a timespec of 0 is NULL there too)."""
    if all(row[f.name] is not None for f in lay.fields if f.ctype != "timespec"):
        return b""
    bits = sum(1 << position for name, position in _POSITIONS if row[name] is not None)
    if bits >> (8 * PRESENT_BYTES):
        return b""
    return nl.encode_attr(TYPE_PRESENT, bits.to_bytes(PRESENT_BYTES, "little"))


def rebuild(family: int, seq: int, pid: int, row: Columns) -> bytes:
    """The exit message the columns of ``row`` describe (see the module docstring);
    b"" when they describe none (no version, or a value outside its C type)."""
    version = row["version"]
    if not isinstance(version, int) or not MIN_VERSION <= version <= 0xFFFF:
        return b""
    lay = layout(min(version, MAX_VERSION))
    try:
        body = lay.struct_for(len(lay.fields)).pack(*_flat(lay, version, row))
        stats = nl.encode_attr(TYPE_STATS, body.ljust(lay.size, b"\0"))
        nest = nl.encode_attr(TYPE_AGGR_PID, nl.encode_u32(TYPE_PID, pid) + stats
                              + _present(lay, row))
        return genl_encode(family, CMD_NEW, nest, seq=seq, flags=0, pid=0,
                           version=GENL_VERSION)
    except (struct.error, ProtocolError, TypeError, AttributeError, ValueError):
        return b""


def diff(raw: bytes, rebuilt: bytes) -> bytes | None:
    """What to store beside the columns: None when they rebuild ``raw``, else ``raw``
    deflated against ``rebuilt``."""
    if raw == rebuilt:
        return None
    packer = zlib.compressobj(9, zlib.DEFLATED, _WBITS, 9, zlib.Z_DEFAULT_STRATEGY,
                              zdict=rebuilt or b"\0")
    return packer.compress(raw) + packer.flush()


def restore(rebuilt: bytes, extra: bytes | None) -> bytes:
    """The message :func:`diff` was given (ValueError if ``extra`` is damaged)."""
    if extra is None:
        return rebuilt
    unpacker = zlib.decompressobj(_WBITS, zdict=rebuilt or b"\0")
    try:
        out = unpacker.decompress(extra) + unpacker.flush()
    except zlib.error as err:
        raise ValueError(f"a journaled message's stored difference is damaged: {err}") from err
    if not unpacker.eof:
        raise ValueError("a journaled message's stored difference is truncated")
    return out



def with_message(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (an exit as history answers it, with the :data:`REBUILD` columns) with
    ``raw``, its message exactly as received, in their place (b"" for a row that
    never had one).  ValueError if its stored difference is damaged."""
    family, seq, extra = (row.pop(name) for name in REBUILD)
    rebuilt = b"" if family is None or seq is None else rebuild(family, seq, row["pid"], row)
    row["raw"] = restore(rebuilt, extra)
    return row
