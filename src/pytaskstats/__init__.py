"""pytaskstats: Linux taskstats (per-task accounting and delays) for Python.

``from pytaskstats import Client`` for queries and exit listening; the sans-IO
codec lives in :mod:`pytaskstats.netlink`, :mod:`pytaskstats.genetlink` and
:mod:`pytaskstats.taskstats`; the one field table in :mod:`pytaskstats.fields`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
from .records import Bulk, CgroupStats, ExitRecord, Lost, ProcessRecord, TaskStats

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
    "ProcessRecord",
    "ProtocolError",
    "RemoteProtocolError",
    "TaskStats",
    "TaskstatsError",
    "Timespec",
    "Unsupported",
    "process_iter",
]

for _cls in (AccessDenied, LocalProtocolError, NetlinkError, NoSuchTask, ProtocolError,
             RemoteProtocolError, TaskstatsError, Unsupported):
    _cls.__module__ = __name__
del _cls

if TYPE_CHECKING:
    from .client import Client


def process_iter(attrs: Iterable[str] | None = None) -> Iterator[ProcessRecord]:
    """Every process this user may see, with its record: :meth:`Client.process_iter`
    of a ``Client()`` (backend "auto") opened here and closed when the iteration
    ends.  An unknown attr is a ValueError, raised here."""
    from .client import Client  # noqa: PLC0415 - lazy, as below
    from .processes import check_attrs  # noqa: PLC0415 - lazy, as below

    check_attrs(attrs)
    client = Client()
    return _closing(client, client.process_iter(attrs))


def _closing(client: Client, items: Iterator[ProcessRecord]) -> Iterator[ProcessRecord]:
    with client:
        yield from items


def __getattr__(name: str) -> Any:
    """``Client`` on first use: its imports (sockets, /proc, the kernel client) are
    not needed by what imports only the codec, e.g. taskstatsd's journal writer."""
    if name == "Client":
        from .client import Client  # noqa: PLC0415 - lazy on purpose (see above)

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
