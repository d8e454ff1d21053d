"""taskstatsd without the kernel's TASKSTATS: answers from /proc, exits from the proc
connector.

Queries are answered by :class:`~pytaskstats.backends.ProcBackend` (the adapter
``Client("procfs")`` uses too).  Exits come from
the proc connector's events; each exit's record is the task's /proc as read when
the event arrives (it is usually still a zombie), else the newest sample of it: a
read at its fork, or the periodic scan.  Blind spot: a task reaped before its exit
event is read, and not seen alive by a read, cannot be journaled; it is counted
(``lost_unseen``).  Without the proc connector, exits are found by polling: a task
missing from a scan has exited, with its last sampled stats, and anything that
lived between two scans is never seen (said in status).
"""

from __future__ import annotations

import contextlib
import errno
import time

from .. import connector
from .. import taskstats as ts
from ..backends import PROCFS_FAMILY, ProcBackend
from ..errors import NoSuchTask, TaskstatsError, Unsupported, from_errno
from ..procfs import ProcSource, list_tasks
from ..records import AGROUP, ExitRecord, Lost, TaskStats
from ..transport import ConnectorSocket

FAMILY = PROCFS_FAMILY
Event = tuple[ExitRecord | Lost, bytes | None]
# what taskstatsd asks of the kernel, answered from /proc: the one procfs adapter
ProcfsKernel = ProcBackend


class ProcfsExits:
    """Exit records built from proc connector events (or polling) and /proc reads;
    the interface of :class:`~pytaskstats.listener.Listener` that taskstatsd uses."""

    source = "procfs"

    def __init__(self, proc: ProcSource, *, interval_s: float = 1.0) -> None:
        self.proc, self.interval_s = proc, interval_s
        self.last: dict[int, TaskStats] = {}  # tid -> newest sample
        self.gone: dict[int, TaskStats] = {}  # missing from the last scan, exit not yet read
        self.tgid_of: dict[int, int] = {}
        self.unseen = 0
        self._next_scan = 0.0
        try:
            self.sock: ConnectorSocket | None = ConnectorSocket()
            self.sock.setblocking(False)
            self.mode = "proc connector"
        except Unsupported:
            self.sock, self.mode = None, "polling"
        self.scan()

    @property
    def fds(self) -> list[int]:
        """The connector socket, when there is one."""
        return [] if self.sock is None else [self.sock.fileno()]

    def masks(self) -> list[str]:
        """Listeners per CPU group: none here."""
        return []

    def drops(self) -> list[int]:
        """Kernel drop counters: none kept here (overruns arrive as Lost)."""
        return []

    def fill(self, index: int) -> float:
        """Receive buffer fill: not watched here (overruns arrive as Lost)."""
        return 0.0

    def blind_spot(self) -> str:
        """What this source cannot see, for status and docs."""
        if self.sock is None:
            return (f"exits found by polling /proc every {self.interval_s:g} s: tasks that "
                    "lived between two scans are never seen")
        return ("exits from the proc connector with the task's /proc read at exit, else "
                "its newest sample: a task reaped before its exit is read and never "
                "sampled alive is counted as lost_unseen; no delays but CPU wait")

    def poll_every(self) -> float:
        """The /proc scan interval (s): drained that often, readable or not."""
        return self.interval_s

    def scan(self) -> list[Event]:
        """Sample every task; with polling, tasks gone since the last scan exited."""
        now = time.monotonic()
        self._next_scan = now + self.interval_s
        tasks = list_tasks(self.proc.root)
        seen = self.proc.pids(tid for _, tid in tasks)
        gone = {t: s for t, s in self.last.items() if t not in seen}
        out = [] if self.sock is not None else [self._exit(t, None) for t in sorted(gone)]
        # with the connector, keep them one interval for their exit events
        self.gone = gone if self.sock is not None else {}
        self.tgid_of = {**self.tgid_of, **{tid: tgid for tgid, tid in tasks}}
        self.last = dict(seen)
        return [e for e in out if e is not None]

    def drain_raw(self, index: int, limit: int | None = None) -> list[Event]:
        """Exit records of the queued events (at most ``limit`` datagrams of them),
        and of a due scan."""
        out: list[Event] = []
        if time.monotonic() >= self._next_scan:
            out += self.scan()
        budget = -1 if limit is None else limit
        while self.sock is not None and budget != 0:
            budget -= 1
            try:
                n = self.sock.recv()
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise from_errno(err.errno or errno.EIO, "proc connector") from err
                out.append((Lost(records=1, reason="overrun", cpus="all"), None))
                continue
            for event in connector.decode(self.sock.view, n):
                if isinstance(event, connector.Fork):
                    self._remember(event.pid, event.tgid)
                elif isinstance(event, connector.Exit):
                    built = self._exit(event.pid, event.exit_code, event.cpu)
                    if built is not None:
                        out.append(built)
        return out

    def _remember(self, pid: int, tgid: int) -> None:
        self.tgid_of[pid] = tgid
        with contextlib.suppress(TaskstatsError):  # gone already: its exit will say so
            self.last[pid] = self.proc.pid(pid)

    def _exit(self, pid: int, exit_code: int | None, cpu: int | None = None) -> Event | None:
        try:
            stats: TaskStats | None = self.proc.pid(pid)
        except (NoSuchTask, TaskstatsError):
            stats = self.last.get(pid) or self.gone.get(pid)  # reaped: the newest sample
        self.last.pop(pid, None)
        self.gone.pop(pid, None)
        tgid = self.tgid_of.pop(pid, (stats.ac_tgid if stats else None) or pid)
        if stats is None:
            self.unseen += 1
            return Lost(records=1, reason="unseen", cpus="all"), None
        flag = (stats.ac_flag or 0) | (AGROUP if pid == tgid else 0)
        code = stats.ac_exitcode if exit_code is None else exit_code
        task = stats._replace(ac_exitcode=code, ac_flag=flag)
        record = ExitRecord(task=task, pid=pid, tgid=tgid, cpu=cpu)
        return record, ts.encode_exit(FAMILY.id, record)

    def account_drops(self, since: list[int]) -> list[Lost]:
        """Nothing to account: no adopted sockets here."""
        return []

    def close(self, *, deregister: bool = True) -> None:
        """Stop listening."""
        if self.sock is not None:
            self.sock.close()
