"""The I/O side of ``taskstats top``: reads the machine into :class:`~.model.Sample`s.

Each sample: the exit listener drained (without blocking), every task listed from
``/proc/*/task/*``, all of them queried with one pipelined bulk query, then each
process's cgroup and each user's name looked up.  ``costs`` keeps the seconds of
each phase of the last sample.  Reading the kernel's exits, it also learns each
process's cgroup at birth (:mod:`pytaskstats.birthcgroups`), so the exit of a task
too short-lived for any sample still shows its cgroup.  From /proc it also reads each
process's state, parent, nice, resident memory and command line (the command line
once per process start and comm: an exec that keeps the comm keeps the old one
shown), each thread's state when ``thread_states`` is set (the per-thread view), and
the machine's counters for the header.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Iterable

from .. import delayacct, procfs
from ..birthcgroups import BirthWatch
from ..client import Client
from ..errors import AccessDenied, TaskstatsError, Unsupported
from ..listener import Listener
from ..procinfo import ProcInfo, read_cmdline, read_proc_info, read_state
from ..records import ExitRecord, Lost, TaskStats
from ..sysstat import read_system
from .model import Sample

__all__ = ["Sampler", "list_tasks", "read_cgroup"]

MAX_PENDING = 500_000  # exit records held between samples; more are counted as lost


def list_tasks(proc: str = "/proc") -> dict[int, int]:
    """tid -> tgid of every task (thread) in ``/proc/*/task/*``; racing exits skipped."""
    return {tid: tgid for tgid, tid in procfs.list_tasks(proc)}


def read_cgroup(tgid: int, proc: str = "/proc") -> str | None:
    """A process's cgroup: the v2 path, else the first v1 one; None if it is gone."""
    return procfs.cgroup_path(tgid, proc)


def owned_by(tgids: Iterable[int], uid: int, proc: str = "/proc") -> set[int]:
    """The processes among ``tgids`` whose /proc directory ``uid`` owns."""
    out = set()
    for tgid in tgids:
        try:
            if os.stat(f"{proc}/{tgid}").st_uid == uid:
                out.add(tgid)
        except OSError:
            continue
    return out


class Sampler:
    """Gathers samples through ``client``; owns the exit listener (when it may listen).

    ``exits_note``: None when exits are tracked, else why not.  ``scope_note``: set
    when taskstatsd lets this user see only its own tasks.
    """

    def __init__(self, client: Client, *, listen: bool = True, proc: str = "/proc") -> None:
        self.client, self.proc = client, proc
        self.listener: Listener | None = None
        self.exits_note: str | None = "not tracked (--no-exits)"
        self.scope_note: str | None = None
        self.costs: dict[str, float] = {}
        self._exits: list[ExitRecord] = []
        self._exit_cgroups: dict[int, str] = {}  # tgid -> cgroup of exits not yet sampled
        self.births: BirthWatch | None = None
        self._lost = 0
        self._users: dict[int, str] = {}
        self._own_only = False
        self.thread_states = False  # read each thread's state (the per-thread view)
        self._cmdlines: dict[int, tuple[tuple[int, str], str | None]] = {}
        if listen:
            self._open_listener()

    def _open_listener(self) -> None:
        try:
            self.listener = self.client.listen()
            self.exits_note = None
        except (TaskstatsError, OSError) as err:
            self.exits_note = f"not tracked: {err}"
            return
        if self.client.backend == "kernel":
            try:
                self.births = BirthWatch(follow=True)
            except Unsupported:
                self.births = None

    def drain(self) -> None:
        """Move queued exit records into the next sample (never blocks)."""
        if self.listener is None:
            return
        for event in self.listener.drain():
            if isinstance(event, Lost):
                self._lost += event.records
            elif len(self._exits) < MAX_PENDING:
                self._exits.append(event)
                self._born_in(event)
            else:
                self._lost += 1

    def _born_in(self, record: ExitRecord) -> None:
        if self.births is not None:
            path = self.births.at_exit(record)
            if path is not None:
                self._exit_cgroups[record.tgid or record.pid] = path

    def sample(self) -> Sample:
        """Drain exits, list tasks, query them all, look up cgroups and users."""
        t0 = time.perf_counter()
        self.drain()
        t1 = time.perf_counter()
        tgids = list_tasks(self.proc)
        t2 = time.perf_counter()
        start = time.monotonic_ns()
        tasks = self._query(tgids)
        span = time.monotonic_ns() - start
        t3 = time.perf_counter()
        cgroups, self._exit_cgroups = self._exit_cgroups, {}
        for tgid in set(tgids.values()):
            path = read_cgroup(tgid, self.proc)
            if path is not None:
                cgroups[tgid] = path
        exits, self._exits, lost, self._lost = self._exits, [], self._lost, 0
        users = self._names([*(s.ac_uid for s in tasks.values()),
                             *(e.task.ac_uid for e in exits)])
        state = delayacct.status()
        t4 = time.perf_counter()
        procs = self._procs({tgids.get(tid, tid) for tid in tasks})  # those with rows
        states = self._states(tgids) if self.thread_states else {}
        system = read_system(self.proc)
        t5 = time.perf_counter()
        self.costs = {"drain": t1 - t0, "enumerate": t2 - t1, "query": t3 - t2,
                      "cgroups+users": t4 - t3, "proc+system": t5 - t4}
        return Sample(t_ns=start, span_ns=span, tasks=tasks, tgids=tgids, cgroups=cgroups,
                      users=users, exits=exits, lost=lost, delayacct=state, procs=procs,
                      states=states, system=system)

    def _procs(self, tgids: Iterable[int]) -> dict[int, ProcInfo]:
        """/proc's view of each process; command lines read once per (start, comm)."""
        out, cmdlines = {}, {}
        for tgid in tgids:
            info = read_proc_info(tgid, self.proc, cmdline=False)
            if info is None:
                continue
            key = (info.start, info.comm)
            known = self._cmdlines.get(tgid)
            args = known[1] if known and known[0] == key else read_cmdline(tgid, self.proc)
            cmdlines[tgid] = (key, args)
            out[tgid] = info._replace(cmdline=args)
        self._cmdlines = cmdlines
        return out

    def _states(self, tgids: dict[int, int]) -> dict[int, str]:
        """Each thread's state letter (threads gone meanwhile left out)."""
        out = {}
        for tid, tgid in tgids.items():
            state = read_state(tgid, tid, self.proc)
            if state is not None:
                out[tid] = state
        return out

    def _query(self, tgids: dict[int, int]) -> dict[int, TaskStats]:
        """The bulk query; where taskstatsd allows only our own tasks, ask for those
        (skipping any it still refuses: a task of ours that changed credentials)."""
        tids = list(tgids)
        if self._own_only:
            mine = owned_by(set(tgids.values()), os.getuid(), self.proc)
            tids = [t for t, g in tgids.items() if g in mine]
        try:
            return dict(self.client.pids(tids, skip_denied=self._own_only))
        except AccessDenied:
            if self._own_only or self.client.backend != "daemon":
                raise
        self._own_only = True
        self.scope_note = "own tasks only (taskstatsd policy)"
        return self._query(tgids)

    def _names(self, uids: Iterable[int | None]) -> dict[int, str]:
        out = {}
        for uid in set(uids):
            if uid is None:
                continue
            if uid not in self._users:
                try:
                    self._users[uid] = pwd.getpwuid(uid).pw_name
                except KeyError:
                    self._users[uid] = str(uid)
            out[uid] = self._users[uid]
        return out

    def close(self) -> None:
        """Deregister the exit listener (and leave the proc connector)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.births is not None:
            self.births.close()
            self.births = None
