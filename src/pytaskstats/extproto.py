"""taskstatsd's own extension family: status, history, options and cgroup2 counts
over the same framing.

The daemon answers the kernel's TASKSTATS family as the kernel does, and adds a
``TASKSTATSD`` family for what the kernel has no message for.  Requests carry a
JSON object in ATTR_JSON (parameters checked by :mod:`pytaskstats.daemon.schema`); replies carry
JSON in ATTR_JSON, history as a multi-part answer (NLM_F_MULTI) ended by
NLMSG_DONE.  Commands:

- STATUS: the daemon's health document; with ``{"flush": true}`` the journal is
  flushed first, so its counters account for every exit received before.
- HISTORY: journal rows, at most the daemon's ``history_max_rows``: when it cut
  the answer, its NLMSG_DONE carries a warning (NLMSGERR_ATTR_MSG, with
  NLM_F_ACK_TLVS, as the kernel's dump ends carry an extended-ACK message) to
  clients that set ext_ack; :class:`Rows` holds it on the client's side.  A query
  that runs past its time budget is answered ETIME.
- SET_OPTIONS: ``{"cap_ack": bool, "ext_ack": bool}`` for this connection, as
  setsockopt(NETLINK_CAP_ACK / NETLINK_EXT_ACK) on a netlink socket (a Unix
  socket has no netlink options).  Both start off, as on a new netlink socket:
  error replies echo the whole request and carry no extended-ACK attributes.
  No reply (an ACK with NLM_F_ACK).
- CGROUP: task state counts of the cgroup2 directory whose fd is passed with
  SCM_RIGHTS (the kernel's CGROUPSTATS counts v1 only and answers EINVAL).

JSON is bounded before it is parsed: at most :data:`MAX_JSON` bytes (an
attribute's limit) nested at most :data:`MAX_DEPTH` deep, on both sides.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from . import genetlink as genl
from . import netlink as nl
from .errors import RemoteProtocolError

FAMILY_NAME = "TASKSTATSD"
FAMILY_ID = 0x7F00
CMD_STATUS = 1
CMD_HISTORY = 2
CMD_REPLY = 3
CMD_SET_OPTIONS = 4
CMD_CGROUP = 5
ATTR_JSON = 1
CHUNK = 48 * 1024  # JSON bytes per reply message (fits a 64 KiB receive buffer)
OPS = ((CMD_STATUS, 0), (CMD_HISTORY, 0), (CMD_SET_OPTIONS, 0), (CMD_CGROUP, 0))
MAX_JSON = 0xFFFF - nl.ATTR.size  # bytes: what one attribute can carry
MAX_DEPTH = 16  # nesting of arrays/objects; documents here nest 4 deep at most
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def encode_request(cmd: int, params: dict[str, Any], *, seq: int,
                   flags: int = nl.NLM_F_REQUEST) -> bytes:
    """A request of command ``cmd`` with its JSON parameters."""
    body = nl.encode_attr(ATTR_JSON, json.dumps(params).encode())
    return genl.encode(FAMILY_ID, cmd, body, seq=seq, flags=flags)


def nesting(text: bytes) -> int:
    """How deep arrays and objects nest in JSON ``text`` (brackets inside strings do
    not count; those of an unterminated string do: such text is not JSON anyway).
    Linear time, no recursion."""
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKET)
    opened = len(brackets) - brackets.count(b"]") - brackets.count(b"}")
    if opened <= MAX_DEPTH:
        return opened  # an upper bound that is enough
    return max(accumulate(_STEP[c] for c in brackets))


def loads(text: bytes) -> Any:
    """Parse JSON ``text`` from a peer within :data:`MAX_JSON` and :data:`MAX_DEPTH`
    (checked before the parser can recurse); RemoteProtocolError otherwise."""
    if len(text) > MAX_JSON:
        raise RemoteProtocolError(f"JSON of {len(text)} bytes: at most {MAX_JSON}")
    if nesting(text) > MAX_DEPTH:
        raise RemoteProtocolError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError included
        raise RemoteProtocolError(f"bad JSON in {FAMILY_NAME} message: {err}") from err


def decode_json(msg: nl.Message) -> Any:
    """The JSON document carried by a request or reply message (see :func:`loads`)."""
    for atype, a, b in nl.iter_attrs(msg.data, msg.start + genl.GENL_HEADER.size, msg.end):
        if atype == ATTR_JSON:
            return loads(bytes(msg.data[a:b]))
    raise RemoteProtocolError(f"{FAMILY_NAME} message without a JSON attribute")


def encode_reply(doc: Any, *, seq: int, pid: int, multi: bool = False) -> bytes:
    """One reply message carrying ``doc``."""
    flags = nl.NLM_F_MULTI if multi else 0
    return genl.encode(FAMILY_ID, CMD_REPLY, nl.encode_attr(ATTR_JSON, json.dumps(doc).encode()),
                       seq=seq, flags=flags, pid=pid)


class Rows(list[Any]):
    """The rows of a multi-part reply and ``note``, the warning its DONE carried
    ("" if none; e.g. that the daemon cut the answer)."""

    note: str = ""


def done_note(msg: nl.Message) -> str:
    """The extended-ACK message of an NLMSG_DONE (after its int), "" if none."""
    if not msg.flags & nl.NLM_F_ACK_TLVS:
        return ""
    for atype, a, b in nl.iter_attrs(msg.data, min(msg.start + 4, msg.end), msg.end):
        if atype == nl.NLMSGERR_ATTR_MSG:
            return nl.get_str(msg.data, a, b)
    return ""


def encode_rows(rows: list[dict[str, Any]], *, seq: int, pid: int, note: str = "",
                max_bytes: int | None = None, notes: bool = True) -> list[bytes]:
    """Rows as multi-part replies of at most ~CHUNK bytes of JSON each, then DONE
    carrying ``note`` as an extended-ACK message (when ``notes``: the client set
    ext_ack).  Past ``max_bytes`` of JSON the rest of the rows is cut, and the note
    says so: the work and memory of one answer are bounded."""
    out: list[bytes] = []
    chunk: list[dict[str, Any]] = []
    size = total = 0
    for done, row in enumerate(rows):
        text = len(json.dumps(row))
        if max_bytes is not None and total + text > max_bytes:
            note = (f"answer cut at {done} rows ({max_bytes} bytes, history_max_mb): "
                    "narrow it with --since / --limit")
            break
        if chunk and size + text > CHUNK:
            out.append(encode_reply(chunk, seq=seq, pid=pid, multi=True))
            chunk, size = [], 0
        chunk.append(row)
        size += text
        total += text
    if chunk:
        out.append(encode_reply(chunk, seq=seq, pid=pid, multi=True))
    tlvs = nl.encode_str(nl.NLMSGERR_ATTR_MSG, note) if note and notes else b""
    flags = nl.NLM_F_MULTI | (nl.NLM_F_ACK_TLVS if tlvs else 0)
    out.append(nl.encode_message(nl.NLMSG_DONE, flags, seq, pid, b"\0\0\0\0" + tlvs))
    return out
