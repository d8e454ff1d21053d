"""Text shared by the command line, top and the reports: pure functions from records
and numbers to text and JSON-ready values.

Delay fields other than the CPU ones are not measured while delay accounting is
off; output then says so ("n/a" in text, null in JSON) instead of printing the
kernel's 0 as data.
"""

from __future__ import annotations

import functools
import math
import signal
import time
from json.encoder import encode_basestring_ascii
from typing import Any

from . import delayacct
from .fields import DELAY_KINDS, FIELDS, SECONDS_PER_UNIT, Field, Timespec
from .records import TaskStats

__all__ = ["OFF_KINDS", "delay_kind", "delayacct_json", "format_record", "format_value",
           "human_bytes", "human_date", "human_duration", "json_atom", "record_json",
           "record_json_text", "seconds_of", "shown", "unmeasured", "wait_status"]

def shown(text: str) -> str:
    """``text`` (a comm, a command line: any user may choose them) safe to print on a
    terminal: control characters (ESC, CR, ...) and other non-printables escaped as
    ``\\xNN``, undecodable bytes (surrogateescape) likewise; JSON keeps the text."""
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return raw if raw.isprintable() else "".join(
        c if c.isprintable() else repr(c)[1:-1] for c in raw)


# non-CPU delay kinds: meaningless while delay accounting is off
OFF_KINDS = tuple(k for k in DELAY_KINDS if k != "cpu")


def seconds_of(amount: float, unit: str) -> float | None:
    """``amount`` of a sub-second time ``unit`` ("ns", "us") in seconds; None for any
    other unit (whole seconds are timestamps or plain numbers where shown)."""
    return None if unit == "s" or unit not in SECONDS_PER_UNIT else (
        amount * SECONDS_PER_UNIT[unit])


@functools.cache
def delay_kind(name: str) -> str | None:
    """The delay kind of field ``name`` (``blkio_count`` -> "blkio"), else None
    (cached: field names are few, and JSON output asks for each of every record)."""
    for kind in DELAY_KINDS:
        if name == f"{kind}_count" or name.startswith(f"{kind}_delay_"):
            return kind
    return None


def unmeasured(name: str, delayacct_on: bool | None) -> bool:
    """True if ``name`` is a delay field that is not measured right now."""
    return delayacct_on is False and delay_kind(name) in OFF_KINDS


