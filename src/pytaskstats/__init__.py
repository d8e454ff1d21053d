"""pytaskstats: Linux taskstats (per-task accounting and delays) for Python.

``from pytaskstats import Client`` for queries and exit listening; the sans-IO
codec lives in :mod:`pytaskstats.netlink`, :mod:`pytaskstats.genetlink` and
:mod:`pytaskstats.taskstats`; the one field table in :mod:`pytaskstats.fields`.
"""

from .client import Client
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
from .records import CgroupStats, ExitRecord, Lost, TaskStats

__version__ = "0.1.0"
__all__ = [
    "FIELDS",
    "AccessDenied",
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
