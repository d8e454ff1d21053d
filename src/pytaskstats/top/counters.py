"""What ``taskstats top`` counts and derives: the kernel counters a row sums
(:data:`COUNTED`, in kernel units) and the columns computed from their deltas
(:data:`METRICS`, percentages and rates per second).

Counters are plain tuples in COUNTED order, so a delta or a sum is one ``map``;
this module holds their arithmetic (a counter reset by overflow reads 0, never
negative), the plausibility rule applied to one task's delta (:func:`plausible`)
and the derivation of a row's values (:func:`derive`, :func:`measured_metrics`).
Pure functions, no state.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from ..plausible import limit_ns
from ..records import TaskStats
from ..summary import MEMORY_KINDS

# the kernel counters (pid records, kernel names and units) that rows sum and rate
COUNTED: tuple[str, ...] = (
    "cpu_run_virtual_total", "cpu_delay_total", "blkio_delay_total",
    *(f"{k}_delay_total" for k in MEMORY_KINDS), "irq_delay_total",
    "read_bytes", "write_bytes", "nvcsw", "nivcsw")
INDEX = {name: i for i, name in enumerate(COUNTED)}  # COUNTED name -> position
Counters = tuple[int, ...]
get_counted = operator.attrgetter(*COUNTED)  # a record's COUNTED values, None if absent
PCT_PER_NS = 1e-7  # ns of waiting per s of interval -> percent: 100 / 1e9


class Metric(NamedTuple):
    """A derived column: ``sum(deltas of fields) * scale / seconds``.

    ``delay``: a non-CPU delay, not measured (None) while delay accounting is off.
    """

    name: str  # JSON name
    label: str  # column header
    fields: tuple[str, ...]
    scale: float
    delay: bool


METRICS: tuple[Metric, ...] = (
    Metric("cpu_pct", "CPU%", ("cpu_run_virtual_total",), PCT_PER_NS, False),
    Metric("cpu_wait_pct", "CPUW%", ("cpu_delay_total",), PCT_PER_NS, False),
    Metric("io_wait_pct", "IOW%", ("blkio_delay_total",), PCT_PER_NS, True),
    Metric("mem_wait_pct", "MEMW%", tuple(f"{k}_delay_total" for k in MEMORY_KINDS),
           PCT_PER_NS, True),
    Metric("irq_pct", "IRQ%", ("irq_delay_total",), PCT_PER_NS, True),
    Metric("read_bytes_per_s", "RD/s", ("read_bytes",), 1.0, False),
    Metric("write_bytes_per_s", "WR/s", ("write_bytes",), 1.0, False),
    Metric("ctxsw_per_s", "CSW/s", ("nvcsw", "nivcsw"), 1.0, False),
)
METRIC_POSITION = {m.name: i for i, m in enumerate(METRICS)}
_METRIC_INDEXES = tuple(tuple(INDEX[f] for f in m.fields) for m in METRICS)


def counters(stats: TaskStats) -> Counters:
    """The COUNTED fields of a record, absent ones as 0 (see ``Frame.absent``)."""
    values: Counters = get_counted(stats)
    return values if None not in values else tuple(v or 0 for v in values)


def sub(a: Counters, b: Counters) -> Counters:
    """``a - b``, a field that went down (a total reset to 0 by overflow) as 0."""
    delta = tuple(map(operator.sub, a, b))
    if min(delta) >= 0:
        return delta
    return tuple(d if d > 0 else 0 for d in delta)


def summed(rows: Sequence[Counters]) -> Counters:
    """The field-wise sum of one or more counters."""
    return rows[0] if len(rows) == 1 else tuple(map(sum, zip(*rows, strict=True)))


def add(a: Counters | None, b: Counters | None) -> Counters | None:
    """``a + b``, where None is nothing (None only when both are)."""
    if a is None:
        return b
    return a if b is None else tuple(map(operator.add, a, b))


_NS_FIELDS = tuple(i for i, name in enumerate(COUNTED) if name.endswith("_total"))
_get_ns = operator.itemgetter(*_NS_FIELDS)


def plausible(delta: Counters, span_ns: int) -> tuple[Counters, int]:
    """``delta`` of one task with every ns value longer than the task lived during
    ``span_ns`` (the rule of :mod:`pytaskstats.plausible`) set to 0, and how many were.

    One task cannot run or wait longer than the time elapsed.  The kernel does
    report more when delay accounting is switched off and on again during a wait:
    the wait is then charged from a stale start time (from boot if none).
    """
    limit = limit_ns(span_ns, exact=True)  # span_ns has the sampling tolerance
    if max(_get_ns(delta)) <= limit:
        return delta, 0
    bad = [i for i in _NS_FIELDS if delta[i] > limit]
    return tuple(0 if i in bad else v for i, v in enumerate(delta)), len(bad)


def derive(delta: Counters | None, seconds: float, measured: tuple[bool, ...]
           ) -> tuple[float | None, ...]:
    """METRICS values of ``delta`` over ``seconds``; None where not ``measured``."""
    if delta is None or seconds <= 0:
        return (None,) * len(METRICS)
    return tuple(
        sum(delta[i] for i in idx) * m.scale / seconds if ok else None
        for m, idx, ok in zip(METRICS, _METRIC_INDEXES, measured, strict=True))


def measured_metrics(delayacct: bool | None, absent: Iterable[str]) -> tuple[bool, ...]:
    """Which METRICS mean something: not a delay while delay accounting is off, and
    none of whose fields the records lack (older struct versions)."""
    gone = set(absent)
    return tuple(not (m.delay and delayacct is False) and not gone.intersection(m.fields)
                 for m in METRICS)


def absent_fields(tasks: Iterable[TaskStats]) -> frozenset[str]:
    """The COUNTED fields the records lack, judged by the first of ``tasks`` (one
    bulk query has one struct version)."""
    for stats in tasks:
        return frozenset(n for n, v in zip(COUNTED, get_counted(stats), strict=True)
                         if v is None)
    return frozenset()
