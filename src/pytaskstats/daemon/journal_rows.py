"""Row building for the exit journal (pure): an exit as received -> an INSERT and
its parameters.

Units: ``time_ns`` is CLOCK_REALTIME ns of receipt; kernel fields keep the kernel's
units; timespec fields become ns since the epoch.  Nothing here touches a database.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

from .. import taskstats
from ..errors import ProtocolError
from ..fields import FIELDS, LATEST_VERSION, MIN_VERSION, Field, Layout, Timespec, layout
from ..netlink import HEADER
from ..records import AGROUP, ExitRecord
from .journal_queries import CONTEXT, EXIT_TAGS
from .journal_raw import MAX_VERSION, REBUILD, diff, rebuild
from .journal_schema import BY_VERSION, INSERT_SQL, STAMPED

__all__ = ["NO_TAGS", "Item", "JournalEntry", "Row", "Tags", "decode_raw", "fit", "row",
           "rows"]

_I64 = 1 << 63
_U64 = 1 << 64


class Tags(NamedTuple):
    """What the access policy knows of an exit (the EXIT_TAGS): whether its owner
    may see it (None: unknown), its PID namespace chain ("" the initial one, None
    unknown), its pids there ("pids/tgids/ppids" at levels 1..K) and whether the
    sampler took its thread's last delta (its totals are in the samples)."""

    owner_sees: bool | None = None
    pidns: str | None = None
    ns_ids: str | None = None
    sampled: bool = False


NO_TAGS = Tags()
Item = tuple[int, int | None, str | None, bytes, Tags]  # time_ns, cpu, cgroup, raw, tags
Row = tuple[str, Sequence[Any]]  # an INSERT statement and its parameters


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One exit as received: the record, CLOCK_REALTIME ns of receipt, the cgroup path
    (None if unknown), the exit message bytes exactly as the kernel sent them and
    the access policy's :class:`Tags`.

    ``raw`` is one netlink message; where the transport could not give it alone,
    ``taskstats.encode_exit(family, record)`` is the canonical substitute.
    """

    record: ExitRecord
    time_ns: int
    cgroup: str | None
    raw: bytes
    tags: Tags = NO_TAGS

    def __post_init__(self) -> None:
        if not isinstance(self.record, ExitRecord) or not isinstance(self.raw, bytes):
            raise TypeError("JournalEntry needs an ExitRecord and the raw message bytes")

    @property
    def item(self) -> Item:
        """What the store inserts: (time_ns, cpu, cgroup, raw, tags)."""
        return self.time_ns, self.record.cpu, self.cgroup, self.raw, self.tags


def decode_raw(raw: bytes) -> ExitRecord:
    """Decode a journaled ``raw`` message again (the family id is its nlmsg_type)."""
    family = HEADER.unpack_from(raw)[1]
    for event in taskstats.decode(raw, family):
        if isinstance(event, ExitRecord):
            return event
    raise ValueError("the raw bytes hold no exit record")


# Binding None costs ~200 ns per parameter in CPython's sqlite3 (an adapter
# lookup), eight times an int, so rows bind NaN instead: SQLite stores a NaN
# double as NULL.  Fields are bound newest-version last, so the fields a record's
# version lacks are a tail of NaNs chosen by version, with no per-field test.

_NAN = float("nan")


def _getter(fields: Sequence[Field]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A tuple of the record values at the fields' positions (itemgetter, always a tuple)."""
    if len(fields) == 1:
        position = fields[0].position
        return lambda values: (values[position],)
    return itemgetter(*(f.position for f in fields)) if fields else lambda values: ()


class _Plan(NamedTuple):
    """The plain fields of one struct version: present ones, then a tail it lacks."""

    present: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    absent: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    nones: tuple[None, ...]
    nans: tuple[float, ...]


def _plan(version: int) -> _Plan:
    split = sum(1 for f in BY_VERSION if f.version <= version)
    tail = len(BY_VERSION) - split
    return _Plan(_getter(BY_VERSION[:split]), _getter(BY_VERSION[split:]), (None,) * tail,
                 (_NAN,) * tail)


_PLANS = {version: _plan(version) for version in range(LATEST_VERSION + 1)}
_stamp_values = _getter(STAMPED)
_NO_STAMPS, _NAN_STAMPS = (None,) * len(STAMPED), (_NAN,) * len(STAMPED)


