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
from collections.abc import Mapping
from enum import IntEnum
from itertools import accumulate
from typing import Any, Literal, TypedDict, cast

from . import genetlink as genl
from . import netlink as nl
from .errors import RemoteProtocolError
from .fields import FIELDS, Field

FAMILY_NAME = "TASKSTATSD"
FAMILY_ID = 0x7F00


class Command(IntEnum):
    """The TASKSTATSD family's commands (genlmsghdr.cmd)."""

    STATUS = 1
    HISTORY = 2
    REPLY = 3
    SET_OPTIONS = 4
    CGROUP = 5


CMD_STATUS, CMD_HISTORY, CMD_REPLY = Command.STATUS, Command.HISTORY, Command.REPLY
CMD_SET_OPTIONS, CMD_CGROUP = Command.SET_OPTIONS, Command.CGROUP
ATTR_JSON = 1
CHUNK = 48 * 1024  # JSON bytes per reply message (fits a 64 KiB receive buffer)
OPS = ((CMD_STATUS, 0), (CMD_HISTORY, 0), (CMD_SET_OPTIONS, 0), (CMD_CGROUP, 0))
MAX_JSON = 0xFFFF - nl.ATTR.size  # bytes: what one attribute can carry
MAX_DEPTH = 16  # nesting of arrays/objects; documents here nest 4 deep at most
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


# ---------------------------------------------------------------- the HISTORY vocabulary

GroupBy = Literal["comm", "uid", "cgroup"]
# the key column of a group row, by group_by
GROUP_KEYS: dict[str, str] = {"comm": "ac_comm", "uid": "ac_uid", "cgroup": "cgroup"}
# what a journal row carries besides the kernel's fields (time_ns: CLOCK_REALTIME ns)
CONTEXT = ("time_ns", "cpu", "pid", "tgid", "ended_process", "cgroup")
EXIT_SORTS = (*CONTEXT, *(f.name for f in FIELDS))  # what exit rows sort by
Kind = Literal["exit", "sample", "scan"]  # scan: the samples of scans, not exit tails
# a sample row's deltas over its interval: kernel names and units (docs/fields.md)
SAMPLE_DELTAS = (
    "ac_utime", "ac_stime", "cpu_count", "cpu_delay_total", "blkio_count",
    "blkio_delay_total", "swapin_count", "swapin_delay_total", "freepages_count",
    "freepages_delay_total", "thrashing_count", "thrashing_delay_total", "compact_count",
    "compact_delay_total", "wpcopy_count", "wpcopy_delay_total", "irq_count",
    "irq_delay_total", "read_bytes", "write_bytes", "read_char", "write_char",
    "read_syscalls", "write_syscalls", "nvcsw", "nivcsw", "ac_minflt", "ac_majflt")
# the keys of a sample row ("kind": "sample"): time_ns is the end of its interval
# (CLOCK_REALTIME ns), interval_ns its length, tgid at the client's namespace level,
# btime the process's begin (s since the epoch), running whether the process was alive
# at the last sample taken; the SAMPLE_DELTAS; hiwater_rss a level (KB), not a delta
SAMPLE_KEYS = ("kind", "time_ns", "interval_ns", "tgid", "comm", "ac_uid", "cgroup", "btime",
               "threads", "running", *SAMPLE_DELTAS, "hiwater_rss")
_SUMMED_UNITS = frozenset({"count", "ns", "us", "bytes", "MB*us"})


def _aggregate(field: Field) -> str | None:
    """How groups combine ``field`` (as SQL): MAX of peaks, MIN of nonzero minima, SUM
    of counts, times, bytes and integrals; None for identities, flags and timestamps."""
    if field.name.startswith("hiwater_") or field.name.endswith("_delay_max"):
        return f"MAX({field.name})"
    if field.name.endswith("_delay_min"):  # 0 means "no delay seen"
        return f"MIN(NULLIF({field.name}, 0))"
    if field.unit in _SUMMED_UNITS and field.name != "ac_tgetime":  # per group, not task
        return f"SUM({field.name})"
    return None


# field name -> its aggregate over a group: the fields a group row (and ``fields``) has
AGGREGATES: dict[str, str] = {f.name: a for f in FIELDS if (a := _aggregate(f)) is not None}


class HistoryQuery(TypedDict, total=False):
    """The parameters of a HISTORY request (checked by the daemon's schema): times in
    CLOCK_REALTIME ns; ``sort`` a field name, "-" first for descending; ``kind``
    "exit" or "sample" rows only (default both); ``at_ns``: the sample interval
    holding that time (instead of since/until)."""

    since_ns: int
    until_ns: int
    comm: str
    uid: int
    pid: int
    tgid: int
    cgroup: str
    group_by: GroupBy
    sort: str
    limit: int
    totals: bool
    bucket_s: int
    fields: list[str]
    plausible: bool
    kind: Kind
    at_ns: int


class Status(TypedDict, total=False):
    """taskstatsd's STATUS document (JSON); which keys a client sees depends on the
    daemon's policy (root and its admin group see all).  ``daemon``, ``kernel`` and
    ``counters`` are always there."""

    daemon: dict[str, Any]
    kernel: dict[str, Any]
    counters: dict[str, int]
    listeners: dict[str, Any]
    clients: int
    gaps: list[list[Any]]
    exit_policy: dict[str, Any]
    journal: dict[str, Any]
    metrics: str


STATUS_KEYS = ("daemon", "kernel", "counters")  # what every Status document has


# ---------------------------------------------------------------- requests and replies

def encode_request(cmd: int, params: Mapping[str, Any], *, seq: int,
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


class Rows(list[dict[str, Any]]):
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


def status_of(doc: Any) -> Status:
    """A STATUS reply checked as far as every client relies on it: a JSON object
    with :data:`STATUS_KEYS`; RemoteProtocolError otherwise."""
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), dict) for k in STATUS_KEYS):
        raise RemoteProtocolError(f"taskstatsd's status is not a JSON object with "
                                  f"{', '.join(STATUS_KEYS)}")
    return cast(Status, doc)


def rows_of(reply: Any) -> Rows:
    """A HISTORY reply checked: rows that are JSON objects; RemoteProtocolError
    otherwise."""
    if not isinstance(reply, Rows) or not all(isinstance(row, dict) for row in reply):
        raise RemoteProtocolError("taskstatsd's history is not a multi-part answer of "
                                  "JSON objects")
    return reply
