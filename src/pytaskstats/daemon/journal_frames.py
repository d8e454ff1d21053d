"""The framing between taskstatsd and its journal writer process (pure: bytes in and
out, no sockets).

Frames, in order on one stream: kind (1 byte), payload length (u32), payload.

- ``E`` daemon -> writer, one exit: time_ns (i64), cpu (i32; -1 None), cgroup
  length (i32; -1 None), raw length (u32), owner_sees (i8; -1 None), sampled (i8),
  pidns and ns_ids lengths (i32 each; -1 None), the cgroup (UTF-8, surrogateescape), pidns,
  ns_ids (ASCII), the raw message;
- ``P`` daemon -> writer, JSON list of sample rows, each a list of values in
  ``journal_schema.SAMPLE_COLUMNS`` order (null: NULL);
- ``N`` daemon -> writer, JSON ``[counter, n]``: losses counted before the writer;
- ``C`` daemon -> writer, JSON ``[id, op]``, op ``flush`` or ``stop``;
- ``S`` writer -> daemon, JSON :class:`JournalHealth`: pushed when it changed (at
  most every few ms), and before every ``R``;
- ``R`` writer -> daemon, JSON ``{"id"}`` or ``{"id", "error"}``; id 0 answers the
  start.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .journal_rows import Item, JournalEntry, Tags

__all__ = ["CALL", "EXIT", "HEALTH", "NOTE", "REPLY", "SAMPLES", "Frame", "JournalHealth",
           "Unframer", "decode_exit", "decode_health", "encode_exit", "encode_health",
           "encode_json", "json_of", "split"]

HEAD = struct.Struct("=BI")  # kind, payload length
ENTRY = struct.Struct("=BIqiiIbbii")  # HEAD, time_ns, cpu, cgroup, raw lengths, then tags
_ITEM_SIZE = ENTRY.size - HEAD.size
EXIT, NOTE, CALL, HEALTH, REPLY, SAMPLES = b"ENCSRP"
Frame = tuple[int, int, int]  # kind, start (of the header), end


@dataclass(frozen=True)
class JournalHealth:
    """The writer's state, as it last pushed it: its ``counters`` (journaled,
    dropped_*, lost_*, suspensions, retired), whether journaling is ``suspended``,
    the exits it holds uncommitted (``pending``), the exits it ``received`` since
    it started, and whether the journal file is ``open`` (False: a full disk kept
    it from being created yet)."""

    counters: Mapping[str, int] = field(default_factory=dict)
    suspended: bool = False
    pending: int = 0
    received: int = 0
    open: bool = True


def encode_json(kind: int, payload: Any) -> bytes:
    """A frame of ``kind`` holding ``payload`` as JSON."""
    body = json.dumps(payload).encode()
    return HEAD.pack(kind, len(body)) + body


def json_of(data: bytes | memoryview, frame: Frame) -> Any:
    """The JSON payload of ``frame`` in ``data``."""
    _, start, end = frame
    return json.loads(bytes(data[start + HEAD.size:end]))


def encode_health(health: JournalHealth) -> bytes:
    """The ``S`` frame of ``health``."""
    return encode_json(HEALTH, {"counters": dict(health.counters),
                                "suspended": health.suspended, "pending": health.pending,
                                "received": health.received, "open": health.open})


def decode_health(payload: Mapping[str, Any]) -> JournalHealth:
    """The :class:`JournalHealth` of an ``S`` frame's JSON payload."""
    return JournalHealth({str(k): int(v) for k, v in payload["counters"].items()},
                         bool(payload["suspended"]), int(payload["pending"]),
                         int(payload["received"]), bool(payload["open"]))


def encode_exit(entry: JournalEntry) -> tuple[bytes, bytes, bytes, bytes]:
    """The ``E`` frame of ``entry`` in four pieces (header, cgroup, namespaces, raw),
    to be sent gathered without copying the raw message."""
    cpu, cgroup = entry.record.cpu, entry.cgroup
    sees, pidns, ids, sampled = entry.tags
    path = b"" if cgroup is None else cgroup.encode("utf-8", "surrogateescape")
    ns = (b"" if pidns is None else pidns.encode()) + (b"" if ids is None else ids.encode())
    head = ENTRY.pack(EXIT, _ITEM_SIZE + len(path) + len(ns) + len(entry.raw), entry.time_ns,
                      -1 if cpu is None else cpu, -1 if cgroup is None else len(path),
                      len(entry.raw), -1 if sees is None else int(sees), int(sampled),
                      -1 if pidns is None else len(pidns), -1 if ids is None else len(ids))
    return head, path, ns, entry.raw


def decode_exit(data: bytes, frame: Frame) -> Item:
    """The store's item of an ``E`` frame; ValueError if its lengths disagree."""
    _, start, end = frame
    (_, _, time_ns, cpu, cgroup_len, raw_len, sees, sampled, pidns_len,
     ids_len) = ENTRY.unpack_from(data, start)
    at = start + ENTRY.size
    texts: list[str | None] = []
    for length in (cgroup_len, pidns_len, ids_len):
        texts.append(None if length < 0 else
                     data[at:at + length].decode("utf-8", "surrogateescape"))
        at += max(length, 0)
    if at + raw_len != end:
        raise ValueError(f"exit frame of {end - start} bytes declares {raw_len} raw bytes")
    cgroup, pidns, ids = texts
    tags = Tags(None if sees < 0 else bool(sees), pidns, ids, bool(sampled))
    return time_ns, None if cpu < 0 else cpu, cgroup, data[at:end], tags


def split(buf: bytes) -> tuple[list[Frame], int]:
    """The complete frames at the start of ``buf``: (kind, start, end) of each
    frame (header included), and where the first incomplete one starts."""
    out, n, pos = [], len(buf), 0
    while n - pos >= HEAD.size:
        kind, length = HEAD.unpack_from(buf, pos)
        end = pos + HEAD.size + length
        if end > n:
            break
        out.append((kind, pos, end))
        pos = end
    return out, pos


class Unframer:
    """Frames from a byte stream read in arbitrary pieces."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> tuple[bytes, list[Frame]]:
        """The data holding the frames completed by ``chunk``, and those frames."""
        data = self._rest + chunk if self._rest else chunk
        frames, pos = split(data)
        self._rest = data[pos:]
        return data, frames
