"""Synthetic journal rows for `taskstats top --replay` tests: sample rows of the
samples contract, exit rows as taskstatsd's history gives them, and a source that
answers the replay's bounded queries from them (recording each query).

Run as ``python -m tests.replay_rows`` to show :func:`demo_journal` in the full
screen replay (the tmux test does).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from pytaskstats.cli.top import parse_time
from pytaskstats.top.frame import Row
from pytaskstats.top.replay import Journal, Page, Query, Replay
from pytaskstats.top.replayscreen import run_replay_screen
from pytaskstats.top.view import ViewState

S = 1_000_000_000  # ns
T0 = 1_780_000_000 * S  # CLOCK_REALTIME ns of the first sample of the demo journal
STEP = 60 * S  # sample interval
BTIME = 1_779_990_000  # start second of the demo processes
AGROUP = 0x20
DELTAS = ("ac_utime", "ac_stime", "cpu_count", "cpu_delay_total", "blkio_count",
          "blkio_delay_total", "swapin_count", "swapin_delay_total", "freepages_count",
          "freepages_delay_total", "thrashing_count", "thrashing_delay_total", "compact_count",
          "compact_delay_total", "wpcopy_count", "wpcopy_delay_total", "irq_count",
          "irq_delay_total", "read_bytes", "write_bytes", "read_char", "write_char",
          "read_syscalls", "write_syscalls", "nvcsw", "nivcsw", "ac_minflt", "ac_majflt")


def srow(t_ns: int, tgid: int, comm: str, *, uid: int = 1000, cgroup: str | None = None,
         threads: int = 1, interval_ns: int = STEP, btime: int | None = BTIME,
         **deltas: int | None) -> dict[str, Any]:
    """A sample row: deltas default to 0."""
    row: dict[str, Any] = {"kind": "sample", "time_ns": t_ns, "interval_ns": interval_ns,
                           "tgid": tgid, "comm": comm, "ac_uid": uid, "cgroup": cgroup,
                           "btime": btime, "threads": threads, "running": True,
                           "hiwater_rss": 1024}
    row.update(dict.fromkeys(DELTAS, 0))
    row.update(deltas)
    return row


def xrow(t_ns: int, pid: int, comm: str, *, tgid: int | None = None, age_s: float = 1.0,
         uid: int = 1000, cgroup: str | None = None, ended: bool = True,
         btime: int | None = None, **totals: int) -> dict[str, Any]:
    """An exit row (a v16 task record's fields, context columns): totals default 0."""
    row: dict[str, Any] = {"kind": "exit", "time_ns": t_ns, "cpu": None, "pid": pid,
                           "tgid": tgid or pid, "ended_process": ended, "cgroup": cgroup,
                           "version": 16, "ac_pid": pid, "ac_tgid": tgid or pid,
                           "ac_comm": comm, "ac_uid": uid, "ac_flag": AGROUP if ended else 0,
                           "ac_etime": int(age_s * 1e6), "ac_utime": 0, "ac_stime": 0,
                           "ac_btime": btime or t_ns // S - int(age_s),
                           "ac_btime64": btime or t_ns // S - int(age_s),
                           "cpu_run_virtual_total": 0, "cpu_delay_total": 0,
                           "blkio_delay_total": 0, "swapin_delay_total": 0,
                           "freepages_delay_total": 0, "thrashing_delay_total": 0,
                           "compact_delay_total": 0, "wpcopy_delay_total": 0,
                           "irq_delay_total": 0, "read_bytes": 0, "write_bytes": 0,
                           "nvcsw": 0, "nivcsw": 0}
    row.update(totals)
    return row


class ListSource:
    """Answers replay queries from rows in memory, as taskstatsd would: the time
    range, oldest (or newest) first, cut at ``limit`` (or at ``cap``, with the
    daemon's note); every query is kept in ``queries``."""

    def __init__(self, rows: list[dict[str, Any]], cap: int | None = None) -> None:
        self.rows, self.cap = rows, cap
        self.queries: list[Query] = []

    def __call__(self, query: Query) -> Page:
        self.queries.append(query)
        # "scan": the sample rows of scans, as taskstatsd answers it (not exit tails)
        kinds = {"scan": ("sample", False), "sample": ("sample", None),
                 "exit": ("exit", None)}[query.kind]
        found = [r for r in self.rows if r["kind"] == kinds[0]
                 and (kinds[1] is None or bool(r.get("tail")) == kinds[1])
                 and query.since_ns <= r["time_ns"] < query.until_ns]
        found.sort(key=lambda r: r["time_ns"], reverse=query.newest_first)
        if self.cap is not None and len(found) > self.cap and query.limit > self.cap:
            return Page(found[:self.cap], f"answer cut at {self.cap} rows (history_max_rows)")
        return Page(found[:query.limit])


def demo_journal() -> list[dict[str, Any]]:
    """Three intervals (ending T0, T0+STEP, T0+2*STEP): a database busy on CPU, a
    backup waiting on IO in the second, a short job exiting in the third."""
    rows: list[dict[str, Any]] = []
    for i in range(3):
        t = T0 + i * STEP
        rows.append(srow(t, 100, "postgres", uid=0, cgroup="/system.slice/db.service",
                         threads=4, ac_utime=(30 + 10 * i) * 1_000_000, ac_stime=0,
                         read_bytes=60 << 20, nvcsw=600))
        rows.append(srow(t, 200, "nginx", uid=1000, cgroup="/system.slice/web.service",
                         ac_utime=6_000_000, write_bytes=6 << 20))
    rows.append(srow(T0 + STEP, 300, "backup", uid=1000, cgroup="/user.slice",
                     blkio_delay_total=45 * S, read_bytes=600 << 20))
    rows.append(xrow(T0 + 2 * STEP - 5 * S, 400, "cc1", age_s=3, cgroup="/user.slice",
                     cpu_run_virtual_total=3 * S))
    return rows


def demo_main() -> int:
    """The full-screen replay of :func:`demo_journal` (for the tmux test)."""
    replay = Replay(Journal(ListSource(demo_journal()), T0 - 3600 * S, T0 + 3600 * S))
    assert replay.start()
    return run_replay_screen(replay, ViewState(), parse_time)


def by_pid(rows: Iterable[Row], pid: int) -> Row:
    """The one row of ``pid`` among view rows."""
    found = [r for r in rows if r.pid == pid]
    assert len(found) == 1, found
    return found[0]


if __name__ == "__main__":
    sys.exit(demo_main())
