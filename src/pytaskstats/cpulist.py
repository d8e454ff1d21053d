"""CPU lists ("0-3,5,7-8"), parsed and formatted as the kernel's bitmap_parselist does."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["format_cpulist", "parse_cpulist"]


def parse_cpulist(text: str) -> list[int]:
    """Parse a cpulist into a sorted list of CPU numbers.

    Accepts ranges with an optional stride ("0-7:2"), whitespace around items and a
    trailing newline.  Raises ValueError naming the bad item.
    """
    cpus: set[int] = set()
    body = text.strip().rstrip("\0")
    if not body:
        raise ValueError("empty cpu list")
    for item in body.split(","):
        cpus.update(_parse_item(item.strip()))
    return sorted(cpus)


def _parse_item(item: str) -> range:
    stride = 1
    if ":" in item:
        item, _, stride_text = item.partition(":")
        stride = _number(stride_text, item)
        if stride < 1:
            raise ValueError(f"bad stride in cpu list item {item!r}")
    first, sep, last = item.partition("-")
    lo = _number(first, item)
    hi = _number(last, item) if sep else lo
    if hi < lo:
        raise ValueError(f"reversed range {item!r} in cpu list")
    return range(lo, hi + 1, stride)


def _number(text: str, item: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"bad cpu list item {item!r}")
    return int(text)


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPU numbers as a compact cpulist ("0-3,5")."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
