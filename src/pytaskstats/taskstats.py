"""The TASKSTATS generic netlink family, sans-IO: every message, both directions.

Requests (user -> kernel): GET by PID or TGID, REGISTER/DEREGISTER_CPUMASK,
CGROUPSTATS GET.  Replies and events (kernel -> user): CMD_NEW query replies and
exit events with AGGR_PID/AGGR_TGID nests, CGROUPSTATS NEW, errors and acks.
Encoders exist for both sides, so taskstatsd and the test kernel speak the same
codec.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from . import genetlink as genl
from . import netlink as nl
from .errors import LocalProtocolError, RemoteProtocolError
from .fields import FIELDS, LATEST_VERSION, MIN_VERSION, Scope, Timespec, layout
from .records import CgroupStats, ExitRecord, TaskStats

FAMILY_NAME = "TASKSTATS"
GENL_VERSION = 1
CMD_GET, CMD_NEW = 1, 2
CGROUPSTATS_CMD_GET, CGROUPSTATS_CMD_NEW = 4, 5
TYPE_PID, TYPE_TGID, TYPE_STATS, TYPE_AGGR_PID, TYPE_AGGR_TGID, TYPE_NULL = 1, 2, 3, 4, 5, 6
ATTR_PID, ATTR_TGID, ATTR_REGISTER_CPUMASK, ATTR_DEREGISTER_CPUMASK = 1, 2, 3, 4
# taskstatsd's extension inside an AGGR nest (kernel decoders skip it as unknown): a
# bitmap of the table positions a record carries, sent with records read from /proc
# so that their absent fields stay None instead of arriving as 0
TYPE_PRESENT = 100
CGROUPSTATS_TYPE_CGROUP_STATS = 1
CGROUPSTATS_ATTR_FD = 1
CGROUPSTATS = struct.Struct("=5Q")
_U16 = struct.Struct("=H")
_NFIELDS = len(TaskStats._fields)
_TGID_DROPPED = tuple(f.position for f in FIELDS if not f.tgid)


class StatsReply(NamedTuple):
    """A query reply: ``scope`` "pid" or "tgid", the id asked for, and the record."""

    seq: int
    scope: Scope
    id: int
    stats: TaskStats


class CgroupStatsReply(NamedTuple):
    """A CGROUPSTATS reply."""

    seq: int
    stats: CgroupStats


class Done(NamedTuple):
    """NLMSG_DONE."""

    seq: int


Event = StatsReply | ExitRecord | CgroupStatsReply | nl.ErrorReply | Done


# what a request asks, as the kernel dispatches it ("": none of its attributes)
RequestOp = Literal["register", "deregister", "pid", "tgid", "cgroup", ""]


class Request(NamedTuple):
    """A decoded request, as the kernel dispatches it (register > deregister > pid > tgid).

    ``op`` is one of "register", "deregister", "pid", "tgid", "cgroup" or "" when
    the message carries none of the attributes (the kernel answers EINVAL).
    """

    op: RequestOp
    value: int | str
    seq: int
    pid: int
    flags: int
    header: bytes
    warning: str = ""  # the kernel's extended-ACK warning (trailing bytes), if any


# ---------------------------------------------------------------- requests

def encode_get_pid(family: int, pid: int, *, seq: int, ack: bool = False) -> bytes:
    """TASKSTATS_CMD_GET for one task."""
    return _get(family, nl.encode_u32(ATTR_PID, pid), seq, ack)


def encode_get_tgid(family: int, tgid: int, *, seq: int, ack: bool = False) -> bytes:
    """TASKSTATS_CMD_GET for a thread group."""
    return _get(family, nl.encode_u32(ATTR_TGID, tgid), seq, ack)


def encode_register(family: int, cpumask: str, *, seq: int, ack: bool = True) -> bytes:
    """Register an exit listener for the CPUs in ``cpumask`` (a cpulist like "0-3,5")."""
    return _get(family, nl.encode_str(ATTR_REGISTER_CPUMASK, cpumask), seq, ack)


def encode_deregister(family: int, cpumask: str, *, seq: int, ack: bool = True) -> bytes:
    """Deregister the exit listener for ``cpumask``."""
    return _get(family, nl.encode_str(ATTR_DEREGISTER_CPUMASK, cpumask), seq, ack)


def encode_cgroup_get(family: int, fd: int, *, seq: int, ack: bool = True) -> bytes:
    """CGROUPSTATS_CMD_GET for an open cgroup directory fd (ack: a bad fd gets no reply)."""
    flags = nl.NLM_F_REQUEST | (nl.NLM_F_ACK if ack else 0)
    return genl.encode(family, CGROUPSTATS_CMD_GET, nl.encode_u32(CGROUPSTATS_ATTR_FD, fd),
                       seq=seq, flags=flags, version=GENL_VERSION)


GET_U32 = struct.Struct("=IHHIIBBHHHI")  # nlmsghdr, genlmsghdr, one u32 attribute


def encode_get_fast(scope: Scope) -> Callable[[int, int, int], bytes]:
    """An encoder ``(family, id, seq) -> bytes`` of GET requests for the bulk query.

    Byte-identical to :func:`encode_get_pid`/:func:`encode_get_tgid`, in one pack.
    """
    attr = ATTR_PID if scope == "pid" else ATTR_TGID
    pack = GET_U32.pack

    def encode(family: int, ident: int, seq: int) -> bytes:
        try:
            return pack(28, family, nl.NLM_F_REQUEST, seq & 0xFFFFFFFF, 0, CMD_GET,
                        GENL_VERSION, 0, 8, attr, ident)
        except struct.error as err:
            raise LocalProtocolError(f"id {ident} does not fit in a u32") from err

    return encode


def encode_gets(family: int, scope: Scope, ids: Sequence[int], first: int) -> bytes:
    """GET requests for ``ids``, sequence numbers from ``first`` on, end to end:
    byte-identical to :func:`encode_get_pid`/:func:`encode_get_tgid` of each, built
    in bulk (an array of u32 words whose seq and id columns are filled by slice)."""
    words = array("I", GET_U32.pack(28, family, nl.NLM_F_REQUEST, 0, 0, CMD_GET, GENL_VERSION,
                                    0, 8, ATTR_PID if scope == "pid" else ATTR_TGID, 0))
    words *= len(ids)
    try:
        words[2::7] = array("I", range(first, first + len(ids)))
        words[6::7] = array("I", ids)
    except (OverflowError, TypeError) as err:
        bad = next((i for i in ids if type(i) is not int or not 0 <= i < 2**32), first)
        raise LocalProtocolError(f"id {bad} does not fit in a u32") from err
    return words.tobytes()


def _get(family: int, attr: bytes, seq: int, ack: bool) -> bytes:
    flags = nl.NLM_F_REQUEST | (nl.NLM_F_ACK if ack else 0)
    return genl.encode(family, CMD_GET, attr, seq=seq, flags=flags, version=GENL_VERSION)


# the families' attribute policies (kernel/taskstats.c), checked before any handler
GET_POLICY = {ATTR_PID: nl.attr_policy("u32"), ATTR_TGID: nl.attr_policy("u32"),
              ATTR_REGISTER_CPUMASK: nl.attr_policy("string"),
              ATTR_DEREGISTER_CPUMASK: nl.attr_policy("string")}
CGROUPSTATS_POLICY = {CGROUPSTATS_ATTR_FD: nl.attr_policy("u32")}
_GET_ORDER: tuple[tuple[int, RequestOp], ...] = (
    (ATTR_REGISTER_CPUMASK, "register"), (ATTR_DEREGISTER_CPUMASK, "deregister"),
    (ATTR_PID, "pid"), (ATTR_TGID, "tgid"))


def decode_request(msg: nl.Message) -> Request:
    """Decode a request as the kernel would: liberal attribute parsing (unknown types
    ignored, the last of a type wins, trailing junk only warned about in
    ``Request.warning``), the family's policy (:class:`~pytaskstats.netlink.PolicyError`),
    then the handler's choice of attribute."""
    cmd, _ = genl.genl_header(msg)
    header = bytes(msg.data[msg.start - nl.HEADER.size: msg.start])
    start = msg.start + genl.GENL_HEADER.size
    if cmd == CGROUPSTATS_CMD_GET:
        found, warning = nl.parse_attrs(msg, start, CGROUPSTATS_POLICY)
        if CGROUPSTATS_ATTR_FD in found:
            fd = nl.get_u32(msg.data, *found[CGROUPSTATS_ATTR_FD], "CGROUPSTATS_CMD_ATTR_FD")
            return Request("cgroup", fd, msg.seq, msg.pid, msg.flags, header, warning)
    elif cmd == CMD_GET:
        found, warning = nl.parse_attrs(msg, start, GET_POLICY)
        for atype, op in _GET_ORDER:
            if atype in found:
                a, b = found[atype]
                value: int | str = (nl.get_u32(msg.data, a, b, f"request attribute {atype}")
                                    if atype in (ATTR_PID, ATTR_TGID)
                                    else nl.get_str(msg.data, a, b))
                return Request(op, value, msg.seq, msg.pid, msg.flags, header, warning)
    else:
        raise RemoteProtocolError(f"unknown taskstats command {cmd}")
    return Request("", 0, msg.seq, msg.pid, msg.flags, header, warning)


