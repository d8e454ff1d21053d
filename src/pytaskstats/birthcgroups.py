"""Each process's cgroup, recorded at birth from the proc connector's events.

A task that lives a few milliseconds is reaped before anyone can read its
``/proc/PID/cgroup`` at exit, so its exit record would land in cgroup "unknown".
:class:`BirthCgroups` learns every process's cgroup from fork and exec events
and answers for the exit record.  At fork: the child's ``/proc`` entry while it
is there (unless it reads the root, see ROOT), else its parent's cgroup (a child
starts in its parent's): read now (at most every FRESH_S per parent), else the
parent's known one.

Contract: feed it every connector event (:meth:`on_event`) and, before
attributing a batch of exit records, every event queued until then: a task's
fork event is queued before its exit record exists.  Then :meth:`at_exit` for
each exit record.  A migration is caught by re-reading at exec and at the
process's last exit while ``/proc`` still shows it.

Memory is bounded: one entry per live process born since the start (pruned at its
exit; at most ``max_live``, the oldest evicted: its exit is then read at exit),
at most ``max_recent`` entries of processes the connector saw exit whose exit
record is still to come, and MAX_FRESH parents; paths are interned (shared).
"""

from __future__ import annotations

import errno
import select
import sys
import threading
import time
from collections.abc import Callable

from . import connector
from .errors import Unsupported
from .procfs import cgroup_path
from .records import ExitRecord
from .transport import ConnectorSocket

__all__ = ["BirthCgroups", "BirthWatch"]

MAX_LIVE = 1 << 18  # entries of live processes (~30 MB at most)
MAX_RECENT = 1 << 14  # entries of exited processes whose exit record is pending
READS = 1 << 14  # connector datagrams read per drain (what is queued, bounded)
RCVBUF = 4 << 20  # bytes: about 6,000 queued events (a datagram takes ~700)
FOLLOW_POLL_S = 0.25  # the following thread checks for close() this often
FRESH_S = 0.05  # a parent's cgroup read this recently is reused for its next children
MAX_FRESH = 4096  # parents so remembered
# a child read at fork in the root cgroup may not be in its own yet: the kernel sends
# the fork event before it attaches the child to its cgroup (measured: 2 in 20,000)
ROOT = "/"


