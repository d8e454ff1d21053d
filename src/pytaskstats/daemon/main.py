"""``taskstatsd``: kernel exit listeners -> journal + client fan-out; a query socket.

One thread runs the event loop: it drains the kernel listener sockets first (one
per CPU, large buffers), journals and fans out each exit, then serves clients.
Before it judges the exits it drained it reads every proc connector event queued
(forks, execs, id changes), from which the access policy (:mod:`.policy`) and the
tasks' PID namespaces (:mod:`.namespaces`) are learned; each exit is journaled with
its verdict and namespace, which history filters on.
The journal's writer is a process of its own (daemon/journal_writer.py), so
disk stalls never block the kernel reader and the two do not share a GIL.  Loss
is counted everywhere it can happen and shown by ``taskstats status``.  HISTORY is
answered by :mod:`.history`, the start by :mod:`.startup`, the fd store by :mod:`.fdstore`.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .. import __version__, connector, delayacct
from .. import taskstats as ts
from ..birthcgroups import BirthCgroups
from ..errors import TaskstatsError, Unsupported
from ..kernel import possible_cpus
from ..listener import coalesce_wait
from ..metrics import start_for_daemon
from ..metrics.health import DaemonCounters, MetricsSettings
from ..records import ExitRecord, Lost
from ..transport import ConnectorSocket
from . import config as config_mod
from . import unit
from .fdstore import DropsFile, open_sources, store_listeners
from .history import History
from .journal_process import JournalProcess
from .journal_queries import Scope
from .journal_rows import JournalEntry, Tags
from .namespaces import RESCAN_S, NsTracker
from .notify import notify
from .policy import ExitPolicy, Policy
from .sampling import Sampling
from .server import Limits, Peer, Server
from .socketfile import answering
from .startup import Startup, lock_file, raise_nofile, set_nice
from .statedir import UMASK, StateDir
from .status import policy_status, server_counters

if TYPE_CHECKING:
    from ..metrics.service import DaemonMetrics

CONNECTOR_READS = 8192  # most proc connector datagrams read before judging exits
CONNECTOR_RCVBUF = 16 << 20  # bytes
DRAIN_DATAGRAMS = 16  # per kernel socket and read: clients get turns during a storm
DRAIN_SLICE_S = 0.002  # a drain of the kernel's sockets lasts about this long at most...
DRAIN_EVERY_S = 0.002  # ...and comes between clients' turns at least this often...
URGENT_FILL = 0.25  # ...unless a socket is fuller than this: then until it is empty


class Daemon:
    """The running service; see the module docstring."""

    def __init__(self, cfg: config_mod.Config) -> None:
        """Start in an order that leaves nothing behind if a step fails: kernel
        sources, state directory and lock, proc connector (exit policy), client
        socket, journal writer, metrics."""
        self.cfg = cfg
        self.started_ns = time.time_ns()
        self.counters = {"received": 0, "lost_overrun": 0, "lost_truncated": 0,
                         "lost_malformed": 0, "urgent_drains": 0, "coalesced_waits": 0,
                         "namespace_unknown": 0, "history_timeouts": 0, "history_refused": 0}
        self.births = BirthCgroups()  # each exit's cgroup, learned at its process's birth
        self.metrics: DaemonMetrics | None = None
        self.running = True
        self.last_served = 0  # the client served last (round-robin)
        self.max_wait = cfg.max_wait_ms / 1000  # see coalesce_wait
        self._batch, self._batch_end, self._last_batch = 0, -math.inf, 0
        self.in_fd_store = False
        self.fork_events: ConnectorSocket | None = None
        self.fork_events_failed = False
        self.exit_policy: ExitPolicy | None = None
        self.exit_policy_off = ""  # why the exit policy is off ("" while on)
        self.namespaces = NsTracker()
        self.accepting = True  # the client socket is watched (see _accept)
        self.drops = DropsFile(cfg.state_dir)
        set_nice(cfg.nice)
        raise_nofile()
        with contextlib.ExitStack() as undo:
            self.kernel, self.listener, self._stored = open_sources(cfg)
            undo.callback(self.kernel.close)
            undo.callback(self.listener.close, deregister=not self._stored)
            if answering(cfg.socket):  # before the disk is touched; bind() checks again
                raise TaskstatsError(f"a daemon already answers on {cfg.socket}: stop it "
                                     "first, or give this one another --socket")
            self.state = StateDir(cfg.state_dir)
            undo.callback(self.state.remove)
            self.lock = lock_file(self.state.join("taskstatsd.lock"))
            undo.callback(os.close, self.lock)
            self._watch_forks()
            undo.callback(self._close_forks)
            cpus = possible_cpus()
            self.server = Server(
                cfg.socket, self.kernel, policy=Policy(cfg.admin_gid),
                limits=Limits(cfg.max_clients, cfg.max_request_bytes, cfg.client_queue_records,
                              cfg.max_clients_per_uid, cfg.admin_reserved_clients,
                              cfg.client_reply_bytes, cfg.client_queue_bytes,
                              cfg.client_turn_messages, cfg.client_turn_ms / 1000,
                              cfg.max_held_fds, int(cfg.history_max_mb * (1 << 20))),
                status=self.status, history=self.history, possible_cpus=cpus,
                nr_cpu_ids=cpus[-1] + 1)
            undo.callback(self.server.close)
            self.journal = self._journal(cfg)
            undo.callback(self.journal.stop)
            self.sampling = Sampling(self.kernel, cfg.sample_interval_s,
                                     self.journal.submit_samples, self.namespaces,
                                     cgroups=cfg.cgroups)
            self._history = History(self.journal, cfg, self.counters, self._drain_kernel,
                                    lambda: self.running, alive=self.sampling.running)
            self.selector = selectors.DefaultSelector()
            if self.fork_events is not None:
                self.selector.register(self.fork_events.fileno(), selectors.EVENT_READ,
                                       ("forks", 0))
            for index, fd in enumerate(self.listener.fds):
                self.selector.register(fd, selectors.EVENT_READ, ("kernel", index))
            self.selector.register(self.server.sock, selectors.EVENT_READ, ("accept", 0))
            for lost in self.drops.downtime(self.listener, self._stored):
                self._lost(lost)
            if cfg.metrics_listen:
                self.metrics = start_for_daemon(
                    MetricsSettings(cfg.metrics_listen, cfg.metrics_interval_s,
                                    cfg.metrics_cgroup_depth, cfg.metrics_max_series,
                                    cfg.metrics_groups),
                    self.listener, self.health)
            undo.pop_all()

    def _journal(self, cfg: config_mod.Config) -> JournalProcess:
        return JournalProcess(
            self.state.join("journal.sqlite3"), synchronous=cfg.synchronous,
            retention_s=cfg.retention_days * 86400 if cfg.retention_days else None,
            max_bytes=int(cfg.max_journal_mb * 1024 * 1024) if cfg.max_journal_mb else None,
            low_free_pct=cfg.low_free_pct, resume_free_pct=cfg.resume_free_pct)

    # ------------------------------------------------------------ loop

    def run(self, ready: Callable[[], None] = lambda: None) -> None:
        """Serve until SIGTERM/SIGINT; ``ready`` is called once serving."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.in_fd_store = store_listeners(self.listener)
        self.drops.save(self.listener)
        for index in range(len(self.listener.fds)):
            self.ingest(index)  # what adopted sockets held (read while re-registering)
        notify("READY=1\nSTATUS=listening")
        ready()
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
        if self.exit_policy is not None:
            self.exit_policy.tick()
        every = self.listener.poll_every()
        if every is not None:
            timeout = min(timeout, every)
            self.ingest(0)  # a due /proc scan
        if not self.accepting:
            timeout = min(timeout, self._resume_accepting())
        busy = [p.id for p in self.server.peers.values() if self.server.has_work(p)]
        events = self.selector.select(0 if busy else min(timeout, self.sampling.due_in()))
        if not busy and every is None and self._exits_woke(events):
            wait = coalesce_wait(self.max_wait, time.monotonic() - self._batch_end,
                                 self._last_batch)
            if wait:  # exits come fast: let this wake-up serve a batch
                time.sleep(wait)
                self.counters["coalesced_waits"] += 1
                events = self.selector.select(0)
        events.sort(key=lambda ev: ev[0].data[0] != "kernel")
        turns = dict.fromkeys(busy, 0)
        if events and events[0][0].data[0] == "kernel":
            self._drain_kernel()
        for key, mask in events:
            kind, index = key.data
            if kind == "kernel":
                continue  # drained above
            if kind == "forks":
                self._forks()
            elif kind == "accept":
                self._accept()
            else:
                turns[index] = turns.get(index, 0) | mask
        self._serve(turns)
        self._flush_all()
        self.sampling.step()  # a slice of a scan of live tasks, when one is due
        if self._batch:
            self._batch_end, self._last_batch, self._batch = time.monotonic(), self._batch, 0

    @staticmethod
    def _exits_woke(events: list[tuple[selectors.SelectorKey, int]]) -> bool:
        """Whether the kernel's exit sockets or the proc connector woke the loop."""
        return any(key.data[0] in ("kernel", "forks") for key, _ in events)

    def _serve(self, turns: dict[int, int]) -> None:
        """Give each ready client one bounded turn (Server.readable), draining the
        kernel's sockets between turns every DRAIN_EVERY_S (and at once, until empty,
        when one is fuller than URGENT_FILL): clients and exits share the loop during
        a storm, and no client delays the exits by more than one turn.  Clients with
        a new request go before those still working through a datagram of many (who
        had a turn last step), each group round-robin from where the last step
        stopped."""
        peers = self.server.peers
        order = sorted(turns, key=lambda pid: (pid in peers and peers[pid].batch is not None,
                                               pid <= self.last_served, pid))
        drained = time.monotonic()
        for pid in order:
            self._client(self.server.peers.get(pid), turns[pid])
            self.last_served = pid
            if time.monotonic() - drained >= DRAIN_EVERY_S:
                self._drain_kernel()
                drained = time.monotonic()

    def _drain_kernel(self) -> None:
        """Drain the kernel's sockets round-robin for about DRAIN_SLICE_S; then each
        fuller than URGENT_FILL until it is empty (``urgent_drains``).  What is left
        waits in the kernel's buffers for the next drain."""
        sockets = list(range(len(self.listener.fds)))
        until = time.monotonic() + DRAIN_SLICE_S
        while sockets and time.monotonic() < until:
            sockets = [i for i in sockets if self.ingest(i)]
        for i in range(len(self.listener.fds)):
            while self.listener.fill(i) > URGENT_FILL and self.ingest(i):
                self.counters["urgent_drains"] += 1

    def ingest(self, index: int) -> bool:
        """Journal and fan out what is queued on kernel socket ``index``, at most
        DRAIN_DATAGRAMS (the loop drains again between clients' turns); False when
        nothing was queued."""
        now = time.time_ns()
        drained = self.listener.drain_raw(index, DRAIN_DATAGRAMS)
        # every connector event of these tasks was queued before their exit records
        complete = self._forks() if drained and self.fork_events is not None else True
        for event, raw in drained:
            if isinstance(event, Lost):
                self._lost(event)
                self.drops.save(self.listener)
                continue
            self.counters["received"] += 1
            self._batch += 1
            # raw is None only when a datagram held several messages: re-encode
            data = raw if raw is not None else ts.encode_exit(self.kernel.family.id, event)
            cgroup = self._cgroup(event)
            tags = self._tags(event, complete)
            if self.sampling.exit(event, now, cgroup, tags):  # its totals are sampled
                tags = tags._replace(sampled=True)
            self.journal.submit(JournalEntry(event, now, cgroup, data, tags))
            if self.metrics is not None:
                self.metrics.on_exit(event, cgroup)
            self.server.publish(event, data, tags.owner_sees)
        self.sampling.send_tails()  # committed with the exits marked sampled
        self.journal.push()
        return bool(drained)

    def _tags(self, record: ExitRecord, complete: bool) -> Tags:
        """The access policy's facts about an exit (see :mod:`.policy`)."""
        sees = (None if self.exit_policy is None
                else self.exit_policy.owner_sees(record, complete))
        pidns, ids = self.namespaces.columns(record.pid, record.tgid, record.task.ac_ppid,
                                             record.ended_process)
        if pidns is None or (ids is not None and ids.startswith("/")):
            self.counters["namespace_unknown"] += 1
        return Tags(sees, pidns, ids)

    def _watch_forks(self) -> None:
        """Subscribe to the proc connector's events (forks, execs, id changes): the
        exit policy and the namespaces of tasks are learned from them (see
        :mod:`.policy`, :mod:`.namespaces`).  Without them the exit policy is off:
        non-admin listeners get no exit record."""
        try:
            self.fork_events = ConnectorSocket(CONNECTOR_RCVBUF, events=(
                connector.PROC_EVENT_FORK | connector.PROC_EVENT_EXEC
                | connector.PROC_EVENT_UID | connector.PROC_EVENT_GID))
        except Unsupported as err:
            self.fork_events_failed = True
            self.exit_policy_off = f"no proc connector ({err})"
            return
        self.fork_events.setblocking(False)
        self.exit_policy = ExitPolicy()
        self.namespaces.scan()

    def _close_forks(self) -> None:
        if self.fork_events is not None:
            self.fork_events.close()
            self.fork_events = None

    def _forks(self) -> bool:
        """Read the queued proc connector events, at most CONNECTOR_READS datagrams;
        True when the queue was emptied.  An overrun (ENOBUFS) makes the exit policy
        start over (the periodic scans still place the namespaces' survivors); any
        other error ends the watch for good, and the exit policy with it, rather than
        spin on it."""
        events = self.fork_events
        if events is None:
            return False
        for _ in range(CONNECTOR_READS):
            try:
                n = events.recv()
            except BlockingIOError:
                return True
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    if self.exit_policy is not None:
                        self.exit_policy.overrun()
                    continue
                self._forks_failed(err)
                return False
            for event in connector.decode(events.view, n):
                self._learn(event)
        return False

    def _learn(self, event: connector.Event) -> None:
        if self.exit_policy is not None:
            self.exit_policy.event(event)
        if self.cfg.cgroups:  # else nobody asks: no /proc read per fork and exec
            self.births.on_event(event)
        if isinstance(event, connector.Fork):
            self.namespaces.fork(event)
            self.server.learn_fork(event.pid)

    def _forks_failed(self, err: OSError) -> None:
        print(f"taskstatsd: proc connector events failed ({err}); namespaces are placed "
              "by periodic scans only and non-admin listeners get no exit records",
              file=sys.stderr)
        events = self.fork_events
        assert events is not None
        self.selector.unregister(events.fileno())
        events.close()
        self.fork_events, self.fork_events_failed = None, True
        self.exit_policy, self.exit_policy_off = None, f"proc connector failed ({err})"

    def _lost(self, lost: Lost) -> None:
        key = f"lost_{lost.reason}"
        self.counters[key] = self.counters.get(key, 0) + lost.records
        self.journal.note_lost(lost.reason, lost.records)
        if self.metrics is not None:
            self.metrics.on_lost(lost)

    def _cgroup(self, record: ExitRecord) -> str | None:
        return self.births.at_exit(record) if self.cfg.cgroups else None

    def _accept(self) -> None:
        """Accept new clients; when accept() failed for want of fds or memory, stop
        watching the client socket (a pending connection would wake every turn)
        until ``accept_paused_until`` or until a client leaves."""
        for peer in self.server.accept_some():
            self.selector.register(peer.sock, selectors.EVENT_READ, ("peer", peer.id))
        if self.server.accept_paused_until > time.monotonic():
            self.selector.unregister(self.server.sock)
            self.accepting = False

    def _resume_accepting(self) -> float:
        """Watch the client socket again once the pause is over (0 returned), else
        the seconds left of it."""
        left = self.server.accept_paused_until - time.monotonic()
        if left > 0:
            return left
        self.selector.register(self.server.sock, selectors.EVENT_READ, ("accept", 0))
        self.accepting = True
        return 0.0

    def _client(self, peer: Peer | None, mask: int) -> None:
        """A client's turn: its requests (when it may send more or has some pending),
        then what it can receive."""
        if peer is None:
            return
        alive = True
        if mask & selectors.EVENT_WRITE:
            alive = self.server.flush(peer)
        if alive and (self.server.has_work(peer) or (
                mask & selectors.EVENT_READ and self.server.wants_requests(peer))):
            alive = self.server.readable(peer)
        if not alive:
            self._drop(peer)

    def _flush_all(self) -> None:
        """Send what each client can take; watch for reading only clients whose
        queued answers are within bounds (backpressure), for writing those whose
        socket is full."""
        for peer in list(self.server.peers.values()):
            if (peer.replies or peer.records or peer.dropped_unsent) and not peer.want_write \
                    and not self.server.flush(peer):
                self._drop(peer)
                continue
            events = ((selectors.EVENT_READ if self.server.wants_requests(peer) else 0)
                      | (selectors.EVENT_WRITE if peer.want_write else 0))
            # none: a half-answered datagram, served from `busy` in step()
            if events and events != self.selector.get_key(peer.sock).events:
                self.selector.modify(peer.sock, events, ("peer", peer.id))

    def _drop(self, peer: Peer) -> None:
        self.selector.unregister(peer.sock)
        self.server.drop(peer)
        self.server.accept_paused_until = 0.0  # an fd came free: accept again

    # ------------------------------------------------------------ answers

    def status(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The health document `taskstats status` shows; ``params["flush"]`` (checked
        by :func:`.schema.check`) flushes the journal first, so that ``received``
        equals journaled + dropped + lost in it (nothing is received meanwhile)."""
        if params and params.get("flush"):
            self.journal.flush()
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
                       "blind_spot": self.listener.blind_spot()},
            "listeners": {"kernel_sockets": len(self.listener.fds),
                          "client_listeners": self.server.listeners.count()},
            "clients": len(self.server.peers),
            "metrics": None if self.metrics is None else self.metrics.url,
            "exit_policy": policy_status(self.exit_policy, self.exit_policy_off),
            "counters": {**self.counters, **self.journal.counters(), **self.sampling.counters,
                         **(self.exit_policy.counters if self.exit_policy else {}),
                         **server_counters(self.server),
                         "cgroup_from_birth": self.births.from_birth,
                         "cgroup_unknown": self.births.unknown},
            "gaps": [list(g) for g in self.journal.queries.gaps()[-10:]],
        }

    def health(self) -> DaemonCounters:
        """This run's loss counters and the journal's as its writer last told them
        (never waits): what the metrics serve."""
        journal = self.journal.health
        return DaemonCounters(
            received=self.counters["received"],
            lost={k[len("lost_"):]: v for k, v in self.counters.items() if k.startswith("lost_")},
            journal_written=journal.counters.get("journaled", 0),
            journal_dropped={k[len("dropped_"):]: v for k, v in journal.counters.items()
                             if k.startswith("dropped_")},
            journal_suspended=journal.suspended,
            client_dropped=self.server.dropped_client_records,
            samples=(self.sampling.counters["samples_taken"],
                     journal.counters.get("samples_journaled", 0),
                     self.sampling.counters["sample_overruns"]))

    def history(self, params: dict[str, Any], scope: Scope | None = None
                ) -> tuple[list[dict[str, Any]], str]:
        """Journal rows for `taskstats history` (see :class:`.history.History`)."""
        return self._history(params, scope)

    def close(self) -> None:
        """Deregister from the kernel (unless systemd keeps the sockets), close
        clients, flush and close the journal."""
        self.drops.save(self.listener)
        if self.metrics is not None:
            self.metrics.close()
        self.listener.close(deregister=not self.in_fd_store)
        self._close_forks()
        self.server.close()
        self.kernel.close()
        self.journal.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``taskstatsd``: 0 once stopped, 1 if the start failed, 2 for
    a usage error.  Every setting is checked before the disk is touched or the
    process forks; errors are one line on stderr."""
    try:
        args = config_mod.parse_args(argv)
        cfg = config_mod.from_args(args)
        if args.print_unit:
            sys.stdout.write(unit.render(cfg, args))
            return 0
    except config_mod.ConfigError as err:
        print(f"taskstatsd: {err}", file=sys.stderr)
        return 2
    os.umask(UMASK)  # before the first open: the journal is private
    startup = Startup(detach=not cfg.foreground)
    stop_asked: list[int] = []  # a SIGTERM during the start stops it once started
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop_asked.append(signum))
    try:
        daemon = Daemon(cfg)
    except TaskstatsError as err:
        return startup.failed(str(err))
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        return startup.failed(f"{where}{err.strerror or err}")
    print(f"taskstatsd: listening on {cfg.socket}, journal in {cfg.state_dir}",
          file=sys.stderr)
    if daemon.metrics is not None:
        print(f"taskstatsd: metrics at {daemon.metrics.url}", file=sys.stderr)
    daemon.running = not stop_asked
    daemon.run(ready=startup.ready)
    return 0