# ---------------------------------------------------------------- struct taskstats

class _Plan(NamedTuple):
    """How to decode one (version, payload size): built once, then looked up."""

    struct: struct.Struct
    targets: tuple[int, ...]  # table position per unpacked value (-1: timespec's 2nd half)
    fast: bool  # unpacked values are already in table order
    padding: tuple[None, ...]  # Nones for the fields past the payload
    has_comm: bool
    extra_from: int  # payload offset of bytes past the newest layout (0: none)


_PLANS: dict[tuple[int, int], _Plan] = {}
_COMM = next(f.position for f in FIELDS if f.name == "ac_comm")


def _make_plan(version: int, size: int) -> _Plan:
    lay = layout(version)
    count = lay.fitting(size)
    targets: list[int] = []
    for f in lay.fields[:count]:
        targets += [f.position, -1] if f.ctype == "timespec" else [f.position]
    fast = targets == list(range(len(targets)))
    extra_from = lay.size if version > LATEST_VERSION and size > lay.size else 0
    has_comm = any(f.position == _COMM for f in lay.fields[:count])
    plan = _Plan(lay.struct_for(count), tuple(targets), fast,
                 (None,) * (_NFIELDS - 4 - len(targets)), has_comm, extra_from)
    if len(_PLANS) < 4096:  # sizes come from the peer: bound the cache
        _PLANS[version, size] = plan
    return plan


