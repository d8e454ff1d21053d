"""Formatting shared by the subcommands: pure functions from records to text/JSON.

Delay fields other than the CPU ones are not measured while delay accounting is
off; output then says so ("n/a" in text, null in JSON) instead of printing the
kernel's 0 as data.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from typing import Any

from .. import delayacct
from ..client import Client
from ..fields import DELAY_KINDS, FIELDS, Field, Timespec
from ..records import TaskStats

_UNIT_SCALE = {"ns": 1e-9, "us": 1e-6}
# non-CPU delay kinds: meaningless while delay accounting is off
OFF_KINDS = tuple(k for k in DELAY_KINDS if k != "cpu")
MEMORY_KINDS = ("swapin", "freepages", "thrashing", "compact", "wpcopy")


def open_client(args: Any, backend: str | None = None, *, exits: bool = False,
                quiet: bool = False) -> Client:
    """A Client from the global options (--backend, --socket); says on stderr when
    it falls back to taskstatsd or /proc.  ``exits``: the command needs exit records,
    which /proc cannot give: its listen() then says why, and no note repeats it.
    ``quiet``: the caller says it with :func:`note_backend` once it has an answer (an
    error then comes alone)."""
    asked = str(backend or getattr(args, "backend", "auto"))
    client = Client(asked, socket_path=getattr(args, "socket", None))
    if not (quiet or (exits and client.backend == "procfs")):
        note_backend(client, asked)
    return client


def note_backend(client: Client, asked: str) -> None:
    """The note on stderr that ``auto`` did not find the kernel, and what it used."""
    if client.backend != "kernel" and asked == "auto":
        print(f"taskstats: note: {client.backend_reason}", file=sys.stderr)


def delay_kind(name: str) -> str | None:
    """The delay kind of field ``name`` (``blkio_count`` -> "blkio"), else None."""
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
    if field.unit in _UNIT_SCALE:
        return f"{text} {field.unit} ({human_duration(value * _UNIT_SCALE[field.unit])})"
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
    for name in out:
        if unmeasured(name, delayacct_on):
            out[name] = None
    return out


def print_json(obj: object) -> None:
    """One compact JSON document on a line of stdout."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")


def delayacct_json(state: bool | None) -> dict[str, Any]:
    """The delay accounting state as it goes into JSON output."""
    note = delayacct.OFF_NOTE if state is False else delayacct.LATE_NOTE
    return {"enabled": state, "note": note if state is not None else "no sysctl"}


def warn_delayacct(state: bool | None) -> None:
    """Say on stderr that delays are not measured, when that is so."""
    if state is False:
        print(f"taskstats: note: {delayacct.OFF_NOTE}", file=sys.stderr)
