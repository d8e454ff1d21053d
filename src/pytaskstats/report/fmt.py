"""Text of the reports: escaping, human units, percentages for SVG, nice axis steps."""

from __future__ import annotations

import math
import time
from html import escape

from ..textfmt import human_bytes, human_duration, seconds_of

__all__ = ["esc", "human_bytes", "human_duration"]

_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
               21600, 43200, 86400)


def esc(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return escape(str(text), quote=True)


def pct(value: float) -> str:
    """A percentage for an SVG attribute: "12.345%" (3 decimals, trailing zeros cut)."""
    text = f"{max(value, 0.0):.3f}".rstrip("0").rstrip(".")
    return f"{text}%"


def share(part: float, whole: float) -> str:
    """``part`` of ``whole`` as "12%" ("<1%" for small non-zero parts; "-" if no whole)."""
    if whole <= 0:
        return "-"
    value = 100 * part / whole
    return "<1%" if 0 < value < 1 else f"{value:.0f}%"


def value(amount: float | None, unit: str) -> str:
    """A field value in its kernel ``unit`` (us, ns, B, KB, "") for people."""
    if amount is None:
        return "-"
    if (secs := seconds_of(amount, unit)) is not None:
        return human_duration(secs)
    if unit == "B":
        return human_bytes(amount)
    if unit == "KB":
        return human_bytes(amount * 1024)
    return f"{amount:,.0f}"


def count(n: float) -> str:
    """A count with thousands separators."""
    return f"{n:,.0f}"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above ``value`` (> 0); 1 for 0."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for mantissa in (1, 2, 2.5, 5, 10):
        if mantissa * power >= value * (1 - 1e-9):
            return mantissa * power
    raise AssertionError("unreachable")


def nice_step(span: float, intervals: int) -> float:
    """The smallest 1-2-5 x 10^k step (seconds at or above 1 s: a clock step) that
    cuts ``span`` (> 0) into at most ``intervals`` parts."""
    raw = span / intervals
    if raw >= 1:
        return float(next((s for s in _TIME_STEPS if s >= raw),
                          86400 * math.ceil(raw / 86400)))
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def clock(seconds: float, step: float) -> str:
    """An offset on a time axis: "0", "250ms", "1.5s", "2m", "1m30s", "1h05m"."""
    if seconds == 0:
        return "0"
    if step < 1 and seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.{0 if step >= 1 else 1}f}s".replace(".0s", "s")
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def short_duration(seconds: float) -> str:
    """A duration for an axis label: "0", "40us", "250ms", "1.5s", "2.5m", "1.2h"."""
    if seconds == 0:
        return "0"
    for scale, unit in ((3600, "h"), (60, "m"), (1, "s"), (1e-3, "ms")):
        if seconds >= scale * (1 if unit in ("s", "ms") else 2):
            return f"{seconds / scale:.3g}{unit}"
    return f"{seconds * 1e6:.3g}us"


def local_time(ns: int, *, date: bool = True) -> str:
    """CLOCK_REALTIME ns as local time: "2026-11-01 14:03:07" (or only "14:03")."""
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M", time.localtime(ns / 1e9))
