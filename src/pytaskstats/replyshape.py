"""The fast path for GET replies: one precompiled ``struct`` per reply shape.

The kernel answers every GET of one scope with datagrams of one size and one layout
(nlmsghdr, genlmsghdr, the AGGR nest, the PID/TGID attribute, STATS and the struct of
its version).  A :class:`Shape`, learned from a reply the strict decoder
(:func:`pytaskstats.taskstats.decode`) already accepted, unpacks such a datagram in
one ``unpack`` (or a window of them, laid end to end, in one ``iter_unpack``) and
compares its fixed parts byte for byte: lengths, types, command, genetlink version,
flags and the struct version.  Only the sequence number, the port id (non-zero) and
the id vary.  A datagram that differs in any fixed byte is not the shape: the caller
decodes it strictly, so the fast path never accepts what the strict decoder refuses,
and answers exactly what it answers (checked once at learning time, and by tests).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import Any

from . import netlink as nl
from . import taskstats as ts
from .fields import FIELDS, LATEST_VERSION, MIN_VERSION, Scope, layout
from .records import TaskStats

# nlmsg_len, type, flags | seq | port id | cmd, version, reserved, nest header, id
# attribute header | id | STATS header, struct version
_HEAD = "8sII12sI6s"
_FIXED = struct.Struct("=IHH")
_MIDDLE = struct.Struct("=BBHHHHH")
_TAIL = struct.Struct("=HHH")
_COMM = next(f.position for f in FIELDS if f.name == "ac_comm")

Unpacked = tuple[Any, ...]
_COMMS: dict[bytes, str] = {}  # raw ac_comm -> its text


class Shape:
    """One reply shape: ``size`` bytes, ``scope``, struct ``version``, for ``family``.

    ``struct`` unpacks a whole datagram, ``heads`` only its header parts (the same
    first six values); ``match(t)`` tells whether either's tuple ``t`` has the
    shape's fixed bytes and a non-zero port id (a reply, not an exit event);
    ``record(t)`` builds the :class:`TaskStats` of a ``struct`` tuple, equal to what
    the strict decoder builds.  ``t[1]`` is the sequence number, ``t[4]`` the id.
    """

    __slots__ = ("family", "fixed", "heads", "record", "scope", "size", "struct", "version")

    def __init__(self, family: int, scope: Scope, version: int, size: int,
                 source: str) -> None:
        lay = layout(version)
        payload = size - 36
        count = lay.fitting(payload)
        body = lay.struct_for(count)
        pad = payload - body.size
        self.struct = struct.Struct(f"={_HEAD}{body.format[2:]}{pad}x")
        self.heads = struct.Struct(f"={_HEAD}{size - 38}x")  # the header parts only
        self.family, self.scope, self.version, self.size = family, scope, version, size
        nest, ident = ((ts.TYPE_AGGR_PID, ts.TYPE_PID) if scope == "pid"
                       else (ts.TYPE_AGGR_TGID, ts.TYPE_TGID))
        self.fixed = (_FIXED.pack(size, family, 0),
                      _MIDDLE.pack(ts.CMD_NEW, ts.GENL_VERSION, 0, size - 20, nest, 8, ident),
                      _TAIL.pack(size - 32, ts.TYPE_STATS, version))
        self.record = _builder(version, count, payload, scope, source)

    def match(self, t: Unpacked) -> bool:
        """Whether ``t`` (this shape's ``struct`` unpacked) is a reply of the shape."""
        f0, f1, f2 = self.fixed
        return bool(t[0] == f0 and t[3] == f1 and t[5] == f2 and t[2] != 0)


def _builder(version: int, count: int, payload: int, scope: Scope,
             source: str) -> Callable[[Unpacked], TaskStats]:
    """How to turn an unpacked datagram into the record ``decode_stats`` builds."""
    plan = ts.plan_for(version, payload)
    tail = (*plan.padding, scope, source, payload, b"")
    c = _COMM + 5  # ac_comm's index in the unpacked tuple (version is in the header)
    if plan.fast and plan.has_comm and scope == "pid" and not plan.extra_from:
        head, new, comms = (version,), tuple.__new__, _COMMS

        def fast(t: Unpacked) -> TaskStats:
            vals = list(t)
            raw = vals[c]
            comm = comms.get(raw)
            if comm is None:
                comm = _comm(raw)
            vals[c] = comm
            vals[:6] = head
            vals.extend(tail)
            return new(TaskStats, vals)

        return fast

    def general(t: Unpacked) -> TaskStats:
        return ts.stats_of(plan, (version, *t[6:]), version, scope=scope, source=source,
                           size=payload, extra=b"")

    return general


# NLMSG_ERROR answering a GET, the request echoed whole (no NETLINK_CAP_ACK, no TLVs)
_ESRCH = struct.Struct("=IHHIIi28s")
ESRCH_SIZE = _ESRCH.size


def esrch(data: memoryview, family: int, scope: Scope, ids: dict[int, int]) -> int | None:
    """The id that the ``ESRCH_SIZE``-byte datagram at ``data`` says has no task:
    ESRCH in the kernel's plain form (flags 0) echoing byte for byte the GET we sent
    for it (``ids``: seq -> id); None for anything else (decode it strictly)."""
    length, mtype, flags, seq, _, error, echoed = _ESRCH.unpack_from(data)
    ident = ids.get(seq)
    if (length != ESRCH_SIZE or mtype != nl.NLMSG_ERROR or flags or error != -errno.ESRCH
            or ident is None):
        return None
    if echoed != ts.encode_get_fast(scope)(family, ident, seq):
        return None
    return ident


def _comm(raw: bytes) -> str:
    """``ac_comm`` as the codec decodes it, remembered (a bounded cache)."""
    if len(_COMMS) >= 4096:
        _COMMS.clear()
    comm = _COMMS[raw] = raw.partition(b"\0")[0].decode("utf-8", "replace")
    return comm


def learn(data: memoryview | bytes, n: int, family: int, *, scope: Scope,
          source: str, expected: TaskStats) -> Shape | None:
    """The shape of the ``n``-byte reply in ``data`` that the strict decoder decoded
    into ``expected``, or None if it has no shape worth learning (another layout, a
    version past the newest known, a record the shape would not rebuild exactly)."""
    version = expected.version
    if (version < MIN_VERSION or version > LATEST_VERSION or n < 38
            or expected.payload_len != n - 36 or expected.extra):
        return None
    shape = Shape(family, scope, version, n, source)
    t = shape.struct.unpack_from(data, 0)
    if not shape.match(t) or shape.record(t) != expected:
        return None
    return shape
