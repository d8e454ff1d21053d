"""The declared parameters of every TASKSTATSD request, checked before use.

Each command has a schema: parameter name -> :class:`Param` (type, integer range,
string or list length, allowed values), plus groups of parameters that do not
combine.  :func:`check` refuses unknown keys and every violation with a
:class:`SchemaError` whose message starts with the parameter's name; taskstatsd
answers it EINVAL with that message.  Nothing here touches the journal: a value
that passed is safe to bind in SQL (integers fit SQLite's int64, strings encode
as UTF-8, names come from the field table).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import extproto
from ..fields import FIELDS
from .journal_queries import AGGREGATES, CONTEXT

__all__ = ["SCHEMAS", "Param", "SchemaError", "check"]

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
U32_MAX = (1 << 32) - 1
_SHOWN = 40  # characters of a refused value quoted in a message


class SchemaError(ValueError):
    """A request parameter that does not fit its command's schema."""


@dataclass(frozen=True)
class Param:
    """One parameter: ``kind`` int, str, bool or list (of strings); ``low``..``high``
    bound integers; ``max_len`` bounds strings (characters) and lists (items);
    ``choices`` lists the allowed strings (list items, for lists); ``signed``: a
    string choice may carry a "-" prefix (a descending sort)."""

    kind: type
    low: int = 0
    high: int = 0
    max_len: int = 0
    choices: frozenset[str] = frozenset()
    signed: bool = False


@dataclass(frozen=True)
class Schema:
    """A command's parameters and the groups of them that exclude each other."""

    params: Mapping[str, Param]
    exclusive: tuple[frozenset[str], frozenset[str]] | None = None


_SORTS = frozenset((*CONTEXT, *(f.name for f in FIELDS), "exits", "samples", "interval_ns",
                    "btime", "threads"))
_FLAG = Param(bool)
HISTORY = Schema({
    "since_ns": Param(int, I64_MIN, I64_MAX), "until_ns": Param(int, I64_MIN, I64_MAX),
    "comm": Param(str, max_len=255), "uid": Param(int, 0, U32_MAX),
    "pid": Param(int, 0, U32_MAX), "tgid": Param(int, 0, U32_MAX),
    "cgroup": Param(str, max_len=4096),
    "group_by": Param(str, max_len=16, choices=frozenset(("comm", "uid", "cgroup"))),
    "sort": Param(str, max_len=64, choices=_SORTS, signed=True),
    "limit": Param(int, 0, I64_MAX),
    "bucket_s": Param(int, 1, I64_MAX // 1_000_000_000),
    "fields": Param(list, max_len=len(AGGREGATES), choices=frozenset(AGGREGATES)),
    "plausible": _FLAG, "totals": _FLAG,
    "kind": Param(str, max_len=8, choices=frozenset(("exit", "sample", "scan"))),
    "at_ns": Param(int, I64_MIN, I64_MAX),
}, (frozenset(("bucket_s", "fields", "plausible")), frozenset(("sort", "limit", "totals"))))
SCHEMAS: dict[int, Schema] = {
    extproto.CMD_STATUS: Schema({"flush": _FLAG}),
    extproto.CMD_HISTORY: HISTORY,
    extproto.CMD_SET_OPTIONS: Schema({"cap_ack": _FLAG, "ext_ack": _FLAG}),
    extproto.CMD_CGROUP: Schema({}),
}


def check(cmd: int, params: object) -> dict[str, Any]:
    """``params`` of command ``cmd`` checked against its schema (a new dict);
    SchemaError naming the first parameter at fault.  ``cmd`` must be in SCHEMAS."""
    schema = SCHEMAS[cmd]
    if not isinstance(params, dict):
        raise SchemaError(f"parameters: a JSON object, not {_kind(params)}")
    unknown = sorted(str(k) for k in params if k not in schema.params)
    if unknown:
        known = ", ".join(schema.params) or "none"
        raise SchemaError(f"{_show(unknown[0])}: unknown parameter (known: {known})")
    for name, value in params.items():
        _check_value(name, schema.params[name], value)
    if schema.exclusive:
        first, second = (sorted(group & params.keys()) for group in schema.exclusive)
        if first and second:
            raise SchemaError(f"{first[0]}: does not combine with {', '.join(second)}")
    return dict(params)


def _check_value(name: str, param: Param, value: object) -> None:
    if param.kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(f"{name}: an integer, not {_kind(value)}")
        if not param.low <= value <= param.high:
            raise SchemaError(f"{name}: from {param.low} to {param.high}, not {_show(value)}")
    elif param.kind is bool:
        if not isinstance(value, bool):
            raise SchemaError(f"{name}: true or false, not {_kind(value)}")
    elif param.kind is str:
        _check_string(name, param, value)
    else:
        if not isinstance(value, list):
            raise SchemaError(f"{name}: a list, not {_kind(value)}")
        if len(value) > param.max_len:
            raise SchemaError(f"{name}: at most {param.max_len} items, not {len(value)}")
        for index, item in enumerate(value):
            _check_string(f"{name}[{index}]", Param(str, max_len=64, choices=param.choices),
                          item)


def _check_string(name: str, param: Param, value: object) -> None:
    if not isinstance(value, str):
        raise SchemaError(f"{name}: a string, not {_kind(value)}")
    if len(value) > param.max_len:
        raise SchemaError(f"{name}: at most {param.max_len} characters, not {len(value)}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise SchemaError(f"{name}: not valid Unicode (a lone surrogate)") from None
    bare = value.removeprefix("-") if param.signed else value
    if param.choices and bare not in param.choices:
        prefix = " (a '-' prefix for descending)" if param.signed else ""
        raise SchemaError(f"{name}: {_show(value)} is not one of "
                          f"{', '.join(sorted(param.choices))}{prefix}")


def _kind(value: object) -> str:
    """A JSON value's type as a message names it, with the value when short."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "an object", type(None): "null"}
    name = names.get(type(value), type(value).__name__)
    return name if isinstance(value, list | dict) or value is None else f"{name} {_show(value)}"


def _show(value: object) -> str:
    """A scalar ``value`` quoted for a message, cut to a bounded length (containers
    are never shown: their repr could be huge)."""
    if isinstance(value, int) and value.bit_length() >= 128:
        text = f"{'-' if value < 0 else ''}<{value.bit_length()}-bit integer>"
    elif isinstance(value, int | float | str):
        text = repr(value)
    else:
        text = type(value).__name__
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."