def decode_stats(data: bytes | memoryview, start: int, end: int, *, scope: Scope = "pid",
                 source: str = "kernel", version_hint: int | None = None) -> TaskStats:
    """Decode a STATS attribute payload ``data[start:end]``.

    The layout is chosen by the ``version`` field and bounded by the payload: fields
    that do not fit are None; bytes past the newest known layout are kept in
    ``extra``.  ``version_hint`` stands in for a version of 0 (TGID exit records of
    older kernels).  TGID records get None for the fields they do not carry.
    """
    size = end - start
    if size < 2:
        raise RemoteProtocolError(f"STATS payload of {size} bytes has no version")
    version = _U16.unpack_from(data, start)[0]
    if version == 0 and version_hint:
        version = version_hint
    if version < MIN_VERSION:
        raise RemoteProtocolError(f"unsupported struct taskstats version {version}")
    plan = plan_for(version, size)
    flat = plan.struct.unpack_from(data, start)
    extra = bytes(data[start + plan.extra_from:end]) if plan.extra_from else b""
    return stats_of(plan, flat, version, scope=scope, source=source, size=size, extra=extra)


def plan_for(version: int, size: int) -> _Plan:
    """How to decode a struct of ``version`` in a payload of ``size`` bytes."""
    return _PLANS.get((version, size)) or _make_plan(version, size)