class BirthCgroups:
    """tgid -> cgroup path of processes, learned at birth; see the module docstring.

    ``read``: tgid -> its cgroup path now, None when gone (default: /proc);
    ``clock``: monotonic seconds (a parent read within FRESH_S is not read again:
    a fork storm's children, gone before they are read, cost one read each).
    Counters: ``births`` (processes seen forked), ``inherited`` (forks whose child
    was already gone: the parent's cgroup), ``from_birth`` (exits answered from the
    map when /proc no longer showed the process), ``read_at_exit``, ``unknown``.
    """

    def __init__(self, read: Callable[[int], str | None] = cgroup_path, *,
                 max_live: int = MAX_LIVE, max_recent: int = MAX_RECENT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read, self.clock = read, clock
        self.max_live, self.max_recent = max_live, max_recent
        self.live: dict[int, str] = {}
        self.recent: dict[int, str] = {}  # exited per the connector, exit record pending
        self.fresh: dict[int, tuple[float, str]] = {}  # parent tgid -> (read at, path)
        self.births = self.inherited = self.from_birth = self.read_at_exit = 0
        self.unknown = 0

    def on_event(self, event: connector.Event) -> None:
        """Learn from one proc connector event."""
        if isinstance(event, connector.Fork):
            if event.pid == event.tgid:  # a new process (a new thread shares its cgroup)
                self._born(event.tgid, event.ppid)
        elif isinstance(event, connector.Exec):
            path = self.read(event.tgid)
            if path is not None:
                self._store(event.tgid, path)
        elif isinstance(event, connector.Exit) and event.pid == event.tgid:
            path = self.live.pop(event.tgid, None)
            if path is not None:
                if len(self.recent) >= self.max_recent:
                    del self.recent[next(iter(self.recent))]
                self.recent[event.tgid] = path

    def at_exit(self, record: ExitRecord) -> str | None:
        """The cgroup path of the process of ``record`` (None: not known); forgets the
        process at its last exit."""
        tgid = record.tgid or record.pid
        ended = record.ended_process
        if ended is None:
            ended = record.pid == tgid
        if not ended:
            return self._thread(tgid, record.task.ac_ppid)
        known = self.recent.pop(tgid, None)
        reused = known is not None and tgid in self.live  # a new process has the pid
        if known is None:
            known = self.live.pop(tgid, None)
        now = None if reused else self.read(tgid)
        if now is not None:
            self.read_at_exit += 1
            return now
        if known is not None:
            self.from_birth += 1
            return known
        return self._parent(record.task.ac_ppid)

    def __len__(self) -> int:
        """Processes remembered (live and pending)."""
        return len(self.live) + len(self.recent)

    def _born(self, tgid: int, ppid: int) -> None:
        self.births += 1
        path = self.read(tgid)
        if path is None or path == ROOT:  # gone, or read too early (see ROOT): the parent's
            self.inherited += path is None
            path = self._parents(ppid) or path
        if path is not None:
            self._store(tgid, path)

    def _parents(self, ppid: int) -> str | None:
        """A forking parent's cgroup now: read at most every FRESH_S."""
        now = self.clock()
        fresh = self.fresh.get(ppid)
        if fresh is not None and now - fresh[0] < FRESH_S:
            return fresh[1]
        path = self._current(ppid)
        if path is not None:
            if len(self.fresh) >= MAX_FRESH:
                self.fresh.clear()
            self.fresh[ppid] = (now, path)
        return path

    def _current(self, tgid: int) -> str | None:
        """A live process's cgroup now (remembered), else what is known of it."""
        path = self.read(tgid)
        if path is not None:
            if tgid in self.live:
                self.live[tgid] = path
            return path
        return self.live.get(tgid)

    def _thread(self, tgid: int, ppid: int | None) -> str | None:
        """A thread's exit: its process's cgroup (read once if not known)."""
        path = self.recent.get(tgid) or self.live.get(tgid)
        if path is None:
            path = self.read(tgid) or self._parent(ppid)
            if path is not None:
                self._store(tgid, path)
        return path

    def _parent(self, ppid: int | None) -> str | None:
        path = self._current(ppid) if ppid else None
        if path is None:
            self.unknown += 1
        return path

    def _store(self, tgid: int, path: str) -> None:
        if tgid not in self.live and len(self.live) >= self.max_live:
            del self.live[next(iter(self.live))]
        self.live[tgid] = sys.intern(path)


class BirthWatch:
    """A proc connector socket of its own feeding :class:`BirthCgroups` (for a process
    that reads exits itself with CAP_NET_ADMIN): :meth:`at_exit` first reads what is
    queued (the births of the exits at hand came before them).  ``follow=True`` also
    reads from a thread of its own, for a reader that handles exits only now and then
    (``top``): /proc must be read while the tasks are young.  ``overruns`` counts
    ENOBUFS (events lost: those exits fall back to reading /proc at exit)."""

    def __init__(self, births: BirthCgroups | None = None, *, follow: bool = False) -> None:
        """Raises Unsupported without a proc connector (or the right to listen)."""
        self.births = births if births is not None else BirthCgroups()
        try:
            self.sock = ConnectorSocket(RCVBUF)
        except OSError as err:
            raise Unsupported(f"proc connector: {err.strerror}") from err
        self.sock.setblocking(False)
        self.overruns = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if follow:
            self._thread = threading.Thread(target=self._follow, name="birthcgroups",
                                            daemon=True)
            self._thread.start()

    def at_exit(self, record: ExitRecord) -> str | None:
        """:meth:`BirthCgroups.at_exit` after reading the queued events."""
        with self.lock:
            self._drain(READS)
            return self.births.at_exit(record)

    def drain(self, reads: int = READS) -> None:
        """Feed up to ``reads`` queued datagrams to ``births``."""
        with self.lock:
            self._drain(reads)

    def close(self) -> None:
        """Stop following and unsubscribe (close the socket)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sock.close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock.fileno()], [], [], FOLLOW_POLL_S)
            if ready:
                self.drain()

    def _drain(self, reads: int) -> None:
        for _ in range(reads):
            try:
                n = self.sock.recv()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1
                continue
            for event in connector.decode(self.sock.view, n):
                self.births.on_event(event)
