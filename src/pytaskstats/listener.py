"""Exit listeners: sockets registered for the exit records of CPU sets, read
without blocking, losses reported as :class:`~pytaskstats.records.Lost` events.
The records come from the kernel (TASKSTATS, CAP_NET_ADMIN) or from taskstatsd's
socket, which answers the same protocol (see :mod:`pytaskstats.kernel`)."""

from __future__ import annotations

import errno
import itertools
import math
import selectors
import time
from collections.abc import Iterable, Iterator
from types import TracebackType

from . import netlink as nl
from . import taskstats as ts
from .cpulist import format_cpulist, parse_cpulist
from .errors import RemoteProtocolError, TaskstatsError, from_errno
from .kernel import LISTEN_RCVBUF, Connection, possible_cpus
from .records import ExitRecord, Lost
from .transport import NetlinkSocket

__all__ = ["BACKLOG_RECORDS", "COALESCE_FRACTION", "DEFAULT_MAX_WAIT_S", "Listener"]

Event = ExitRecord | Lost

DEFAULT_MAX_WAIT_S = 0.1  # an exit reaches a live consumer within about this long...
COALESCE_FRACTION = 0.25  # ...of which a coalescing wait takes at most this share
BACKLOG_RECORDS = 64  # a drain this large is a batch already: the next one does not wait


def coalesce_wait(max_wait: float, since_last: float, last_batch: int) -> float:
    """Seconds to wait after a wake-up before draining, so that one wake-up serves
    many exits: ``max_wait * COALESCE_FRACTION`` when the previous batch ended less
    than that long ago (``since_last`` s: exits come faster than the wait) and was
    smaller than BACKLOG_RECORDS; else 0 (a lone exit is delivered at once, and a
    backlog is drained without waiting)."""
    window = max_wait * COALESCE_FRACTION
    if window <= 0 or since_last >= window or last_batch >= BACKLOG_RECORDS:
        return 0.0
    return window


