"""``taskstatsd``: kernel exit listeners -> journal + client fan-out; a query socket.

One thread runs the event loop: it drains the kernel listener sockets first (one
per CPU, large buffers), journals and fans out each exit, then serves clients.
The journal's writer is a process of its own (daemon/journal_process.py), so
disk stalls never block the kernel reader and the two do not share a GIL.  Loss
is counted everywhere it can happen and shown by ``taskstats status``.
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import __version__, connector, delayacct
from .. import taskstats as ts
from ..errors import TaskstatsError, Unsupported
from ..kernel import Connection, Listener, possible_cpus
from ..metrics import start_for_daemon
from ..procfs import ProcSource, cgroup_path
from ..records import ExitRecord, Lost
from ..transport import ConnectorSocket
from . import config as config_mod
from .journal import JournalEntry
from .journal_process import JournalProcess
from .namespaces import RESCAN_S
from .notify import notify, stored_fds
from .policy import Policy
from .procmode import ProcfsExits, ProcfsKernel
from .server import Limits, Peer, Server

if TYPE_CHECKING:
    from ..metrics.service import DaemonMetrics

FDSTORE_PREFIX = "taskstats-cpus-"
HISTORY_KEYS = ("since_ns", "until_ns", "comm", "uid", "pid", "tgid", "cgroup", "group_by",
                "sort", "limit", "bucket_s", "fields", "plausible")


class Daemon:
    """The running service; see the module docstring."""

    def __init__(self, cfg: config_mod.Config) -> None:
        self.cfg = cfg
        self.started_ns = time.time_ns()
        self.counters = {"received": 0, "lost_overrun": 0, "lost_truncated": 0,
                         "lost_malformed": 0}
        self.cgroups: dict[int, str | None] = {}
        self.metrics: DaemonMetrics | None = None
        os.makedirs(cfg.state_dir, mode=0o755, exist_ok=True)
        self.lock = _lock(os.path.join(cfg.state_dir, "taskstatsd.lock"))
        self.journal = JournalProcess(
            os.path.join(cfg.state_dir, "journal.sqlite3"), synchronous=cfg.synchronous,
            retention_s=cfg.retention_days * 86400 if cfg.retention_days else None,
            max_bytes=int(cfg.max_journal_mb * 1024 * 1024) if cfg.max_journal_mb else None,
            low_free_pct=cfg.low_free_pct, resume_free_pct=cfg.resume_free_pct)
        self.kernel, self.listener = self._sources(cfg)
        cpus = possible_cpus()
        self.server = Server(
            cfg.socket, self.kernel, policy=Policy(cfg.admin_gid),
            limits=Limits(cfg.max_clients, cfg.max_request_bytes, cfg.client_queue_records),
            status=self.status, history=self.history, possible_cpus=cpus,
            nr_cpu_ids=cpus[-1] + 1)
        self.selector = selectors.DefaultSelector()
        for index, fd in enumerate(self.listener.fds):
            self.selector.register(fd, selectors.EVENT_READ, ("kernel", index))
        self.selector.register(self.server.sock, selectors.EVENT_READ, ("accept", 0))
        self.running = True
        self.in_fd_store = False
        self.fork_events: ConnectorSocket | None = None
        self.fork_events_failed = False
        self._account_downtime(getattr(self, "_account_downtime_later", {}))
        if cfg.metrics_listen:
            self.metrics = start_for_daemon(self)

    def _sources(self, cfg: config_mod.Config) -> tuple[Connection | ProcfsKernel,
                                                          Listener | ProcfsExits]:
        """The kernel's TASKSTATS when there (or asked), else /proc and the proc
        connector (see :mod:`.procmode`)."""
        if cfg.source not in ("auto", "kernel", "procfs"):
            raise TaskstatsError(f"unknown source {cfg.source!r}: auto, kernel or procfs")
        if cfg.source != "procfs":
            try:
                kernel = Connection()
            except Unsupported:
                if cfg.source == "kernel":
                    raise
            else:
                stored = stored_fds(FDSTORE_PREFIX)
                listener = Listener(per_cpu=True, rcvbuf=cfg.rcvbuf_bytes, adopt=stored)
                self._account_downtime_later = stored
                return kernel, listener
        proc = ProcSource()
        return ProcfsKernel(proc), ProcfsExits(proc, interval_s=cfg.procfs_interval_s)

    # ------------------------------------------------------------ fd store

    def _drops_file(self) -> str:
        return os.path.join(self.cfg.state_dir, "listener-drops.json")

    def _account_downtime(self, stored: dict[str, int]) -> None:
        """Count what adopted sockets dropped while no daemon read them."""
        if not stored:
            return
        try:
            with open(self._drops_file()) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            saved = {}
        now = self.listener.drops()
        since = [saved.get(m, d) if m in stored else d
                 for m, d in zip(self.listener.masks(), now, strict=True)]
        for lost in self.listener.account_drops(since):
            self._lost(lost)

    def _save_drops(self) -> None:
        tmp = self._drops_file() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(zip(self.listener.masks(), self.listener.drops(), strict=True)), f)
        os.replace(tmp, self._drops_file())

    def _store_listeners(self) -> bool:
        """Hand the registered sockets to systemd's fd store (FDPOLL=0: an overrun's
        POLLERR must not make systemd drop them)."""
        stored = False
        if not isinstance(self.listener, Listener):
            return stored  # the proc connector has no registration to keep
        for mask, fd in zip(self.listener.masks(), self.listener.fds, strict=True):
            stored = notify(f"FDSTORE=1\nFDNAME={FDSTORE_PREFIX}{mask}\nFDPOLL=0",
                            [fd]) or stored
        return stored

    # ------------------------------------------------------------ loop

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.in_fd_store = self._store_listeners()
        self._save_drops()
        for index in range(len(self.listener.fds)):
            self.ingest(index)  # what adopted sockets held (read while re-registering)
        notify("READY=1\nSTATUS=listening")
        try:
            while self.running:
                self.step(1.0)
        finally:
            notify("STOPPING=1")
            self.close()

    def _stop(self, *_: object) -> None:
        self.running = False

    def step(self, timeout: float) -> None:
        """One turn of the loop: kernel first, then clients."""
        if self.server.namespaced_listeners():
            timeout = min(timeout, RESCAN_S)
            self.server.refresh_views()
            self._watch_forks()
        if isinstance(self.listener, ProcfsExits):
            timeout = min(timeout, self.listener.interval_s)
            self.ingest(0)  # a due /proc scan
        events = self.selector.select(timeout)
        events.sort(key=lambda ev: ev[0].data[0] != "kernel")
        for key, mask in events:
            kind, index = key.data
            if kind == "kernel":
                self.ingest(index)
            elif kind == "forks":
                self._forks()
            elif kind == "accept":
                self._accept()
            else:
                self._client(self.server.peers.get(index), mask)
        self._flush_all()

    def ingest(self, index: int) -> None:
        """Journal and fan out everything queued on kernel socket ``index``."""
        now = time.time_ns()
        for event, raw in self.listener.drain_raw(index):
            if isinstance(event, Lost):
                self._lost(event)
                self._save_drops()
                continue
            self.counters["received"] += 1
            # raw is None only when a datagram held several messages: re-encode
            data = raw if raw is not None else ts.encode_exit(self.kernel.family.id, event)
            cgroup = self._cgroup(event)
            self.journal.submit(JournalEntry(event, now, cgroup, data))
            if self.metrics is not None:
                self.metrics.on_exit(event, cgroup)
            self.server.publish(event, data)
        self.journal.push()

    def _watch_forks(self) -> None:
        """Subscribe to fork events once a namespaced client listens, so its short-lived
        tasks are placed at birth (see :mod:`.namespaces`)."""
        if self.fork_events is not None or self.fork_events_failed:
            return
        try:
            self.fork_events = ConnectorSocket(1 << 20)
        except Unsupported:
            self.fork_events_failed = True
            return
        self.fork_events.setblocking(False)
        self.selector.register(self.fork_events.fileno(), selectors.EVENT_READ, ("forks", 0))

    def _forks(self) -> None:
        assert self.fork_events is not None
        while True:
            try:
                n = self.fork_events.recv()
            except BlockingIOError:
                return
            except OSError:
                continue  # an overrun: the periodic scans still place the survivors
            for event in connector.decode(self.fork_events.view, n):
                if isinstance(event, connector.Fork):
                    self.server.learn_fork(event.pid)

    def _lost(self, lost: Lost) -> None:
        key = f"lost_{lost.reason}"
        self.counters[key] = self.counters.get(key, 0) + lost.records
        self.journal.note_lost(lost.reason, lost.records)
        if self.metrics is not None:
            self.metrics.on_lost(lost)

    def _cgroup(self, record: ExitRecord) -> str | None:
        if not self.cfg.cgroups:
            return None
        tgid = record.tgid or record.pid
        if tgid not in self.cgroups:
            if len(self.cgroups) > 65536:
                self.cgroups.clear()
            self.cgroups[tgid] = cgroup_path(tgid)
        path = self.cgroups[tgid]
        if record.ended_process:
            self.cgroups.pop(tgid, None)
        return path

    def _accept(self) -> None:
        peer = self.server.accept()
        if peer is not None:
            self.selector.register(peer.sock, selectors.EVENT_READ, ("peer", peer.id))

    def _client(self, peer: Peer | None, mask: int) -> None:
        if peer is None:
            return
        alive = self.server.readable(peer) if mask & selectors.EVENT_READ else True
        if alive and mask & selectors.EVENT_WRITE:
            alive = self.server.flush(peer)
        if not alive:
            self.selector.unregister(peer.sock)
            self.server.drop(peer)

    def _flush_all(self) -> None:
        for peer in list(self.server.peers.values()):
            if not self.server.flush(peer):
                self.selector.unregister(peer.sock)
                self.server.drop(peer)
                continue
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if peer.want_write else 0)
            if self.selector.get_key(peer.sock).events != events:
                self.selector.modify(peer.sock, events, ("peer", peer.id))

    # ------------------------------------------------------------ answers

    def status(self) -> dict[str, Any]:
        """The health document `taskstats status` shows."""
        now = time.time_ns()
        try:
            version = self.kernel.query("pid", os.getpid()).version
        except TaskstatsError:
            version = None
        return {
            "daemon": {"pid": os.getpid(), "version": __version__,
                       "started_ns": self.started_ns, "uptime_s": (now - self.started_ns) / 1e9,
                       "socket": self.cfg.socket, "state_dir": self.cfg.state_dir},
            "kernel": {"family_id": self.kernel.family.id, "struct_version": version,
                       "delayacct": delayacct.status(), "source": self.kernel.source,
                       "blind_spot": (self.listener.blind_spot()
                                      if isinstance(self.listener, ProcfsExits) else None)},
            "listeners": {"kernel_sockets": len(self.listener.fds),
                          "client_listeners": self.server.listeners.count()},
            "clients": len(self.server.peers),
            "metrics": None if self.metrics is None else self.metrics.url,
            "counters": {**self.counters, **self.journal.counters(),
                         "client_dropped": self.server.dropped_client_records,
                         "namespace_unattributed": self.server.unattributed()},
            "gaps": [list(g) for g in self.journal.gaps()[-10:]],
        }

    def history(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Journal rows for `taskstats history` (validated keys only); with any of
        bucket_s, fields or plausible: sums per time bucket and/or group
        (Journal.aggregate)."""
        unknown = set(params) - set(HISTORY_KEYS) - {"totals"}
        if unknown:
            raise ValueError(f"unknown history parameters {sorted(unknown)}; known: "
                             f"{', '.join(HISTORY_KEYS)}, totals")
        query = {k: v for k, v in params.items() if k in HISTORY_KEYS}
        if {"bucket_s", "fields", "plausible"} & set(query):
            clash = sorted({"sort", "limit", "totals"} & set(params))
            if clash:
                raise ValueError(f"bucket_s, fields and plausible do not combine with "
                                 f"{', '.join(clash)}")
            self.journal.flush()
            return self.journal.aggregate(**query)
        self.journal.flush()
        if params.get("totals"):
            query.pop("group_by", None)
            query.pop("sort", None)
            query.pop("limit", None)
            return [self.journal.totals(**query)]
        return self.journal.query(**query)

    def close(self) -> None:
        """Deregister from the kernel (unless systemd keeps the sockets), close
        clients, flush and close the journal."""
        self._save_drops()
        if self.metrics is not None:
            self.metrics.close()
        self.listener.close(deregister=not self.in_fd_store)
        self.server.close()
        self.kernel.close()
        self.journal.stop()


def _lock(path: str) -> int:
    """Hold an exclusive lock on ``path`` for the life of the process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TaskstatsError(f"another taskstatsd holds {path}: one daemon per state "
                             "directory") from None
    return fd


def _daemonize() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``taskstatsd``."""
    cfg = config_mod.load(argv)
    if not cfg.foreground:
        _daemonize()  # before any thread or socket exists
    try:
        daemon = Daemon(cfg)
    except TaskstatsError as err:
        print(f"taskstatsd: {err}", file=sys.stderr)
        return 1
    print(f"taskstatsd: listening on {cfg.socket}, journal in {cfg.state_dir}",
          file=sys.stderr)
    if daemon.metrics is not None:
        print(f"taskstatsd: metrics at {daemon.metrics.url}", file=sys.stderr)
    daemon.run()
    return 0