def stats_of(plan: _Plan, flat: tuple[Any, ...], version: int, *, scope: Scope,
             source: str, size: int, extra: bytes) -> TaskStats:
    """The record of ``flat``, the struct values ``plan`` unpacked (see
    :func:`decode_stats`)."""
    vals: list[Any] = [*flat, *plan.padding] if plan.fast else _scatter(flat, plan.targets)
    if plan.has_comm:
        vals[_COMM] = vals[_COMM].partition(b"\0")[0].decode("utf-8", "replace")
    vals[0] = version
    if scope == "tgid":
        for i in _TGID_DROPPED:
            vals[i] = None
    vals += [scope, source, size, extra]
    return tuple.__new__(TaskStats, vals)


def _scatter(flat: tuple[object, ...], targets: tuple[int, ...]) -> list[object]:
    vals: list[object] = [None] * (_NFIELDS - 4)
    for i, target in enumerate(targets):
        if target >= 0:
            vals[target] = flat[i]
        else:
            ts = Timespec(flat[i - 1], flat[i])  # type: ignore[arg-type]
            vals[targets[i - 1]] = ts if ts != (0, 0) else None
    return vals


def encode_stats(stats: TaskStats, version: int | None = None) -> bytes:
    """The struct bytes of ``stats`` in its (or the given) version's layout.

    None fields are written as 0; ``extra`` is appended for versions past the newest.
    """
    version = stats.version if version is None else version
    if version < MIN_VERSION:
        raise LocalProtocolError(f"cannot encode struct taskstats version {version}")
    lay = layout(version)
    flat: list[object] = []
    for f in lay.fields:
        value = version if f.name == "version" else stats[f.position]
        if isinstance(value, Timespec):
            flat += [value.tv_sec, value.tv_nsec]
        elif f.ctype == "timespec":
            flat += [0, 0]
        elif isinstance(value, str):
            flat.append(value.encode()[:31])
        else:
            flat.append(value or (b"" if f.ctype == "comm" else 0))
    try:
        body = lay.struct_for(len(lay.fields)).pack(*flat)
    except struct.error as err:
        raise LocalProtocolError(f"a field does not fit its C type: {err}") from err
    return body.ljust(lay.size, b"\0") + (stats.extra if version > LATEST_VERSION else b"")


# ---------------------------------------------------------------- replies and events

