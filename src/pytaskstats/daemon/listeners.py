"""Per-CPU exit listener lists with the kernel's rules (kernel/taskstats.c).

A listener is keyed by its connection id (the kernel keys by netlink port id);
registering the same (listener, cpu) twice is ignored; deregistering removes it;
a listener whose connection is gone is pruned.  cpumask strings are checked as
the kernel checks them, with the kernel's errnos.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from ..cpulist import parse_cpulist


class MaskError(ValueError):
    """A cpumask the kernel would refuse; ``errno`` is the kernel's answer."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


def check_cpumask(text: str, possible: Iterable[int], nr_cpu_ids: int) -> list[int]:
    """Parse ``text`` like the kernel's register path; raise MaskError with its errno.

    E2BIG: longer than 100 + 6 * nr_cpu_ids; EINVAL: empty, unparseable or not a
    subset of the possible CPUs; ERANGE: a CPU number beyond nr_cpu_ids.
    """
    if len(text) > 100 + 6 * nr_cpu_ids:
        raise MaskError(errno.E2BIG, f"cpumask of {len(text)} characters is too long")
    try:
        cpus = parse_cpulist(text)
    except ValueError as err:
        raise MaskError(errno.EINVAL, f"bad cpumask {text!r}: {err}") from err
    if cpus and cpus[-1] >= nr_cpu_ids:
        raise MaskError(errno.ERANGE, f"cpumask {text!r} names CPU {cpus[-1]}, "
                        f"beyond the last ({nr_cpu_ids - 1})")
    outside = set(cpus) - set(possible)
    if outside:
        raise MaskError(errno.EINVAL, f"cpumask {text!r} names impossible CPUs "
                        f"{sorted(outside)}")
    return cpus


class ListenerLists:
    """listener ids registered per CPU, in registration order."""

    def __init__(self) -> None:
        self._by_cpu: dict[int, list[int]] = {}

    def register(self, listener: int, cpus: Iterable[int]) -> int:
        """Add ``listener`` to each CPU's list; duplicates are ignored.  Returns how
        many (listener, cpu) pairs were added."""
        added = 0
        for cpu in cpus:
            entries = self._by_cpu.setdefault(cpu, [])
            if listener not in entries:
                entries.append(listener)
                added += 1
        return added

    def deregister(self, listener: int, cpus: Iterable[int]) -> int:
        """Remove ``listener`` from each CPU's list; returns how many were removed."""
        removed = 0
        for cpu in cpus:
            entries = self._by_cpu.get(cpu, [])
            if listener in entries:
                entries.remove(listener)
                removed += 1
        return removed

    def prune(self, listener: int) -> int:
        """Drop a dead listener from every CPU (the kernel's ECONNREFUSED path)."""
        return self.deregister(listener, list(self._by_cpu))

    def for_cpu(self, cpu: int | None) -> list[int]:
        """Listeners of ``cpu``; for an unknown CPU, every listener once."""
        if cpu is None:
            seen: dict[int, None] = {}
            for entries in self._by_cpu.values():
                seen.update(dict.fromkeys(entries))
            return list(seen)
        return list(self._by_cpu.get(cpu, ()))

    def cpus_of(self, listener: int) -> list[int]:
        """The CPUs ``listener`` is registered for."""
        return sorted(cpu for cpu, entries in self._by_cpu.items() if listener in entries)

    def count(self) -> int:
        """Distinct registered listeners."""
        return len(self.for_cpu(None))