def _decoded_row(item: Item, rec: ExitRecord) -> Row:
    """INSERT_SQL's parameters for ``item`` whose raw bytes decoded to ``rec``, with
    the difference between them and what the columns rebuild."""
    time_ns, cpu, cgroup, raw, tags = item
    task = rec.task
    plan = _PLANS[min(task.version, LATEST_VERSION)]
    absent = plan.absent(task)
    stamps = _stamp_values(task)
    _, family, _, seq, _ = HEADER.unpack_from(raw)
    columns = {f.name: fit(v.to_ns() if isinstance(v, Timespec) else v)
               for f in FIELDS for v in (task[f.position],)}  # as they will read back
    extra = diff(raw, rebuild(family, seq, rec.pid, columns))
    return INSERT_SQL, (
        time_ns, _NAN if cpu is None else cpu, rec.pid, _NAN if rec.tgid is None else rec.tgid,
        _NAN if (ended := rec.ended_process) is None else ended,
        _NAN if cgroup is None else cgroup, family, seq, _NAN if extra is None else extra,
        *_tag_values(tags), *plan.present(task),
        *(plan.nans if absent == plan.nones else absent),
        *(_NAN_STAMPS if stamps == _NO_STAMPS else
          [_NAN if ts is None else ts.to_ns() for ts in stamps]))


# The usual exit message (one AGGR_PID nest) skips decoding: its struct is unpacked
# straight into an INSERT whose columns follow the struct's own order; timespecs
# are summed to ns by SQLite.  It is taken only when its columns rebuild it byte for
# byte (journal_raw.rebuild), which a few checks here prove: the header's flags
# and genetlink version, the layout's full size, zero padding, a comm that encodes
# back, timespecs SQLite sums exactly.  Every other message is decoded
# (_decoded_row), which stores its difference.


class _RawPlan(NamedTuple):
    """The INSERT of one (version, payload size) in struct order, and where the
    values needing Python live in the unpacked tuple (-1: not in this layout)."""

    sql: str
    struct: struct.Struct
    comm: int
    flag: int  # ac_flag, for ended_process (v12+ only)
    tgid: int
    rebuilds: bool  # a full layout of a version the rebuild knows
    holes: struct.Struct  # the padding bytes of the struct in a single exit, as bytes
    zeros: tuple[bytes, ...]  # what ``holes`` unpacks when the padding is zero
    secs: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None  # timespecs' tv_sec (if any)
    nsecs: Callable[[tuple[Any, ...]], tuple[Any, ...]]  # and tv_nsec


_RAW_PLANS: dict[tuple[int, int], _RawPlan | None] = {}
_U16 = struct.Struct("=H")  # the struct's version


def _raw_plan(version: int, size: int) -> _RawPlan | None:
    if not MIN_VERSION <= version <= LATEST_VERSION:
        return None
    lay = layout(version)
    fields = lay.fields[:lay.fitting(size)]
    names = [f.name for f in fields]
    marks = ["NULLIF(? * 1000000000 + ?, 0)" if f.ctype == "timespec" else "?" for f in fields]
    flat = [n for f in fields for n in ((f.name, "") if f.ctype == "timespec" else (f.name,))]

    def at(name: str) -> int:
        return flat.index(name) if name in flat else -1

    heads = ["?"] * (len(CONTEXT) + len(REBUILD) + len(EXIT_TAGS))
    sql = (f"INSERT INTO exits ({', '.join((*CONTEXT, *REBUILD, *EXIT_TAGS, *names))}) "
           f"VALUES ({', '.join(heads + marks)})")
    stamps = [flat.index(f.name) for f in fields if f.ctype == "timespec"]
    plan = _RawPlan(sql, lay.struct_for(len(fields)), at("ac_comm"),
                    at("ac_flag") if version >= 12 else -1, at("ac_tgid"),
                    version <= MAX_VERSION and size == lay.size, *_holes(lay, _SINGLE_START),
                    _getter_at(stamps) if stamps else None,
                    _getter_at([i + 1 for i in stamps]))
    if len(_RAW_PLANS) < 1024:  # sizes are few; bound the cache all the same
        _RAW_PLANS[version, size] = plan
    return plan


