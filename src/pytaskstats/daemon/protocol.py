"""taskstatsd's own extension family: status and history over the same framing.

The daemon answers the kernel's TASKSTATS family as the kernel does, and adds a
``TASKSTATSD`` family for what the kernel has no message for.  Requests carry a
JSON object in ATTR_JSON; replies carry JSON in ATTR_JSON, history as a
multi-part answer (NLM_F_MULTI) ended by NLMSG_DONE.
"""

from __future__ import annotations

import json
from typing import Any

from .. import genetlink as genl
from .. import netlink as nl
from ..errors import RemoteProtocolError

FAMILY_NAME = "TASKSTATSD"
FAMILY_ID = 0x7F00
CMD_STATUS = 1
CMD_HISTORY = 2
CMD_REPLY = 3
ATTR_JSON = 1
CHUNK = 48 * 1024  # JSON bytes per reply message (fits a 64 KiB receive buffer)
OPS = ((CMD_STATUS, 0), (CMD_HISTORY, 0))


def encode_request(cmd: int, params: dict[str, Any], *, seq: int) -> bytes:
    """A STATUS or HISTORY request with its JSON parameters."""
    body = nl.encode_attr(ATTR_JSON, json.dumps(params).encode())
    return genl.encode(FAMILY_ID, cmd, body, seq=seq, flags=nl.NLM_F_REQUEST)


def decode_json(msg: nl.Message) -> Any:
    """The JSON document carried by a request or reply message."""
    for atype, a, b in nl.iter_attrs(msg.data, msg.start + genl.GENL_HEADER.size, msg.end):
        if atype == ATTR_JSON:
            try:
                return json.loads(bytes(msg.data[a:b]))
            except ValueError as err:
                raise RemoteProtocolError(f"bad JSON in {FAMILY_NAME} message: {err}") from err
    raise RemoteProtocolError(f"{FAMILY_NAME} message without a JSON attribute")


def encode_reply(doc: Any, *, seq: int, pid: int, multi: bool = False) -> bytes:
    """One reply message carrying ``doc``."""
    flags = nl.NLM_F_MULTI if multi else 0
    return genl.encode(FAMILY_ID, CMD_REPLY, nl.encode_attr(ATTR_JSON, json.dumps(doc).encode()),
                       seq=seq, flags=flags, pid=pid)


def encode_rows(rows: list[dict[str, Any]], *, seq: int, pid: int) -> list[bytes]:
    """Rows as multi-part replies of at most ~CHUNK bytes of JSON each, then DONE."""
    out: list[bytes] = []
    chunk: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        text = len(json.dumps(row))
        if chunk and size + text > CHUNK:
            out.append(encode_reply(chunk, seq=seq, pid=pid, multi=True))
            chunk, size = [], 0
        chunk.append(row)
        size += text
    if chunk:
        out.append(encode_reply(chunk, seq=seq, pid=pid, multi=True))
    out.append(nl.encode_message(nl.NLMSG_DONE, nl.NLM_F_MULTI, seq, pid, b"\0\0\0\0"))
    return out
