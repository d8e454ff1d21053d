"""Two runs of the same job compared per command name (``taskstats diff``).

A run is read from what ``taskstats run --json`` prints or from a trace that
``taskstats run --trace`` wrote (:mod:`.trace`).  Per command name (comm) and for the
whole run: processes, wall (s; per command name the sum of its processes' lifetimes,
for the whole run the run's wall time), CPU (user + system), CPU wait, IO wait,
memory wait (s), and bytes read and written to storage.  A value the kernel did not
measure (delay accounting off) is None, never 0.

Order ("what matters most"): command names by the largest absolute change, in
seconds, of any of their time fields (wall, CPU, each wait), ties by name.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .trace import CATEGORY

FIELDS = ("processes", "wall", "cpu", "cpu_wait", "io_wait", "memory_wait", "read", "write")
TIME_FIELDS = ("wall", "cpu", "cpu_wait", "io_wait", "memory_wait")
UNITS = {"processes": "", "read": "B", "write": "B", **dict.fromkeys(TIME_FIELDS, "s")}
LABELS = {"processes": "processes", "wall": "wall", "cpu": "CPU", "cpu_wait": "CPU wait",
          "io_wait": "IO wait", "memory_wait": "memory wait", "read": "read",
          "write": "written"}
Values = dict[str, float | None]
TRACE_ARGS = {"cpu": "cpu_s", "cpu_wait": "cpu_wait_s", "io_wait": "io_wait_s",
              "memory_wait": "memory_wait_s", "read": "read_bytes", "write": "write_bytes"}


class NotARun(ValueError):
    """The document is neither a ``run --json`` output nor a trace of ours."""


@dataclass(frozen=True)
class Job:
    """One run: its command, exit status, per command name values, and totals."""

    label: str
    command: tuple[str, ...]
    exit_status: int | None
    groups: dict[str, Values]
    totals: Values


@dataclass(frozen=True)
class Change:
    """A command name (or "all" for the whole run) in both runs."""

    comm: str
    a: Values
    b: Values

    def delta(self, name: str) -> float | None:
        """B - A; None when either is not measured."""
        x, y = self.a.get(name), self.b.get(name)
        return None if x is None or y is None else y - x

    def percent(self, name: str) -> float | None:
        """The change in percent of A; +inf when A is 0 and B is not; None when not
        measured."""
        x, d = self.a.get(name), self.delta(name)
        if x is None or d is None:
            return None
        if x == 0:
            return 0.0 if d == 0 else math.copysign(math.inf, d)
        return 100.0 * d / x

    def weight(self) -> float:
        """The largest absolute change of a time field, in seconds."""
        return max((abs(d) for f in TIME_FIELDS if (d := self.delta(f)) is not None),
                   default=0.0)


def _add(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else a + b


def _number(value: Any, what: str) -> float:
    """``value`` as a float: a finite number >= 0 (ints of any size, not bools);
    ValueError otherwise (strings, NaN, Infinity, negative times, 10**400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} is {type(value).__name__}, not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and number >= 0):
        shown = f"{value:.6g}" if isinstance(value, float) or abs(value) < 10**12 else "huge"
        raise ValueError(f"{what} is {shown}: not a finite number from 0 up")
    return number


def _optional(value: Any, what: str) -> float | None:
    return None if value is None else _number(value, what)


def _scaled(values: Mapping[str, Any], names: Sequence[str], scale: float) -> float | None:
    present = [_number(values[n], n) for n in names if values.get(n) is not None]
    return sum(present) * scale if present else None


def _run_rows(doc: Mapping[str, Any]) -> Iterator[tuple[str, Values]]:
    for p in doc["processes"]:
        etime = p.get("ac_etime")
        yield (str(p.get("comm") or "?"), {
            "processes": 1.0, "wall": None if etime is None else _number(etime, "ac_etime") / 1e6,
            "cpu": _scaled(p, ("ac_utime", "ac_stime"), 1e-6),
            "cpu_wait": _scaled(p, ("cpu_delay_total",), 1e-9),
            "io_wait": _scaled(p, ("blkio_delay_total",), 1e-9),
            "memory_wait": _scaled(p, ("memory_delay_total",), 1e-9),
            "read": _scaled(p, ("read_bytes",), 1.0), "write": _scaled(p, ("write_bytes",), 1.0)})


def _trace_rows(doc: Mapping[str, Any]) -> Iterator[tuple[str, Values]]:
    for e in doc["traceEvents"]:
        if e.get("ph") != "X" or e.get("cat") != CATEGORY:
            continue
        a = e.get("args") or {}
        yield (str(a.get("comm") or e.get("name") or "?"), {
            "processes": 1.0, "wall": _number(e["dur"], "dur") / 1e6,
            **{field: _optional(a.get(arg), arg) for field, arg in TRACE_ARGS.items()}})


_PROCESS_KEYS = ("comm", "ac_etime", "ac_utime", "ac_stime", "cpu_delay_total",
                 "blkio_delay_total", "memory_delay_total", "read_bytes", "write_bytes")