def _aggr(kind: int, id_type: int, ident: int, stats: TaskStats) -> bytes:
    body = nl.encode_u32(id_type, ident) + nl.encode_attr(TYPE_STATS, encode_stats(stats))
    if stats.source == "procfs":
        bits = sum(1 << f.position for f in FIELDS if stats[f.position] is not None)
        body += nl.encode_attr(TYPE_PRESENT, bits.to_bytes((len(FIELDS) + 7) // 8, "little"))
    return nl.encode_attr(kind, body)


def _present(stats: TaskStats, bits: int) -> TaskStats:
    """A record with the fields the bitmap marks absent set to None, from /proc."""
    vals = [v if bits >> i & 1 or i >= len(FIELDS) else None for i, v in enumerate(stats)]
    vals[0] = stats.version
    record = tuple.__new__(TaskStats, vals)
    return record._replace(source="procfs")


def encode_stats_reply(family: int, reply: StatsReply, *, pid: int) -> bytes:
    """A CMD_NEW query reply as the kernel sends it to port ``pid``."""
    pid_scope = reply.scope == "pid"
    attr = _aggr(TYPE_AGGR_PID if pid_scope else TYPE_AGGR_TGID,
                 TYPE_PID if pid_scope else TYPE_TGID, reply.id, reply.stats)
    return genl.encode(family, CMD_NEW, attr, seq=reply.seq, flags=0, pid=pid)


def encode_exit(family: int, record: ExitRecord) -> bytes:
    """A CMD_NEW exit event (port 0): AGGR_PID, plus AGGR_TGID when the group ended."""
    attrs = _aggr(TYPE_AGGR_PID, TYPE_PID, record.pid, record.task)
    if record.group is not None:
        attrs += _aggr(TYPE_AGGR_TGID, TYPE_TGID, record.tgid or 0, record.group)
    return genl.encode(family, CMD_NEW, attrs, seq=record.seq, flags=0, pid=0)


def encode_cgroupstats_reply(family: int, reply: CgroupStatsReply, *, pid: int) -> bytes:
    """A CGROUPSTATS_CMD_NEW reply."""
    attr = nl.encode_attr(CGROUPSTATS_TYPE_CGROUP_STATS, CGROUPSTATS.pack(*reply.stats[:5]))
    return genl.encode(family, CGROUPSTATS_CMD_NEW, attr, seq=reply.seq, flags=0, pid=pid)


def _decode_aggr(data: bytes | memoryview, start: int, end: int, scope: Scope, *, source: str,
                 hint: int | None) -> tuple[int, TaskStats]:
    ident, stats, present = None, None, None
    for atype, a, b in nl.iter_attrs(data, start, end):
        if atype == TYPE_STATS:
            stats = decode_stats(data, a, b, scope=scope, source=source, version_hint=hint)
        elif atype in (TYPE_PID, TYPE_TGID):
            ident = nl.get_u32(data, a, b, "TASKSTATS_TYPE_PID/TGID")
        elif atype == TYPE_PRESENT:
            present = int.from_bytes(bytes(data[a:b]), "little")
    if ident is None or stats is None:
        raise RemoteProtocolError(f"AGGR_{scope.upper()} nest lacks its id or STATS")
    return ident, (stats if present is None else _present(stats, present))


def decode_taskstats_msg(msg: nl.Message, *, source: str = "kernel",
                         cpu: int | None = None) -> StatsReply | ExitRecord:
    """Decode a TASKSTATS_CMD_NEW message: a query reply, or an exit event (port 0)."""
    cmd, _ = genl.genl_header(msg)
    if cmd != CMD_NEW:
        raise RemoteProtocolError(f"taskstats message with command {cmd}, expected CMD_NEW")
    return _decode_new(msg, source, cpu)


def _decode_new(msg: nl.Message, source: str, cpu: int | None) -> StatsReply | ExitRecord:
    data = msg.data
    task = group = None
    for atype, a, b in nl.iter_attrs(data, msg.start + genl.GENL_HEADER.size, msg.end):
        if atype == TYPE_AGGR_PID:
            task = _decode_aggr(data, a, b, "pid", source=source, hint=None)
        elif atype == TYPE_AGGR_TGID:
            hint = task[1].version if task else None
            group = _decode_aggr(data, a, b, "tgid", source=source, hint=hint)
    if task is None:
        if group is None:
            raise RemoteProtocolError("taskstats message without AGGR_PID or AGGR_TGID")
        return StatsReply(msg.seq, "tgid", group[0], group[1])
    if msg.pid != 0:
        return StatsReply(msg.seq, "pid", task[0], task[1])
    return ExitRecord(task=task[1], group=group[1] if group else None, pid=task[0],
                      tgid=group[0] if group else task[1].ac_tgid, cpu=cpu, seq=msg.seq)


def decode_cgroupstats_msg(msg: nl.Message, *, source: str = "kernel") -> CgroupStatsReply:
    """Decode a CGROUPSTATS_CMD_NEW reply."""
    for atype, a, b in nl.iter_attrs(msg.data, msg.start + genl.GENL_HEADER.size, msg.end):
        if atype == CGROUPSTATS_TYPE_CGROUP_STATS:
            if b - a < CGROUPSTATS.size:
                raise RemoteProtocolError(f"cgroupstats payload of {b - a} bytes, expected 40")
            sleeping, running, stopped, unint, io_wait = CGROUPSTATS.unpack_from(msg.data, a)
            return CgroupStatsReply(msg.seq, CgroupStats(sleeping, running, stopped, unint,
                                                         io_wait, source))
    raise RemoteProtocolError("CGROUPSTATS reply without CGROUPSTATS_TYPE_CGROUP_STATS")


# nlmsghdr, genlmsghdr, AGGR nest header, PID/TGID attribute, STATS header: the shape
# of nearly every datagram (one reply, or the exit of a single-threaded task)
_SINGLE = struct.Struct("=IHHIIBBHHHHHIHH")


def _single_shape(data: bytes | memoryview, n: int,
                  family: int) -> tuple[int, int, int, int] | None:
    """(seq, port id, nest type, id) of a one-message, one-nest datagram of ``n``
    bytes, every length and type checked; None for any other shape.  The STATS
    payload is ``data[36:n]``."""
    (length, mtype, _, seq, pid, cmd, _, _, nest_len, nest_type, id_len, id_type, ident,
     stats_len, stats_type) = _SINGLE.unpack_from(data, 0)
    if not (length == n and mtype == family and cmd == CMD_NEW and nest_len == n - 20
            and id_len == 8 and stats_len == n - 32 and stats_type == TYPE_STATS
            and nest_type - TYPE_AGGR_PID == id_type - TYPE_PID
            and nest_type in (TYPE_AGGR_PID, TYPE_AGGR_TGID)):
        return None
    return seq, pid, nest_type, ident


def single_exit(data: bytes) -> tuple[int, int] | None:
    """(pid, STATS payload offset) of an exit message holding only its AGGR_PID
    nest (the exit of a task whose thread group lives on, the usual case); the
    payload runs to the end.  None for every other shape: decode those.  The
    family is taken from the message itself (as :func:`decode` of stored bytes)."""
    n = len(data)
    if n < _SINGLE.size + 4:
        return None
    shape = _single_shape(data, n, _U16.unpack_from(data, 4)[0])
    if shape is None or shape[1] != 0 or shape[2] != TYPE_AGGR_PID:
        return None
    return shape[3], _SINGLE.size


def _decode_single(data: bytes | memoryview, n: int, family: int, source: str,
                   cpu: int | None) -> StatsReply | ExitRecord | None:
    """The one-message, one-nest datagram; None when it has any other shape (the
    general walk then decodes it)."""
    shape = _single_shape(data, n, family)
    if shape is None:
        return None
    seq, pid, nest_type, ident = shape
    scope: Scope = "pid" if nest_type == TYPE_AGGR_PID else "tgid"
    stats = decode_stats(data, 36, n, scope=scope, source=source)
    if pid or scope == "tgid":
        return StatsReply(seq, scope, ident, stats)
    return ExitRecord(task=stats, pid=ident, tgid=stats.ac_tgid, cpu=cpu, seq=seq)


def decode(data: bytes | memoryview, family: int, size: int | None = None, *,
           source: str = "kernel", cpu: int | None = None) -> list[Event]:
    """Decode one datagram from the kernel (or taskstatsd) into events.

    Raises RemoteProtocolError for malformed bytes and for message types that do
    not belong to the family.
    """
    n = len(data) if size is None else size
    if n >= _SINGLE.size + 4 and n <= len(data):
        single = _decode_single(data, n, family, source, cpu)
        if single is not None:
            return [single]
    events: list[Event] = []
    for msg in nl.split_messages(data, size):
        if msg.type == family:
            cmd, _ = genl.genl_header(msg)
            if cmd == CMD_NEW:
                events.append(_decode_new(msg, source, cpu))
            elif cmd == CGROUPSTATS_CMD_NEW:
                events.append(decode_cgroupstats_msg(msg, source=source))
            else:
                raise RemoteProtocolError(f"unexpected taskstats command {cmd}")
        elif msg.type == nl.NLMSG_ERROR:
            events.append(nl.decode_error(msg))
        elif msg.type == nl.NLMSG_DONE:
            events.append(Done(msg.seq))
        elif msg.type != nl.NLMSG_NOOP:
            raise RemoteProtocolError(f"unexpected netlink message type {msg.type}")
    return events
