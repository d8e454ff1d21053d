"""The one plausibility rule of every aggregate: no task waits longer than it lives.

Kernels sometimes report a delay total of about the machine's uptime for a task
that lived milliseconds (a wait that began while delay accounting was off is
charged from a stale start).  Every aggregate (``run`` totals, ``history`` totals
and groups, metrics, ``top``, the reports) leaves such a delay out of its sums and
counts it where the user sees it; raw per-record output keeps the kernel's value.

A task's *life* (ns):

- ``ac_etime`` (us) of a per-task record;
- of a thread group record, ``ac_etime`` too: the kernel sums its threads' elapsed
  times there, as it sums their delays; 0 (kernels that did not fill it) is unknown;
- without ``ac_etime``, the wall time from ``ac_btime64``/``ac_btime`` (seconds,
  so one more second) to ``at_s``, the time the record describes, when given.

An unknown life bounds nothing.  A delay kind is *implausible* when its
``KIND_delay_total`` is longer than :func:`limit_ns` of the life (delays and
elapsed time are read from different clocks, hence the slack); then every time
field of that kind (total, max, min) is left out, its ``KIND_count`` stays.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable
from typing import Any, NamedTuple

from .fields import BY_NAME, DELAY_KINDS
from .records import ExitRecord, TaskStats

__all__ = ["SLACK_NS", "SLACK_PCT", "LeftOut", "checked", "checked_records", "implausible",
           "life_ns", "limit_ns", "sql_plausible", "sql_plausible_sample", "time_fields"]

SLACK_PCT = 5  # a delay may exceed the life by this much (clocks differ) ...
SLACK_NS = 10_000_000  # ... plus this


def time_fields(kind: str) -> tuple[str, ...]:
    """The fields of delay ``kind`` that hold times (ns): total, max, min."""
    return tuple(n for n in (f"{kind}_delay_total", f"{kind}_delay_max", f"{kind}_delay_min")
                 if n in BY_NAME)


_TIME_FIELDS = {kind: time_fields(kind) for kind in DELAY_KINDS}
_totals = operator.attrgetter(*(f"{kind}_delay_total" for kind in DELAY_KINDS))


class LeftOut(NamedTuple):
    """A delay total left out of the aggregates: the task, the field, the kernel's
    value (ns) and the task's ``ac_etime`` (us, 0 if absent)."""

    comm: str
    pid: int
    field: str
    value_ns: int
    etime_us: int


def limit_ns(life: int, *, exact: bool = False) -> int:
    """The longest plausible delay of a task that lived ``life`` ns.  ``exact``: the
    caller measured ``life`` itself with its own tolerance (``top``'s intervals),
    so no slack is added."""
    return life if exact else life * (100 + SLACK_PCT) // 100 + SLACK_NS


def life_ns(stats: TaskStats, at_s: float | None = None) -> int | None:
    """How long the task (or thread group) of ``stats`` lived, ns; None if unknown."""
    etime = stats.ac_etime
    if etime is not None and (etime > 0 or stats.scope == "pid"):
        return etime * 1000
    btime = stats.ac_btime64 or stats.ac_btime
    if etime is None and btime and at_s is not None:
        return max(int(at_s * 1e9) + 1_000_000_000 - btime * 1_000_000_000, 0)
    return None


def implausible(stats: TaskStats, at_s: float | None = None) -> tuple[str, ...]:
    """The delay kinds of ``stats`` whose total is longer than the task's life."""
    life = life_ns(stats, at_s)
    if life is None:
        return ()
    limit = limit_ns(life)
    totals = _totals(stats)
    if max(v or 0 for v in totals) <= limit:  # the common case, fast
        return ()
    return tuple(k for k, v in zip(DELAY_KINDS, totals, strict=True) if v and v > limit)


def checked(stats: TaskStats, at_s: float | None = None) -> tuple[TaskStats, tuple[str, ...]]:
    """``stats`` with the time fields of its implausible kinds set to None, and those
    kinds (``stats`` itself when there are none)."""
    kinds = implausible(stats, at_s)
    if not kinds:
        return stats, kinds
    cleared: dict[str, Any] = dict.fromkeys(n for k in kinds for n in _TIME_FIELDS[k])
    return stats._replace(**cleared), kinds


def checked_records(records: Iterable[ExitRecord]) -> tuple[list[ExitRecord], list[LeftOut]]:
    """``records`` with their tasks :func:`checked`, and what was left out."""
    out: list[ExitRecord] = []
    left_out: list[LeftOut] = []
    for rec in records:
        task, kinds = checked(rec.task)
        if not kinds:
            out.append(rec)
            continue
        left_out += [LeftOut(rec.task.ac_comm or "?", rec.pid, f"{k}_delay_total",
                             getattr(rec.task, f"{k}_delay_total"), rec.task.ac_etime or 0)
                     for k in kinds]
        out.append(dataclasses.replace(rec, task=task))
    return out, left_out


def sql_plausible(kind: str) -> str:
    """The rule as an SQLite expression over a journal row (per-task columns named
    as the kernel's fields, ``time_ns`` when the exit was received): true when
    ``kind``'s delays are plausible."""
    total = f"{kind}_delay_total"
    btime = "COALESCE(NULLIF(ac_btime64, 0), NULLIF(ac_btime, 0))"
    life = (f"CASE WHEN ac_etime IS NOT NULL THEN ac_etime * 1000 "
            f"WHEN {btime} IS NOT NULL THEN "
            f"MAX(time_ns + 1000000000 - {btime} * 1000000000, 0) END")
    return (f"COALESCE({total} <= ({life}) * {100 + SLACK_PCT} / 100 + {SLACK_NS}, 1)")


def sql_plausible_sample(kind: str) -> str:
    """The rule over a sample row of the journal (a process's deltas over
    ``interval_ns``): its threads together waited at most ``threads`` intervals."""
    total = f"{kind}_delay_total"
    return (f"COALESCE({total} <= interval_ns * MAX(threads, 1) * {100 + SLACK_PCT} / 100 "
            f"+ {SLACK_NS}, 1)")
