"""A checker of the Chrome trace event format's documented rules (the "Trace Event
Format" document that chrome://tracing and Perfetto follow), written for the tests:
``check(doc)`` raises AssertionError naming the first event that breaks a rule.

Rules checked:
- the JSON object form: ``traceEvents`` a list of objects; ``displayTimeUnit``, if
  present, "ms" or "ns"; the whole document serialises without NaN or infinity;
- every event has ``ph`` (a known phase), integer ``pid`` and ``tid``, and the keys
  its phase requires (X: name, ts, dur; C: name, ts, args; s/t/f: name, cat, id, ts;
  M: name, args; i/I: name, ts);
- ``ts`` and ``dur`` are numbers (microseconds), not booleans, finite, non-negative;
- the complete (X) slices of one track (pid, tid) nest properly: a slice starting
  inside another ends inside it;
- flow events: per (cat, id) one "s" then one or more "t"/"f" no earlier, each "s",
  "t" and "f" (with ``bp`` "e": the enclosing slice) inside an X slice of its track;
- metadata (M): a known name with the argument it needs (process_name and
  thread_name: a string ``name``; *_sort_index: an integer ``sort_index``;
  process_labels: a string ``labels``); every pid with slices is named;
- counters (C): ``args`` a non-empty object of finite numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

PHASES = set("BEXiIRCbneSTpFstfPONDMc()")  # every phase the format defines
REQUIRED = {"X": ("name", "ts", "dur"), "C": ("name", "ts", "args"),
            "s": ("name", "cat", "id", "ts"), "t": ("name", "cat", "id", "ts"),
            "f": ("name", "cat", "id", "ts"), "M": ("name", "args"), "i": ("name", "ts"),
            "I": ("name", "ts"), "B": ("name", "ts"), "E": ("ts",)}
META = {"process_name": ("name", str), "thread_name": ("name", str),
        "process_sort_index": ("sort_index", int), "thread_sort_index": ("sort_index", int),
        "process_labels": ("labels", str)}
EPS = 1e-6  # us: float rounding of ts + dur


def _number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _time(e: Mapping[str, Any], key: str) -> float:
    value = e[key]
    assert _number(value) and value >= 0, f"{key} must be a non-negative number: {e}"
    return float(value)


def _nested(slices: Sequence[tuple[float, float]], track: object) -> None:
    stack: list[float] = []  # ends of the open slices
    for start, end in sorted(slices, key=lambda s: (s[0], -s[1])):
        while stack and stack[-1] <= start + EPS:
            stack.pop()
        assert not stack or end <= stack[-1] + EPS, (
            f"track {track}: a slice [{start}, {end}] overlaps its enclosing slice's end "
            f"{stack[-1]} without nesting")
        stack.append(end)


def _inside(slices: Sequence[tuple[float, float]], ts: float) -> bool:
    return any(a - EPS <= ts <= b + EPS for a, b in slices)


def check(doc: Any) -> None:
    """Raise AssertionError unless ``doc`` follows the rules in the module doc."""
    assert isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list), (
        "the object form needs a traceEvents list")
    assert doc.get("displayTimeUnit", "ms") in ("ms", "ns"), doc.get("displayTimeUnit")
    json.dumps(doc, allow_nan=False)
    slices: dict[tuple[int, int], list[tuple[float, float]]] = {}
    flows: dict[tuple[str, object], list[Mapping[str, Any]]] = {}
    named: set[int] = set()
    for e in doc["traceEvents"]:
        assert isinstance(e, dict) and e.get("ph") in PHASES, f"unknown phase: {e}"
        for key in ("pid", "tid"):
            assert isinstance(e.get(key), int) and not isinstance(e[key], bool), (
                f"{key} must be an integer: {e}")
        ph = e["ph"]
        for key in REQUIRED.get(ph, ()):
            assert key in e, f"a {ph} event needs {key}: {e}"
        if "ts" in e:
            _time(e, "ts")
        if ph == "X":
            start = _time(e, "ts")
            slices.setdefault((e["pid"], e["tid"]), []).append((start, start + _time(e, "dur")))
        elif ph == "C":
            args = e["args"]
            assert isinstance(args, dict) and args and all(_number(v) for v in args.values()), (
                f"counter values must be numbers: {e}")
        elif ph == "M":
            assert e["name"] in META, f"unknown metadata: {e}"
            key, kind = META[e["name"]]
            value = e["args"].get(key)
            assert isinstance(value, kind) and not isinstance(value, bool), (
                f"{e['name']} needs a {kind.__name__} {key}: {e}")
            if e["name"] == "process_name":
                named.add(e["pid"])
        elif ph in "stf":
            assert isinstance(e["id"], int | str), f"a flow id is an integer or string: {e}"
            if ph == "f" and "bp" in e:
                assert e["bp"] == "e", f"f's bp can only be 'e': {e}"
            flows.setdefault((e["cat"], e["id"]), []).append(e)
    for track, spans in slices.items():
        _nested(spans, track)
    assert {pid for pid, _ in slices} <= named, "every pid with slices needs a process_name"
    for flow, events in flows.items():
        phases = [e["ph"] for e in events]
        assert phases.count("s") == 1 and phases.count("f") >= 1, (
            f"flow {flow}: one s and at least one f, got {phases}")
        start = next(e for e in events if e["ph"] == "s")["ts"]
        for e in events:
            assert e["ts"] >= start - EPS, f"flow {flow}: a step before its start: {e}"
            assert _inside(slices.get((e["pid"], e["tid"]), []), e["ts"]), (
                f"flow {flow}: {e['ph']} is not inside a slice of its track: {e}")