def _getter_at(indices: Sequence[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A tuple of the values at ``indices`` (empty for none)."""
    if not indices:
        return lambda values: ()
    return lambda values: tuple(values[i] for i in indices)


def _holes(lay: Layout, start: int) -> tuple[struct.Struct, tuple[bytes, ...]]:
    """A struct unpacking the padding of ``lay``'s struct at ``start`` of a message
    (between fields and after the last), and what it gives when that is zero."""
    ends = [lay.end_of(i) for i in range(1, len(lay.fields) + 1)]
    spans = [(end, nxt) for end, nxt in zip(ends, [*lay.offsets[1:], lay.size], strict=True)
             if nxt > end]
    code, pos = [f"={start}x"], 0
    for a, b in spans:
        code.append(f"{a - pos}x{b - a}s")
        pos = b
    return struct.Struct("".join(code)), tuple(bytes(b - a) for a, b in spans)


def _rebuilds(plan: _RawPlan, raw: bytes, values: tuple[Any, ...]) -> tuple[int, int] | None:
    """(family, seq) if the columns of this single exit rebuild ``raw`` (see above)."""
    family, flags, seq, genl_version, reserved = _HEAD.unpack_from(raw)
    if (not plan.rebuilds or flags or reserved or genl_version != taskstats.GENL_VERSION
            or plan.holes.unpack_from(raw) != plan.zeros):
        return None
    if plan.secs is not None:
        nsecs, secs = plan.nsecs(values), plan.secs(values)
        if (min(nsecs) < 0 or max(nsecs) >= _NS or min(secs) < -_MAX_SEC
                or max(secs) > _MAX_SEC):
            return None
    return family, seq


def _comm_of(data: bytes) -> tuple[str, bool]:
    """The text of an ac_comm's 32 bytes, and whether the rebuild gives them back
    (cached: comms are few)."""
    known = _COMMS.get(data)
    if known is None:
        text = data.partition(b"\0")[0].decode("utf-8", "replace")
        known = (text, data == text.encode()[:32].ljust(32, b"\0"))
        if len(_COMMS) < 4096:
            _COMMS[data] = known
    return known


_COMMS: dict[bytes, tuple[str, bool]] = {}
_SINGLE_START = 36  # the STATS payload of a single exit (taskstats.single_exit)
# nlmsghdr type (family), flags, seq; genlmsghdr version, reserved
_HEAD = struct.Struct("=4xHHI5xBH")
_NS = 1_000_000_000
_MAX_SEC = (_I64 - _NS) // _NS  # a timespec SQLite sums to ns within int64


def _tag_values(tags: Tags) -> tuple[Any, ...]:
    """The EXIT_TAGS' values (NaN binds NULL; sampled: 1 or NULL)."""
    if tags is NO_TAGS:
        return _NAN_TAGS
    sees, pidns, ids, sampled = tags
    return (_NAN if sees is None else int(sees), _NAN if pidns is None else pidns,
            _NAN if ids is None else ids, 1 if sampled else _NAN)


_NAN_TAGS = (_NAN,) * len(EXIT_TAGS)
_VALUES_AT = len(CONTEXT) + len(REBUILD) + len(EXIT_TAGS)  # the struct's first value


def row(item: Item) -> Row:
    """The INSERT of ``item`` (NaN binds NULL).  Raises ProtocolError or ValueError
    when its raw bytes hold no exit record."""
    time_ns, cpu, cgroup, raw, tags = item
    single = taskstats.single_exit(raw)
    if single is not None:
        pid, start = single
        version = _U16.unpack_from(raw, start)[0]
        key = (version, len(raw) - start)
        plan = _RAW_PLANS[key] if key in _RAW_PLANS else _raw_plan(*key)
        if plan is not None and start == _SINGLE_START:
            values = plan.struct.unpack_from(raw, start)
            comm, exact = _comm_of(values[plan.comm]) if plan.comm >= 0 else (None, True)
            head = _rebuilds(plan, raw, values) if exact else None
            if head is not None:
                family, seq = head
                out = [time_ns, _NAN if cpu is None else cpu, pid,
                       _NAN if plan.tgid < 0 else values[plan.tgid],
                       _NAN if plan.flag < 0 else 1 if values[plan.flag] & AGROUP else 0,
                       _NAN if cgroup is None else cgroup, family, seq, _NAN,
                       *_tag_values(tags), *values]
                if comm is not None:
                    out[_VALUES_AT + plan.comm] = comm
                return plan.sql, out
    return _decoded_row(item, decode_raw(raw))


def rows(items: Sequence[Item]) -> tuple[list[Row], list[Exception]]:
    """The rows of ``items`` and the errors of those whose bytes hold no exit record
    (never one from taskstatsd, which decoded them), in order."""
    try:
        return [row(item) for item in items], []
    except (ProtocolError, ValueError):
        pass
    out: list[Row] = []
    errors: list[Exception] = []
    for item in items:
        try:
            out.append(row(item))
        except (ProtocolError, ValueError) as err:
            errors.append(err)
    return out, errors


def fit(value: Any) -> Any:
    """A u64 past int64 as its two's complement (read back by ``journal_samples.exit_dict``); NULL
    for other integers SQLite cannot hold (``raw`` keeps them); text that is not
    UTF-8 (a path's undecodable bytes) with "?" in their place."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if not isinstance(value, int) or -_I64 <= value < _I64:
        return value
    return value - _U64 if _I64 <= value < _U64 else None