class Listener:
    """Registered exit listener sockets, one per CPU group, to the kernel or (with
    ``socket_path``) to taskstatsd.

    Iterate it (or call :meth:`poll`) to get :class:`ExitRecord` and
    :class:`Lost` events.  ``received`` and ``lost`` count records.  Closing it
    deregisters every socket.
    """

    def __init__(self, cpus: Iterable[int] | str | None = None, *, per_cpu: bool = False,
                 groups: int = 1, rcvbuf: int = LISTEN_RCVBUF,
                 socket_path: str | None = None, adopt: dict[str, int] | None = None,
                 max_wait: float = DEFAULT_MAX_WAIT_S) -> None:
        """``adopt`` maps a cpulist to an inherited, already registered socket fd
        (registering it again is a no-op for the kernel: duplicates are ignored).
        ``max_wait`` (s, >= 0) bounds how long :meth:`poll` holds an exit back to
        batch it with the next ones (see :func:`coalesce_wait`; 0: never)."""
        cpu_list = _cpus(cpus)
        self.groups = _split(cpu_list, len(cpu_list) if per_cpu else groups)
        self.conns: list[Connection] = []
        self.selector = selectors.DefaultSelector()
        self.received = self.lost = 0
        self.max_wait = max(0.0, max_wait)
        self.waited = 0  # coalescing waits made by poll()
        self._last_end, self._last_size = -math.inf, 0
        self._drops: list[int] = []
        self._early: dict[int, list[Event]] = {}
        family = None
        if adopt:
            with Connection(socket_path=socket_path) as probe:
                family = probe.family
        try:
            for index, group in enumerate(self.groups):
                fd = (adopt or {}).get(format_cpulist(group))
                conn = Connection(rcvbuf, timeout=5.0, socket_path=socket_path, fd=fd,
                                  family=family)
                self.conns.append(conn)
                if fd is not None:
                    self._early[index] = self._take_queued(index)
                conn.register(format_cpulist(group))
                conn.sock.setblocking(False)
                self.selector.register(conn.sock.fileno(), selectors.EVENT_READ, index)
                self._drops.append(conn.sock.drops())
        except BaseException:
            self.close()
            raise

    def _take_queued(self, index: int) -> list[Event]:
        """What an adopted socket holds from before the handover: its exits (and a
        malformed datagram as a Lost), returned by the first drain; a pending overrun
        error is cleared, its drops being in the counter that :meth:`account_drops`
        reports, so that registering again reads its own ACK."""
        conn, group = self.conns[index], self.groups[index]
        out: list[Event] = []
        conn.sock.setblocking(False)
        try:
            while True:
                try:
                    n = conn.sock.recv()
                    out += [e for e in ts.decode(conn.sock.view, conn.family.id, n,
                                                 source=conn.source,
                                                 cpu=group[0] if len(group) == 1 else None)
                            if isinstance(e, ExitRecord)]
                except BlockingIOError:
                    return out
                except RemoteProtocolError:
                    out.append(Lost(records=1, reason="malformed",
                                    cpus=format_cpulist(group)))
                except OSError as err:
                    if err.errno != errno.ENOBUFS:
                        raise from_errno(err.errno or errno.EIO, "exit listener") from err
        finally:
            conn.sock.set_timeout(5.0)

    @property
    def fds(self) -> list[int]:
        """The sockets' file descriptors, for callers that multiplex."""
        return [c.sock.fileno() for c in self.conns]

    @property
    def source(self) -> str:
        """Where the records come from: "kernel" or "daemon"."""
        return self.conns[0].source if self.conns else "kernel"

    def masks(self) -> list[str]:
        """The cpulist each socket listens to, in socket order."""
        return [format_cpulist(g) for g in self.groups]

    def fill(self, index: int) -> float:
        """How full socket ``index``'s receive buffer is (0 to ~1; at 1 the kernel
        drops exits)."""
        sock = self.conns[index].sock
        return sock.fill() if isinstance(sock, NetlinkSocket) else 0.0

    def blind_spot(self) -> str | None:
        """What these sockets cannot see: nothing (overruns arrive as Lost)."""
        return None

    def poll_every(self) -> float | None:
        """None: the kernel's records make the sockets readable."""
        return None

    def drops(self) -> list[int]:
        """The kernel's drop counter of each socket (SO_MEMINFO), as last accounted."""
        return list(self._drops)

    def account_drops(self, since: list[int]) -> list[Lost]:
        """Losses between the counters ``since`` (e.g. saved by a previous owner of
        adopted sockets) and now; the baseline becomes now."""
        out = []
        for index, before in enumerate(since):
            now = self.conns[index].sock.drops()
            if now > before:
                out.append(self._count(index, now - before, "overrun"))
            self._drops[index] = now
        return out

    def poll(self, timeout: float | None = None) -> list[Event]:
        """Wait up to ``timeout`` seconds for events; return what arrived: every
        socket drained in full.  When exits come fast, one wake-up waits a little
        (:func:`coalesce_wait`, bounded by ``max_wait``) so that it serves a batch;
        what arrives meanwhile is returned too, never left behind."""
        ready = [key.data for key, _ in self.selector.select(timeout)]
        if not ready:
            return []
        wait = coalesce_wait(self.max_wait, time.monotonic() - self._last_end,
                             self._last_size)
        if wait:
            time.sleep(wait)
            self.waited += 1
            ready = list(range(len(self.conns)))
        out = [e for i in ready for e, _ in self._drain(i, raw=False)]
        self._last_end, self._last_size = time.monotonic(), len(out)
        return out

    def drain(self) -> list[Event]:
        """Everything already queued on every socket, without waiting."""
        return [e for i in range(len(self.conns)) for e, _ in self._drain(i, raw=False)]

    def drain_raw(self, index: int, limit: int | None = None
                  ) -> list[tuple[Event, bytes | None]]:
        """What is queued on socket ``index``, with each exit's message bytes exactly
        as received (None for losses); at most ``limit`` datagrams when given (the
        rest stay queued: a storm cannot keep one call going)."""
        return self._drain(index, raw=True, limit=limit)

    def _drain(self, index: int, *, raw: bool, limit: int | None = None
               ) -> list[tuple[Event, bytes | None]]:
        conn = self.conns[index]
        early = self._early.pop(index, [])
        self.lost += sum(e.records for e in early if isinstance(e, Lost))
        out: list[tuple[Event, bytes | None]] = [(e, None) for e in early]
        out += [(e, None) for e in conn.pending_exits]
        conn.pending_exits.clear()
        for _ in itertools.repeat(None) if limit is None else range(limit):
            try:
                n = conn.sock.recv()
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise from_errno(err.errno or errno.EIO, "exit listener") from err
                out.append((self._lost(index, "overrun"), None))
                continue
            except RemoteProtocolError:
                out.append((self._count(index, 1, "truncated"), None))
                continue
            out += self._decode(index, n, raw)
        self.received += sum(isinstance(e, ExitRecord) for e, _ in out)
        return out

    def _decode(self, index: int, n: int, keep: bool) -> list[tuple[Event, bytes | None]]:
        conn, group = self.conns[index], self.groups[index]
        cpu = group[0] if len(group) == 1 else None
        raw = bytes(conn.sock.view[:n]) if keep else None
        try:
            events = ts.decode(raw or conn.sock.view, conn.family.id, n, source=conn.source,
                               cpu=cpu)
        except RemoteProtocolError:
            return [(self._count(index, 1, "malformed"), None)]
        out: list[tuple[Event, bytes | None]] = []
        for event in events:
            if isinstance(event, ExitRecord):
                out.append((event, raw if len(events) == 1 else None))
            elif isinstance(event, nl.ErrorReply) and event.error == errno.ENOBUFS:
                # taskstatsd's notice that it dropped records for this slow client
                out.append((self._count(index, event.ext_offset or 1, "overrun"), None))
        return out

    def _lost(self, index: int, reason: str) -> Lost:
        drops = self.conns[index].sock.drops()
        count, self._drops[index] = drops - self._drops[index], drops
        return self._count(index, max(count, 1), reason)

    def _count(self, index: int, records: int, reason: str) -> Lost:
        self.lost += records
        return Lost(records=records, reason=reason, cpus=format_cpulist(self.groups[index]))

    def batches(self) -> Iterator[list[Event]]:
        """What each wake-up brought (:meth:`poll` without a timeout), forever."""
        while True:
            batch = self.poll(None)
            if batch:
                yield batch

    def __iter__(self) -> Iterator[Event]:
        for batch in self.batches():
            yield from batch

    def close(self, *, deregister: bool = True) -> None:
        """Deregister and close every socket (without ``deregister``: only close this
        process's copies, e.g. when systemd's fd store keeps them registered)."""
        for conn, group in zip(self.conns, self.groups, strict=False):
            try:
                if deregister:
                    conn.sock.setblocking(True)
                    conn.register(format_cpulist(group), deregister=True)
            except (OSError, TaskstatsError):
                pass  # closing the socket deregisters it anyway (ECONNREFUSED on next exit)
            conn.close()
        self.conns.clear()
        self.selector.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _cpus(cpus: Iterable[int] | str | None) -> list[int]:
    if cpus is None:
        return possible_cpus()
    if isinstance(cpus, str):
        return parse_cpulist(cpus)
    return sorted(set(cpus))


def _split(cpus: list[int], groups: int) -> list[list[int]]:
    """Split CPUs into ``groups`` contiguous, near-equal groups."""
    groups = max(1, min(groups, len(cpus)))
    size, rem = divmod(len(cpus), groups)
    out, pos = [], 0
    for g in range(groups):
        n = size + (g < rem)
        out.append(cpus[pos:pos + n])
        pos += n
    return out
