"""CPU lists ("0-3,5,7-8"): parsed and formatted.

:func:`parse_cpumask` parses as the kernel's ``cpulist_parse()`` does (its grammar,
its errnos, its order of checks) with a bounded cost: a region is checked against
the mask's size arithmetically before any CPU of it is set, so no input makes it
build more than ``nbits`` entries.  :func:`parse_cpulist` is the lenient reader
for lists this library reads or is given (sysfs files, command lines).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["CpulistError", "format_cpulist", "parse_cpulist", "parse_cpumask"]

MAX_CPULIST_CPU = 1 << 16  # parse_cpulist refuses CPU numbers from here on (NR_CPUS <= 8192)
_U32_MAX = 0xFFFFFFFF
_SPACE = frozenset(b" \t\n\v\f\r\xa0")  # the kernel's isspace() (Latin-1 NBSP included)
_DELIMITERS = _SPACE | {ord(",")}


class CpulistError(ValueError):
    """A cpulist the kernel refuses; ``errno`` is its answer (EINVAL, ERANGE, EOVERFLOW)."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


def parse_cpumask(text: bytes, nbits: int) -> list[int]:
    """The CPUs of ``text`` (a C string, up to its end) in a mask of ``nbits`` bits.

    Grammar: regions separated by commas or whitespace, each ``N``, ``A-B``,
    ``A-B:USED/GROUP`` or ``all``; ``N`` as a number means the last bit; a newline
    ends the list.  Regions are parsed, checked and set one after another, so the
    first bad one decides the errno: EINVAL (syntax, reversed or empty group),
    EOVERFLOW (a number beyond 32 bits), ERANGE (a CPU >= ``nbits``).  An empty
    list is valid and empty.  Cost: O(len(text) + nbits).
    """
    mask = bytearray(nbits)
    pos: int | None = 0
    while pos is not None:
        while pos < len(text) and text[pos] in _DELIMITERS:
            pos += 1
        if pos >= len(text):
            break
        region, pos = _region(text, pos, nbits - 1)
        region.check(nbits)
        for first in range(region.start, region.end + 1, region.group):  # < nbits turns
            stop = min(region.end + 1, first + region.used)
            mask[first:stop] = b"\1" * (stop - first)
    return [cpu for cpu, bit in enumerate(mask) if bit]


class _Region(NamedTuple):
    """CPUs start..end, in groups of ``group`` of which the first ``used`` are set."""

    start: int
    end: int
    used: int
    group: int

    def check(self, nbits: int) -> None:
        """The kernel's checks of a parsed region, in its order."""
        if self.start > self.end or self.group == 0 or self.used > self.group:
            raise CpulistError(errno.EINVAL, f"bad region {self.start}-{self.end}:"
                               f"{self.used}/{self.group} in the cpu list")
        if self.end >= nbits:
            raise CpulistError(errno.ERANGE, f"cpu list names CPU {self.end}, beyond the "
                               f"last ({nbits - 1})")


def _region(text: bytes, pos: int, lastbit: int) -> tuple[_Region, int | None]:
    """The region at ``pos``, and the position after it (None: the list ends)."""
    if text[pos:pos + 3].lower() == b"all":
        start, end, pos = 0, lastbit, pos + 3
    else:
        start, pos = _number(text, pos, lastbit)
        end = start
        if _char(text, pos) == ord("-"):
            end, pos = _number(text, pos + 1, lastbit)
        elif not _ends_region(text, pos):
            raise CpulistError(errno.EINVAL, f"bad character at offset {pos} of the cpu list")
    if _ends_region(text, pos):
        span = (end + 1) & _U32_MAX  # the kernel's unsigned arithmetic: 0-4294967295 wraps
        return _Region(start, end, span, span), None if _ends_list(text, pos) else pos
    if _char(text, pos) != ord(":"):
        raise CpulistError(errno.EINVAL, f"bad character at offset {pos} of the cpu list")
    used, pos = _number(text, pos + 1, lastbit)
    if _char(text, pos) != ord("/"):
        raise CpulistError(errno.EINVAL, f"expected '/' at offset {pos} of the cpu list")
    group, pos = _number(text, pos + 1, lastbit)
    return _Region(start, end, used, group), pos


def _number(text: bytes, pos: int, lastbit: int) -> tuple[int, int]:
    """A decimal number (or ``N``: the last bit) at ``pos``, and the position after it."""
    if _char(text, pos) == ord("N"):
        return lastbit, pos + 1
    stop = pos
    while stop < len(text) and 0x30 <= text[stop] <= 0x39:
        stop += 1
    if stop == pos:
        raise CpulistError(errno.EINVAL, f"expected a number at offset {pos} of the cpu list")
    digits = text[pos:stop].lstrip(b"0")
    if len(digits) > 10 or int(digits or b"0") > _U32_MAX:  # never converts a long string
        raise CpulistError(errno.EOVERFLOW, f"number at offset {pos} of the cpu list does "
                           "not fit in 32 bits")
    return int(digits or b"0"), stop


def _char(text: bytes, pos: int) -> int | None:
    return text[pos] if pos < len(text) else None


def _ends_region(text: bytes, pos: int) -> bool:
    char = _char(text, pos)
    return char is None or char in _DELIMITERS


def _ends_list(text: bytes, pos: int) -> bool:
    return _char(text, pos) in (None, ord("\n"))


def parse_cpulist(text: str) -> list[int]:
    """Parse a cpulist into a sorted list of CPU numbers.

    Accepts ranges with an optional stride ("0-7:2"), whitespace around items and a
    trailing newline.  Raises ValueError naming the bad item, and for a CPU number
    of MAX_CPULIST_CPU or more (checked before a range is expanded).
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
        stride = _item_number(stride_text, item)
        if stride < 1:
            raise ValueError(f"bad stride in cpu list item {item!r}")
    first, sep, last = item.partition("-")
    lo = _item_number(first, item)
    hi = _item_number(last, item) if sep else lo
    if hi < lo:
        raise ValueError(f"reversed range {item!r} in cpu list")
    if hi >= MAX_CPULIST_CPU:
        raise ValueError(f"cpu {hi} in cpu list item {item!r} is beyond any kernel's "
                         f"limit ({MAX_CPULIST_CPU - 1})")
    return range(lo, hi + 1, stride)


def _item_number(text: str, item: str) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii() or len(text.lstrip("0")) > 9:
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
