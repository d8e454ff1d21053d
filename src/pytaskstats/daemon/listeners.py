"""Per-CPU exit listener lists with the kernel's rules (kernel/taskstats.c).

A listener is keyed by its connection id (the kernel keys by netlink port id);
registering the same (listener, cpu) twice is ignored; deregistering removes it;
a listener whose connection is gone is pruned.  cpumask attributes are checked as
the kernel checks them, with the kernel's errnos, at a cost bounded by their length
and the number of CPUs.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Iterable

from .. import genetlink as genl
from .. import netlink as nl
from .. import taskstats as ts
from ..cpulist import CpulistError, parse_cpumask

KERNEL_MAX = "/sys/devices/system/cpu/kernel_max"  # NR_CPUS - 1


class MaskError(ValueError):
    """A cpumask the kernel would refuse; ``errno`` is the kernel's answer."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


@functools.cache
def cpumask_maxlen(nr_cpu_ids: int) -> int:
    """The kernel's TASKSTATS_CPUMASK_MAXLEN, 100 + 6 * NR_CPUS bytes, where NR_CPUS is
    its build-time maximum (sysfs ``kernel_max`` + 1), not the CPUs present; from
    ``nr_cpu_ids`` where sysfs does not tell."""
    try:
        with open(KERNEL_MAX) as f:
            nr_cpus = int(f.read()) + 1
    except (OSError, ValueError):
        nr_cpus = nr_cpu_ids
    return 100 + 6 * max(nr_cpus, nr_cpu_ids)


def cpumask_payload(msg: nl.Message, op: str) -> bytes:
    """The raw payload of the (last) REGISTER or DEREGISTER cpumask attribute of a
    TASKSTATS_CMD_GET request; ``op`` is "register" or "deregister"."""
    wanted = ts.ATTR_REGISTER_CPUMASK if op == "register" else ts.ATTR_DEREGISTER_CPUMASK
    payload = b""
    for atype, a, b in nl.iter_attrs(msg.data, msg.start + genl.GENL_HEADER.size, msg.end):
        if atype == wanted:
            payload = bytes(msg.data[a:b])
    return payload


def check_cpumask(payload: bytes, possible: Iterable[int], nr_cpu_ids: int,
                  maxlen: int) -> list[int]:
    """The CPUs of a cpumask attribute's ``payload``, checked in the kernel's order;
    raise MaskError with its errno.

    ERANGE: an empty attribute (the attribute policy); E2BIG: longer than ``maxlen``
    bytes; then the string up to the attribute's last byte or first NUL is parsed by
    :func:`parse_cpumask` over ``nr_cpu_ids`` bits (EINVAL, EOVERFLOW, ERANGE, nothing
    expanded beyond ``nr_cpu_ids``); EINVAL: not a subset of the possible CPUs.
    """
    if not payload:
        raise MaskError(errno.ERANGE, "empty cpumask attribute")
    if len(payload) > maxlen:
        raise MaskError(errno.E2BIG, f"cpumask of {len(payload)} bytes is too long "
                        f"(at most {maxlen})")
    text = payload[:-1].split(b"\0", 1)[0]  # what the kernel's nla_strscpy() leaves
    try:
        cpus = parse_cpumask(text, nr_cpu_ids)
    except CpulistError as err:
        raise MaskError(err.errno, f"bad cpumask {text[:40]!r}: {err}") from err
    outside = set(cpus) - set(possible)
    if outside:
        raise MaskError(errno.EINVAL, f"cpumask {text[:40]!r} names impossible CPUs "
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
