"""The kinds of time a task spends, their colours, and the columns of the totals tables.

Values come from dicts keyed by kernel field names in kernel units (a
``ProcessSummary.values``, a journal row or group); a field that is absent
(None or missing) is not counted, and a kind none of whose fields is present
is None ("not available"), never 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ..summary import MEMORY_KINDS

MEMORY_FIELDS = tuple(f"{kind}_delay_total" for kind in MEMORY_KINDS)


class Kind(NamedTuple):
    """One kind of time: kernel fields summed, their unit's scale to seconds, and
    whether the kernel measures it only while delay accounting is on."""

    key: str
    label: str
    help: str
    colour: str
    fields: tuple[str, ...]
    scale: float
    needs_delayacct: bool


# Okabe-Ito colours: distinguishable with the common colour vision deficiencies
RUNNING = Kind("running", "running", "user + system CPU time (ac_utime + ac_stime)",
               "#0072b2", ("ac_utime", "ac_stime"), 1e-6, False)
CPU = Kind("cpu", "waiting for CPU", "runnable but waiting on a run queue (cpu_delay_total)",
           "#e69f00", ("cpu_delay_total",), 1e-9, False)
IO = Kind("io", "IO wait", "waiting for block IO (blkio_delay_total)", "#009e73",
          ("blkio_delay_total",), 1e-9, True)
MEMORY = Kind("memory", "memory wait", "swap-in, reclaim, thrashing, compaction and "
              "write-protect copy delays", "#d55e00", MEMORY_FIELDS, 1e-9, True)
IRQ = Kind("irq", "IRQ", "time taken by interrupt handling (irq_delay_total)", "#cc79a7",
           ("irq_delay_total",), 1e-9, True)
KINDS = (RUNNING, CPU, IO, MEMORY, IRQ)
WAITS = (CPU, IO, MEMORY, IRQ)
OFF_NOTE = ("IO, memory and IRQ waits not measured (delay accounting off: "
            "kernel.task_delayacct=0; `taskstats delayacct on` switches it on)")


def total(values: Mapping[str, Any], fields: tuple[str, ...]) -> int | None:
    """Sum of the present ``fields`` of ``values``; None if none is present."""
    out: int | None = None
    for name in fields:
        value = values.get(name)
        if value is not None:
            out = (out or 0) + value
    return out


def seconds(kind: Kind, values: Mapping[str, Any]) -> float | None:
    """Time of ``kind`` in ``values``, in seconds; None if not available."""
    value = total(values, kind.fields)
    return None if value is None else value * kind.scale


def measured(kind: Kind, delayacct: bool | None) -> bool:
    """False when ``kind`` is not measured because delay accounting is off."""
    return not (kind.needs_delayacct and delayacct is False)


class Column(NamedTuple):
    """A column of a totals table: fields summed, in ``unit`` (us, ns, B, KB or "")."""

    title: str
    help: str
    fields: tuple[str, ...]
    unit: str
    needs_delayacct: bool = False


COLUMNS = (
    Column("user CPU", "ac_utime: CPU time in user mode", ("ac_utime",), "us"),
    Column("system CPU", "ac_stime: CPU time in the kernel", ("ac_stime",), "us"),
    Column("CPU wait", CPU.help, CPU.fields, "ns"),
    Column("IO wait", IO.help, IO.fields, "ns", True),
    Column("memory wait", MEMORY.help, MEMORY.fields, "ns", True),
    Column("IRQ", IRQ.help, IRQ.fields, "ns", True),
    Column("read", "read_bytes: bytes read from storage", ("read_bytes",), "B"),
    Column("written", "write_bytes: bytes written to storage", ("write_bytes",), "B"),
    Column("ctx switches", "nvcsw + nivcsw: voluntary + involuntary context switches",
           ("nvcsw", "nivcsw"), ""),
    Column("peak RSS", "hiwater_rss: the largest resident set size", ("hiwater_rss",), "KB"),
)
