"""Rows from what the top model accounted: one per live thread, one per live
process (its threads' deltas plus its exited threads' last deltas), and the rows of
exited threads and processes.

The model hands over plain values: each live thread as a :class:`Unit` (with its
delta since the previous sample, None when it has none), a live process's exited
threads summed as :class:`Dead`, and a process's identity as last sampled as
:class:`Meta`.  A live row whose id is that of an exited row kept on the view (its
zombie) is left out (:func:`hidden`).  Pure functions, no state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, TypedDict

from ..procinfo import ProcInfo
from ..records import ExitRecord, TaskStats
from .counters import Counters, counters, derive, get_counted, summed
from .frame import Row, Sample


class Unit(NamedTuple):
    """A live thread of a frame, with its delta since the previous sample."""

    tid: int
    tgid: int
    uid: int | None
    comm: str
    btime: int | None
    totals: Counters
    delta: Counters | None
    peak_kb: int | None = None  # hiwater_rss


class Dead(NamedTuple):
    """Exit records seen for a live process's threads, summed."""

    sums: Counters
    threads: int
    seen: int  # update number


class Meta(NamedTuple):
    """A process as last sampled, to name it when its exit comes."""

    comm: str
    uid: int | None
    cgroup: str | None
    seen: int  # update number


def user_of(users: Mapping[int, str], uid: int | None) -> str:
    """The user name of ``uid`` from ``users``, else the number, else "?"."""
    if uid is None:
        return "?"
    return users.get(uid, str(uid))


def _bytes(kb: int | None) -> int | None:
    return None if kb is None else kb * 1024


def _peak(kb: int | None, info: ProcInfo | None) -> int | None:
    """The peak RSS in bytes, at least the RSS read after it (a peak read before
    the memory grew further)."""
    peak, rss = _bytes(kb), None if info is None else info.rss
    return peak if rss is None or (peak is not None and peak >= rss) else rss


def peak_of(task: TaskStats) -> int | None:
    """A record's peak RSS (hiwater_rss) in bytes; None without an mm (0)."""
    return _bytes(task.hiwater_rss or None)


class ProcFields(TypedDict, total=False):
    """The Row fields /proc gives."""

    state: str | None
    ppid: int
    nice: int | None
    start: int
    rss: int | None
    cmdline: str | None


def _proc(info: ProcInfo | None) -> ProcFields:
    """The Row fields from /proc (none when the process is gone)."""
    if info is None:
        return {}
    return {"state": info.state, "ppid": info.ppid, "nice": info.nice, "start": info.start,
            "rss": info.rss, "cmdline": info.cmdline}


def exited_thread(rec: ExitRecord, tgid: int, sample: Sample, seconds: float,
                  values: tuple[float | None, ...]) -> Row:
    """The row of a thread from its exit record: its final totals and ``values``."""
    task = rec.task
    return Row(pid=rec.pid, tgid=tgid, uid=task.ac_uid,
               user=user_of(sample.users, task.ac_uid), command=task.ac_comm or "?",
               cgroup=sample.cgroups.get(tgid), threads=1, exited=True,
               seconds=seconds, totals=counters(task), values=values,
               lifetime=None if task.ac_etime is None else task.ac_etime / 1e6,
               peak_rss=peak_of(task))


def exited_process(rec: ExitRecord, tgid: int, *, dead: Dead, meta: Meta | None,
                   sample: Sample, seconds: float, values: tuple[float | None, ...]
                   ) -> Row:
    """Final totals: the group record's fields where it carries them (all threads
    ever), else the sums of the thread exits seen."""
    task, group = rec.task, rec.group
    totals = dead.sums
    if group is not None:
        carried = get_counted(group)
        totals = tuple(d if g is None else g for d, g in zip(totals, carried, strict=True))
    lifetime = task.ac_tgetime or task.ac_etime
    comm, uid, cgroup = (meta.comm, meta.uid, meta.cgroup) if meta else (
        task.ac_comm or "?", task.ac_uid, sample.cgroups.get(tgid))
    return Row(pid=tgid, tgid=tgid, uid=uid, user=user_of(sample.users, uid), command=comm,
               cgroup=cgroup, threads=dead.threads, exited=True, seconds=seconds,
               totals=totals, values=values,
               lifetime=None if lifetime is None else lifetime / 1e6, peak_rss=peak_of(task))


def hidden(key: int, btime: int | None, exited: Mapping[int, int | None]) -> bool:
    """A live row that is the zombie of an exited one (same id, start within 2 s);
    ``exited``: id -> start second of the exited rows kept."""
    if key not in exited:
        return False
    other = exited[key]
    return other is None or btime is None or abs(other - btime) <= 2


def thread_rows(units: Sequence[Unit], sample: Sample, seconds: float,
                measured: tuple[bool, ...], exited: Mapping[int, int | None]
                ) -> tuple[Row, ...]:
    """One row per live thread (its state its own, the rest of /proc its process's;
    a thread's nice is its own, so only the leader's is known)."""
    out = []
    for u in units:
        if hidden(u.tid, u.btime, exited):
            continue
        info = sample.procs.get(u.tgid)
        proc = _proc(info)
        if u.tid != u.tgid:
            proc["state"], proc["nice"] = sample.states.get(u.tid), None
        out.append(Row(pid=u.tid, tgid=u.tgid, uid=u.uid, user=user_of(sample.users, u.uid),
                       command=u.comm, cgroup=sample.cgroups.get(u.tgid), threads=1,
                       exited=False, seconds=seconds, totals=u.totals,
                       values=derive(u.delta, seconds, measured),
                       peak_rss=_peak(u.peak_kb, info), **proc))
    return tuple(out)


def process_rows(units: Sequence[Unit], sample: Sample, *, extra: Mapping[int, Counters],
                 dead: Mapping[int, Counters], seconds: float, measured: tuple[bool, ...],
                 exited: Mapping[int, int | None]) -> tuple[Row, ...]:
    """One row per live process: its threads' deltas plus its exited threads' last
    deltas (``extra``, per tgid); totals over live threads plus the thread exits
    seen (``dead``, per tgid)."""
    groups: dict[int, list[Unit]] = {}
    for u in units:
        groups.setdefault(u.tgid, []).append(u)
    out = []
    for tgid, members in groups.items():
        leader = next((u for u in members if u.tid == tgid), members[0])
        if hidden(tgid, leader.btime, exited):
            continue
        deltas = [u.delta for u in members if u.delta is not None]
        totals = [u.totals for u in members]
        if tgid in extra:
            deltas.append(extra[tgid])
        if tgid in dead:
            totals.append(dead[tgid])
        out.append(Row(pid=tgid, tgid=tgid, uid=leader.uid,
                       user=user_of(sample.users, leader.uid), command=leader.comm,
                       cgroup=sample.cgroups.get(tgid),
                       threads=sum(sample.folds.get(u.tid, 1) for u in members), exited=False,
                       seconds=seconds, totals=summed(totals),
                       values=derive(summed(deltas) if deltas else None, seconds, measured),
                       peak_rss=_peak(leader.peak_kb, sample.procs.get(tgid)),
                       **_proc(sample.procs.get(tgid))))
    return tuple(out)
