"""Delay accounting state: the ``kernel.task_delayacct`` sysctl.

When it is off the kernel still fills the CPU delay fields, but every other delay
(block I/O, swap-in, reclaim, thrashing, compaction, write-protect copy, IRQ)
reads 0 without meaning "no delay".  Tasks started before it was switched on keep
zeros for those, because their delay struct is allocated at fork.
"""

from __future__ import annotations

from pathlib import Path

from .errors import AccessDenied, Unsupported

SYSCTL = Path("/proc/sys/kernel/task_delayacct")
OFF_NOTE = (
    "delay accounting is off (kernel.task_delayacct=0): non-CPU delays are not measured; "
    "switch it on with `taskstats delayacct on` (as root) "
    "or boot with `delayacct`"
)
LATE_NOTE = "tasks started before it was switched on keep zero non-CPU delays"


def status(path: Path = SYSCTL) -> bool | None:
    """True/False for on/off; None when the kernel has no such sysctl."""
    try:
        return path.read_text().strip() == "1"
    except FileNotFoundError:
        return None


def set_enabled(on: bool, path: Path = SYSCTL) -> None:
    """Switch delay accounting on or off (needs CAP_SYS_ADMIN)."""
    try:
        path.write_text("1\n" if on else "0\n")
    except PermissionError as err:
        raise AccessDenied(
            "switching delay accounting needs CAP_SYS_ADMIN: run as root on the host, not "
            "in a container or user namespace, whose root does not count "
            f"(sysctl -w kernel.task_delayacct={int(on)})") from err
    except FileNotFoundError as err:
        raise Unsupported("this kernel has no kernel.task_delayacct sysctl "
                          "(built without CONFIG_TASK_DELAY_ACCT?)") from err
