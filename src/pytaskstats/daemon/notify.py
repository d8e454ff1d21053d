"""sd_notify without a dependency: one datagram to $NOTIFY_SOCKET, if set."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence


def notify(state: str, fds: Sequence[int] = ()) -> bool:
    """Send ``state`` (e.g. "READY=1"), with ``fds`` for FDSTORE=1, to systemd;
    False when not under systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        socket.send_fds(sock, [state.encode()], list(fds))
    return True


def stored_fds(prefix: str) -> dict[str, int]:
    """Fds systemd passed back (sd_listen_fds: $LISTEN_PID/$LISTEN_FDS/$LISTEN_FDNAMES,
    from fd 3) whose name starts with ``prefix``, keyed by the rest of the name."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return {}
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    return {name[len(prefix):]: 3 + i for i, name in enumerate(names[:count])
            if name.startswith(prefix)}
