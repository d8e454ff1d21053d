"""What the subcommands share that is about the command line: the Client from the
global options, JSON lines on stdout, notes on stderr.  Text formatting shared with
top and the reports lives in :mod:`pytaskstats.textfmt`.
"""

from __future__ import annotations

import errno
import json
import sys
from typing import Any

from .. import delayacct
from ..client import Client
from .args import printable


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


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # one encoder: dumps() makes one a call


def json_line(obj: object) -> str:
    """One compact JSON document and a newline."""
    return _COMPACT.encode(obj) + "\n"


def print_json(obj: object) -> None:
    """One compact JSON document on a line of stdout."""
    sys.stdout.write(json_line(obj))


def warn_delayacct(state: bool | None) -> None:
    """Say on stderr that delays are not measured, when that is so."""
    if state is False:
        print(f"taskstats: note: {delayacct.OFF_NOTE}", file=sys.stderr)


def cannot_write(path: str, err: OSError) -> str:
    """Why a file (a report, a trace) was not written, and what to do."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        todo = "free space on its device, or give a file on another one"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        todo = "give a file this user may write"
    else:
        todo = "give another file"
    return f"cannot write {printable(path)}: {err.strerror or err}: {todo}"
