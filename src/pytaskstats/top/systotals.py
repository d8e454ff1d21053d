"""The header's system totals: two :class:`~pytaskstats.sysstat.SystemSample`\\ s
and the interval between them in, rates and percentages out (pure, no I/O).

- CPU busy %: of all CPUs (100 = every CPU busy), from /proc/stat ticks;
- actual disk read/write bytes/s: /proc/vmstat ``pgpgin``/``pgpgout`` (KiB moved
  between the block layer and the devices), iotop's "Actual"/"Current DISK";
- total disk read/write bytes/s: the sum of the rows' storage IO rates (taskstats
  read_bytes/write_bytes), iotop's "Total DISK" (:func:`task_io`);
- PSI: % of the interval some / all (full) non-idle tasks stalled on cpu, io,
  memory, from the ``total=`` stall times (not the kernel's 10 s averages).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from ..sysstat import SystemSample
from .frame import Row

__all__ = ["SystemTotals", "system_totals", "task_io"]

KIB = 1024


class SystemTotals(NamedTuple):
    """Rates over one interval; None where a counter is missing."""

    cpu_pct: float | None
    read_bps: float | None  # actual: block devices, bytes/s
    write_bps: float | None
    psi: dict[str, tuple[float, float | None]]  # resource -> (some %, full %)


def _rate(new: int | None, old: int | None, per: float) -> float | None:
    if new is None or old is None or new < old:
        return None
    return (new - old) / per


def system_totals(old: SystemSample, new: SystemSample, seconds: float) -> SystemTotals:
    """The rates between ``old`` and ``new``, ``seconds`` apart (> 0)."""
    cpu = None
    if old.cpu is not None and new.cpu is not None and new.cpu[1] > old.cpu[1]:
        cpu = 100.0 * (new.cpu[0] - old.cpu[0]) / (new.cpu[1] - old.cpu[1])
    read = _rate(new.pgpgin, old.pgpgin, seconds / KIB)
    write = _rate(new.pgpgout, old.pgpgout, seconds / KIB)
    psi = {}
    per_pct = seconds * 1e4  # us of stall per % of the interval
    for name, (some, full) in new.psi.items():
        if name in old.psi:
            was_some, was_full = old.psi[name]
            some_pct = _rate(some, was_some, per_pct)
            if some_pct is not None:
                psi[name] = (some_pct, _rate(full, was_full, per_pct))
    return SystemTotals(cpu, read, write, psi)


def task_io(rows: Iterable[Row]) -> tuple[float | None, float | None]:
    """Total (read, write) bytes/s of ``rows`` (taskstats storage IO), None before
    the first rates."""
    read = write = 0.0
    known = False
    for row in rows:
        r, w = row.value("read_bytes_per_s"), row.value("write_bytes_per_s")
        known = known or r is not None or w is not None
        read += r or 0.0
        write += w or 0.0
    return (read, write) if known else (None, None)