KEYS = frozenset(("traceEvents", "otherData", "processes", "wall_s", "command", "exit_status",
                  "ph", "cat", "name", "dur", "args", *_PROCESS_KEYS, *TRACE_ARGS.values()))


def pruned(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object with only the :data:`KEYS` :func:`load` reads (an
    ``object_pairs_hook``: a run of 200,000 processes parses in 2/3 of the memory)."""
    return {key: value for key, value in pairs if key in KEYS}


def _check_numbers(label: str, tables: Sequence[Values]) -> None:
    """NotARun unless every sum is a finite number >= 0 (each value read is checked
    by :func:`_number`; sums of huge ones may still overflow to infinity)."""
    for values in tables:
        for name, value in values.items():
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise NotARun(f"{label}: {LABELS[name]} is {value!r}, not a number a run "
                              "measures (finite, 0 or more): the file was edited or damaged")


def load(doc: Any, label: str) -> Job:
    """A run from a parsed ``run --json`` document or trace; NotARun otherwise."""
    try:
        if isinstance(doc, dict) and "traceEvents" in doc:
            rows, wall = _trace_rows(doc), _number(doc["otherData"]["wall_s"], "wall_s")
            meta = doc.get("otherData") or {}
        elif isinstance(doc, dict) and "processes" in doc and "wall_s" in doc:
            rows, wall = _run_rows(doc), _number(doc["wall_s"], "wall_s")
            meta = doc
        else:
            raise NotARun(f"{label}: not the output of 'taskstats run --json' nor a trace "
                          "of 'taskstats run --trace'")
        groups: dict[str, Values] = {}
        for comm, values in rows:  # one at a time: 10**6 processes are summed, not held
            group = groups.setdefault(comm, dict.fromkeys(FIELDS, 0.0))
            for name in FIELDS:
                group[name] = (None if group[name] is None or values[name] is None
                               else _add(group[name], values[name]))
        totals: Values = dict.fromkeys(FIELDS, 0.0)
        for group in groups.values():
            for name in FIELDS:
                totals[name] = (None if totals[name] is None or group[name] is None
                                else _add(totals[name], group[name]))
        totals["wall"] = wall
        _check_numbers(label, [totals, *groups.values()])
        status = meta.get("exit_status")
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                                   or not -1 << 31 <= status < 1 << 31):
            raise ValueError(f"exit_status is {status!r}: not an exit status")
        return Job(label, tuple(str(c) for c in meta.get("command") or ()),
                   status, groups, totals)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        if isinstance(err, NotARun):
            raise
        raise NotARun(f"{label}: a run or trace document with a missing or malformed part "
                      f"({type(err).__name__}: {err})") from err


def compare(a: Job, b: Job) -> tuple[Change, list[Change]]:
    """The whole run's change, and each command name's, most important first."""
    def absent(job: Job) -> Values:  # a name the run lacks: 0 where the run measured
        return {f: None if job.totals[f] is None else 0.0 for f in FIELDS}
    names = list(dict.fromkeys([*a.groups, *b.groups]))
    changes = [Change(n, a.groups.get(n) or absent(a), b.groups.get(n) or absent(b))
               for n in names]
    changes.sort(key=lambda c: (-c.weight(), c.comm))
    return Change("all", a.totals, b.totals), changes


def regression(whole: Change, field: str, above_pct: float) -> str | None:
    """Why the whole run regressed on ``field`` by more than ``above_pct`` percent (None
    when it did not); ValueError when ``field`` was not measured in a run."""
    pct = whole.percent(field)
    if pct is None:
        raise ValueError(f"{LABELS[field]} was not measured in both runs (delay accounting "
                         "off?): choose another field with --on")
    if pct <= above_pct:
        return None
    grew = "from nothing" if math.isinf(pct) else f"{pct:+.1f}%"
    return (f"{LABELS[field]} went from {show(whole.a[field], field)} to "
            f"{show(whole.b[field], field)} ({grew}, above {above_pct:g}%)")


def show(value: float | None, field: str) -> str:
    """A field's value as text: seconds to the ms, bytes and counts whole."""
    if value is None:
        return "n/a"
    if UNITS[field] == "s":
        return f"{value:.3f}s"
    return f"{value:.0f}{UNITS[field]}"


def change_json(change: Change) -> dict[str, Any]:
    """One change as JSON: per field a, b, delta and percent (null: not measured or
    infinite)."""
    def num(x: float | None) -> float | None:
        return None if x is None or math.isinf(x) else round(x, 6)
    return {"comm": change.comm, **{f: {"a": num(change.a.get(f)), "b": num(change.b.get(f)),
                                        "delta": num(change.delta(f)),
                                        "percent": num(change.percent(f))} for f in FIELDS}}


__all__ = ["FIELDS", "KEYS", "LABELS", "TIME_FIELDS", "UNITS", "Change", "Job", "NotARun",
           "change_json", "compare", "load", "pruned", "regression", "show"]
