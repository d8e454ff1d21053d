"""pytaskstats: Linux taskstats (per-task accounting and delays) for Python.

``from pytaskstats import Client`` for queries and exit listening; the sans-IO
codec lives in :mod:`pytaskstats.netlink`, :mod:`pytaskstats.genetlink` and
:mod:`pytaskstats.taskstats`; the one field table in :mod:`pytaskstats.fields`.
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    AccessDenied,
    LocalProtocolError,
    NetlinkError,
    NoSuchTask,
    ProtocolError,
    RemoteProtocolError,
    TaskstatsError,
    Unsupported,
)
from .fields import FIELDS, Timespec
from .records import Bulk, CgroupStats, ExitRecord, Lost, TaskStats

__version__ = "0.1.0"
__all__ = [
    "FIELDS",
    "AccessDenied",
    "Bulk",
    "CgroupStats",
    "Client",
    "ExitRecord",
    "LocalProtocolError",
    "Lost",
    "NetlinkError",
    "NoSuchTask",
    "ProtocolError",
    "RemoteProtocolError",
    "TaskStats",
    "TaskstatsError",
    "Timespec",
    "Unsupported",
]

for _cls in (AccessDenied, LocalProtocolError, NetlinkError, NoSuchTask, ProtocolError,
             RemoteProtocolError, TaskstatsError, Unsupported):
    _cls.__module__ = __name__
del _cls

if TYPE_CHECKING:
    from .client import Client


def __getattr__(name: str) -> Any:
    """``Client`` on first use: its imports (sockets, /proc, the kernel client) are
    not needed by what imports only the codec, e.g. taskstatsd's journal writer."""
    if name == "Client":
        from .client import Client  # noqa: PLC0415 - lazy on purpose (see above)

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