def human_duration(seconds: float) -> str:
    """A short duration: 0, 12.3us, 4.56ms, 1.234s, 2m03.0s, 1h02m, 3d04h."""
    if seconds == 0:
        return "0"
    if not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f}ms"
    if seconds < 120:
        return f"{seconds:.3f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"
    minutes = int(seconds // 60)
    if minutes < 100 * 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    hours = minutes // 60
    return f"{hours // 24}d{hours % 24:02d}h"


def human_date(epoch_s: int) -> str:
    """Seconds since the epoch as a local date and time ("2026-12-05 14:30:07")."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))
    except (OverflowError, OSError, ValueError):
        return "out of range"


def wait_status(code: int | None) -> str:
    """An ``ac_exitcode`` (wait(2) status) as "3" (exit code) or "SIGKILL"."""
    if code is None:
        return "-"
    if code & 0x7F:
        try:
            return signal.Signals(code & 0x7F).name
        except ValueError:
            return f"signal {code & 0x7F}"
    return str(code >> 8)


def human_bytes(n: float) -> str:
    """Bytes with a binary prefix: 512B, 4.0KiB, 1.5MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_value(field: Field, value: object) -> str:
    """One field's value with its unit and a human reading."""
    if isinstance(value, Timespec):
        return f"{value.tv_sec}.{value.tv_nsec:09d} s since the epoch"
    if isinstance(value, str):
        return value
    assert isinstance(value, int)
    text = f"{value:,}"
    if (secs := seconds_of(value, field.unit)) is not None:
        return f"{text} {field.unit} ({human_duration(secs)})"
    if field.unit == "KB":
        return f"{text} KB ({human_bytes(value * 1024)})"
    if field.unit == "bytes":
        return f"{text} bytes ({human_bytes(value)})"
    if field.name in ("ac_btime", "ac_btime64"):
        return f"{value} s since the epoch ({human_date(value)})"
    if field.unit in ("s", "MB*us"):
        return f"{text} {field.unit}"
    return text


def format_record(stats: TaskStats, title: str, delayacct_on: bool | None) -> str:
    """The whole record, one field a line, units stated; absent fields said once."""
    origin = ("read from /proc, not the kernel's struct taskstats (see docs/procfs.md)"
              if stats.source == "procfs" else
              f"struct taskstats v{stats.version}, {stats.payload_len} bytes, "
              f"from {stats.source}")
    lines = [f"{title}: {origin}"]
    absent = []
    procfs = stats.source == "procfs"
    for field in FIELDS:
        value = stats[field.position]
        if procfs and field.name == "version":
            continue
        if value is None:
            absent.append(field.name)
            continue
        shown = ("n/a (delay accounting off)" if unmeasured(field.name, delayacct_on)
                 else format_value(field, value))
        lines.append(f"  {field.name:<26} {shown}")
    if stats.exe_major is not None:
        lines.append(f"  {'(exe device)':<26} {stats.exe_major}:{stats.exe_minor}")
    if absent:
        why = ("not available from /proc" if procfs
               else "not carried by thread group records" if stats.scope == "tgid"
               else "not in this struct version or payload")
        lines.append(f"  absent ({why}): {', '.join(absent)}")
    return "\n".join(lines)


def record_json(stats: TaskStats, delayacct_on: bool | None) -> dict[str, Any]:
    """``stats.to_dict()`` with unmeasured delay fields as null."""
    out = stats.to_dict()
    if delayacct_on is False:
        for name in _OFF_FIELDS:
            if name in out:
                out[name] = None
    return out


_OFF_FIELDS = tuple(f.name for f in FIELDS if delay_kind(f.name) in OFF_KINDS)

# record_json_text: the text json.dumps(record_json(...), separators=(",", ":")) makes,
# from one format string (the keys are fixed) and the record's values converted in place
_N = len(FIELDS)
_RECORD_FMT = ("{" + ",".join(f'"{f.name}":%s' for f in FIELDS)
               + ',"scope":%s,"source":%s,"payload_len":%s,"exe_major":%s,"exe_minor":%s%s}')
_COMMS = tuple(f.position for f in FIELDS if f.ctype == "comm")
_TIMESPECS = tuple(f.position for f in FIELDS if f.ctype == "timespec")
_OFF_POSITIONS = tuple(f.position for f in FIELDS if f.name in _OFF_FIELDS)
_PLAIN = frozenset((int, str, type(None), Timespec))  # what the fields hold


def json_atom(value: bool | int | str | None) -> str:
    """One JSON scalar as the json module writes it (ASCII strings)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return encode_basestring_ascii(value) if isinstance(value, str) else str(int(value))


def record_json_text(stats: TaskStats, delayacct_on: bool | None) -> str:
    """``record_json(stats, delayacct_on)`` as compact JSON text: the same text as the
    json module makes of it (a test compares them on every fixture), about 3x faster
    (``listen --json`` writes one per exit)."""
    values: tuple[Any, ...] = stats[:_N]
    if not set(map(type, values)) <= _PLAIN:  # not a kernel record's kinds: the slow way
        from json import dumps  # noqa: PLC0415 - only for the odd record
        return dumps(record_json(stats, delayacct_on), separators=(",", ":"))
    out: list[Any] = ["null" if v is None else v for v in values]
    for i in _COMMS:
        if values[i] is not None:
            out[i] = encode_basestring_ascii(values[i])
    for i in _TIMESPECS:
        ts = values[i]
        if ts is not None:
            out[i] = f'{{"tv_sec":{ts.tv_sec},"tv_nsec":{ts.tv_nsec}}}'
    if delayacct_on is False:
        for i in _OFF_POSITIONS:
            out[i] = "null"
    extra = f',"extra":"{stats.extra.hex()}"' if stats.extra else ""
    return _RECORD_FMT % (*out, json_atom(stats.scope), json_atom(stats.source),
                          json_atom(stats.payload_len), json_atom(stats.exe_major),
                          json_atom(stats.exe_minor), extra)


def delayacct_json(state: bool | None) -> dict[str, Any]:
    """The delay accounting state as it goes into JSON output."""
    note = delayacct.OFF_NOTE if state is False else delayacct.LATE_NOTE
    return {"enabled": state, "note": note if state is not None else "no sysctl"}
