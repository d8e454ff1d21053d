"""taskstatsd's sources of exits and what it keeps of them across a restart besides
its journal: the kernel listener sockets in systemd's fd store (adopted at the next
start), and their drop counts in ``listener-drops.json``, so a restart counts what
the kernel dropped while no daemon read them."""

from __future__ import annotations

import contextlib
import json
import os
import sys

from ..backends import Answers, YieldsExits
from ..errors import AccessDenied, Unsupported
from ..kernel import Connection
from ..listener import Listener
from ..procfs import ProcSource
from ..records import Lost
from .config import Config
from .notify import notify, stored_fds
from .procmode import ProcfsExits, ProcfsKernel

__all__ = ["FDSTORE_PREFIX", "DropsFile", "open_sources", "store_listeners"]

FDSTORE_PREFIX = "taskstats-cpus-"


class DropsFile:
    """The listeners' drop counts (socket cpulist -> messages) in ``state_dir``."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "listener-drops.json")
        self.unsaved = False  # the last save failed (said once)

    def downtime(self, listener: YieldsExits, stored: dict[str, int]) -> list[Lost]:
        """What the adopted sockets (``stored``: name -> fd) dropped since saved."""
        if not stored:
            return []
        try:
            with open(self.path) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            saved = {}
        now = listener.drops()
        since = [saved.get(m, d) if m in stored else d
                 for m, d in zip(listener.masks(), now, strict=True)]
        return list(listener.account_drops(since))

    def save(self, listener: YieldsExits) -> None:
        """Save ``listener``'s drop counts (written, then renamed); a failure (a
        full disk) is said once and never raised: the file keeps its last counts."""
        tmp = self.path + ".tmp"
        data = json.dumps(dict(zip(listener.masks(), listener.drops(), strict=True)))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with open(fd, "w") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if not self.unsaved:
                print(f"taskstatsd: cannot save {self.path}: {err.strerror}", file=sys.stderr)
            self.unsaved = True
        else:
            self.unsaved = False


def store_listeners(listener: YieldsExits) -> bool:
    """Hand the registered sockets to systemd's fd store (FDPOLL=0: an overrun's
    POLLERR must not make systemd drop them); whether any was taken."""
    stored = False
    # sockets with a registration to keep: the proc connector's has none (no mask)
    for mask, fd in zip(listener.masks(), listener.fds, strict=False):
        stored = notify(f"FDSTORE=1\nFDNAME={FDSTORE_PREFIX}{mask}\nFDPOLL=0", [fd]) or stored
    return stored


def open_sources(cfg: Config) -> tuple[Answers, YieldsExits,
                                       dict[str, int]]:
    """The kernel's TASKSTATS when there (or asked), else /proc and the proc
    connector (see :mod:`.procmode`); and the sockets adopted from the fd store
    (name -> fd; empty: none, the listener registered anew).  With source auto, a
    kernel that refuses the listener for want of privilege (EPERM: its queries need
    the same CAP_NET_ADMIN) means /proc, said in one line on stderr."""
    if cfg.source != "procfs":
        try:
            kernel = Connection()
        except Unsupported:
            if cfg.source == "kernel":
                raise
        else:
            stored = stored_fds(FDSTORE_PREFIX)
            try:
                listener = Listener(per_cpu=True, rcvbuf=cfg.rcvbuf_bytes, adopt=stored)
            except AccessDenied as err:
                kernel.close()
                if cfg.source == "kernel":
                    raise AccessDenied(f"the kernel refused the exit listener: "
                                       f"permission denied: {NEEDS}") from err
                print("taskstatsd: the kernel refused the exit listener (EPERM: its "
                      "taskstats need root or CAP_NET_ADMIN); serving from /proc "
                      "instead (--source kernel to insist)", file=sys.stderr)
            except BaseException:
                kernel.close()
                raise
            else:
                return kernel, listener, stored
    proc = ProcSource()
    return ProcfsKernel(proc), ProcfsExits(proc, interval_s=cfg.procfs_interval_s), {}


NEEDS = ("taskstatsd needs root or CAP_NET_ADMIN for the kernel's taskstats (its exit "
         "records and queries); --source procfs runs without, from /proc")
