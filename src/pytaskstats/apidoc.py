"""docs/api.md, rendered from the public API's signatures and docstrings.

``python -m pytaskstats.apidoc > docs/api.md`` writes it; tests/test_api.py renders
it again and compares, so the page cannot drift from the code.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytaskstats
from pytaskstats import errors, records
from pytaskstats.client import Client
from pytaskstats.fields import TIME_FIELDS

__all__ = ["markdown"]

# (object, its public members documented in this order)
SECTIONS: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (pytaskstats.process_iter, ()),
    (Client, ("__init__", "pid", "tgid", "self", "process", "process_iter", "pids", "tgids",
              "cgroup", "listen", "status", "history", "struct_version", "close")),
    (records.ProcessRecord, ("name",)),
    (records.TaskStats, ("seconds", "durations", "cpu_time", "start_time", "exit_status",
                         "signal", "core_dumped", "group_dead", "exe_major", "exe_minor",
                         "carried", "to_dict", "__repr__")),
    (records.Seconds, ("__call__",)),
    (records.Durations, ("__call__",)),
    (records.ExitRecord, ("ended_process", "to_dict")),
    (records.Bulk, ()),
    (records.CgroupStats, ()),
    (records.Lost, ()),
    (errors.TaskstatsError, ()),
    (errors.NoSuchTask, ()),
    (errors.AccessDenied, ()),
    (errors.Unsupported, ()),
    (errors.ProtocolError, ()),
    (errors.NetlinkError, ()),
)


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "(no docstring)")


def _signature(name: str, obj: Any) -> str:
    target: Any = obj.fget if isinstance(obj, property) else obj
    if isinstance(obj, property):
        ret = inspect.signature(target).return_annotation
        return f"{name}: {ret}" if ret is not inspect.Signature.empty else name
    try:
        return f"{name}{inspect.signature(target)}"
    except (TypeError, ValueError):
        return name


def _section(obj: Any, members: tuple[str, ...]) -> list[str]:
    kind = "class" if inspect.isclass(obj) else "function"
    head = obj.__name__ if kind == "class" else _signature(obj.__name__, obj)
    out = [f"## `{head}`", "", f"*{kind}*", "", _doc(obj), ""]
    for member in members:
        attr = inspect.getattr_static(obj, member)
        out += [f"### `{obj.__name__}.{_signature(member, attr)}`", "",
                _doc(attr.fget if isinstance(attr, property) else attr), ""]
    if obj in (records.Seconds, records.Durations):
        names = ", ".join(f"`{f.name}`" for f in TIME_FIELDS)
        out += [f"Typed properties (one per time field of the table): {names}.", ""]
    return out


def markdown() -> str:
    """The API page (docs/api.md)."""
    lines = ["# Python API", "",
             "Generated from the docstrings by `python -m pytaskstats.apidoc > docs/api.md`;",
             "a test keeps it in step. Field names and units: [fields.md](fields.md).", "",
             "```python",
             "import pytaskstats",
             "for p in pytaskstats.process_iter(['name', 'cpu_time', 'blkio_delay_total']):",
             "    print(p.pid, p.info)",
             "with pytaskstats.Client() as client:",
             "    me = client.self()",
             "    print(me.ac_comm, me.seconds.ac_utime, me.durations.cpu_delay_total)",
             "```", ""]
    for obj, members in SECTIONS:
        lines += _section(obj, members)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
