"""Machine-wide counters for ``taskstats top``'s header: CPU time (/proc/stat), the
bytes moved between the block layer and the devices (/proc/vmstat ``pgpgin`` /
``pgpgout``, KiB) and pressure stall time (/proc/pressure/{cpu,io,memory}, us).

Counters only: rates come from two samples (``top.systotals``).  The parsers are
pure (bytes in); :func:`read_system` reads them under a /proc root, leaving out
(None) what the kernel does not have (no PSI without CONFIG_PSI or with psi=0).
"""

from __future__ import annotations

from typing import NamedTuple

from .procfs_parse import ProcfsFormatError, read_file

__all__ = ["PSI_RESOURCES", "SystemSample", "parse_cpu", "parse_psi", "parse_vmstat",
           "read_system"]

PSI_RESOURCES = ("cpu", "io", "memory")


class SystemSample(NamedTuple):
    """Counters read at one refresh; None for what could not be read.

    ``cpu``: (busy, total) clock ticks of all CPUs (busy: not idle nor iowait);
    ``pgpgin``/``pgpgout``: KiB read from / written to block devices since boot;
    ``psi``: resource -> (some, full) stall us since boot (full None when absent).
    """

    cpu: tuple[int, int] | None
    pgpgin: int | None
    pgpgout: int | None
    psi: dict[str, tuple[int, int | None]]


def parse_cpu(data: bytes, path: str = "/proc/stat") -> tuple[int, int]:
    """(busy, total) ticks from the ``cpu`` line of /proc/stat; guest time is
    already in user and nice, so it is not added twice."""
    line = data.split(b"\n", 1)[0].split()
    try:
        if line[0] != b"cpu":
            raise ValueError("the first line is not the cpu line")
        ticks = [int(v) for v in line[1:9]]  # user nice system idle iowait irq softirq steal
    except (ValueError, IndexError) as err:
        raise ProcfsFormatError(f"malformed cpu line ({err})", path=path) from err
    total = sum(ticks)
    return total - ticks[3] - (ticks[4] if len(ticks) > 4 else 0), total


def parse_vmstat(data: bytes, path: str = "/proc/vmstat") -> tuple[int | None, int | None]:
    """(pgpgin, pgpgout) in KiB; None for a counter the kernel lacks."""
    found: dict[bytes, int] = {}
    for line in data.splitlines():
        key, _, value = line.partition(b" ")
        if key in (b"pgpgin", b"pgpgout"):
            try:
                found[key] = int(value)
            except ValueError as err:
                raise ProcfsFormatError(f"malformed {key.decode()} ({err})",
                                        path=path) from err
    return found.get(b"pgpgin"), found.get(b"pgpgout")


def parse_psi(data: bytes, path: str) -> tuple[int, int | None]:
    """(some, full) ``total=`` stall us of one pressure file (full None when absent)."""
    totals: dict[bytes, int] = {}
    for line in data.splitlines():
        kind, *pairs = line.split()
        for pair in pairs:
            key, _, value = pair.partition(b"=")
            if key == b"total":
                try:
                    totals[kind] = int(value)
                except ValueError as err:
                    raise ProcfsFormatError(f"malformed total ({err})", path=path) from err
    if b"some" not in totals:
        raise ProcfsFormatError(f"no 'some' line: {data[:100]!r}", path=path)
    return totals[b"some"], totals.get(b"full")


def _read(path: str) -> bytes | None:
    try:
        return read_file(path)
    except OSError:
        return None  # not in this kernel (or not readable here)


def read_system(proc: str = "/proc") -> SystemSample:
    """The counters now; None (or no PSI entry) for what this kernel lacks or
    what does not parse."""
    cpu = None
    stat = _read(f"{proc}/stat")
    if stat is not None:
        try:
            cpu = parse_cpu(stat)
        except ProcfsFormatError:
            cpu = None
    vm = _read(f"{proc}/vmstat")
    try:
        pgpgin, pgpgout = parse_vmstat(vm) if vm is not None else (None, None)
    except ProcfsFormatError:
        pgpgin = pgpgout = None
    psi = {}
    for name in PSI_RESOURCES:
        path = f"{proc}/pressure/{name}"
        data = _read(path)
        if data is not None:
            try:
                psi[name] = parse_psi(data, path)
            except ProcfsFormatError:
                continue
    return SystemSample(cpu, pgpgin, pgpgout, psi)
