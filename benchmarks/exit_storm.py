"""Exit events received per second under a fork storm, and how many are lost.

Run as root: ``python benchmarks/exit_storm.py`` (``--help`` for options).

A generator (benchmarks/fork_storm.c, compiled at bench time; or
``--generator python``: os.fork + os._exit(0)) starts ``--jobs`` worker
processes that fork short-lived children as fast as they can, bounded by
``--forks`` (in all) and ``--seconds``; each waits for its children, then the
generator prints the count and its workers' pids and exits.  The listener under
test counts exit records by ``task.ac_ppid``; the storm's are those whose
parent is a worker.

Listeners, one storm each per round, interleaved (medians of ``--reps``):

* pytaskstats: ``Client().listen(per_cpu=True)``, one socket per CPU, every
  record fully decoded into ExitRecord; losses from ``Listener.lost``;
* [info] a bare recv loop on the same kind of sockets (registered per CPU,
  16 MiB buffers), counting datagrams with no decode: how many exits the
  machine can hand to a Python process at all.  It cannot tell storm exits
  from other exits, so its "received" counts every exit datagram.

Each runs in two modes: "live" reads while the storm runs (receive rate =
storm records / time from the first to the last one); "backlog" registers,
lets the whole storm queue up unread, then drains it (receive rate = drain
rate, the listener's capacity; whatever did not fit the socket buffers must
show up as Lost).
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

from _bench import (
    RECV_BUFFER,
    build_c,
    family_id,
    median,
    raw_register,
    raw_socket,
    require_root,
    sk_drops,
    table,
)

from pytaskstats import Client, ExitRecord
from pytaskstats.kernel import possible_cpus

LISTEN_RCVBUF = 16 << 20  # as pytaskstats' Listener
QUIET = 0.5  # seconds without events after the generator ended: the storm is over


class Storm(NamedTuple):
    forks: int
    gen_seconds: float
    received: int
    other: int
    lost: int
    rx_seconds: float
    cpu: float  # listener CPU time / wall time, from the start of reading to the last record


def _wait_all() -> None:
    """With SIGCHLD ignored, wait() fails with ECHILD once every child is gone."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def python_generator(max_forks: int, seconds: float, jobs: int) -> None:
    """The --generator python storm (runs in its own process), like fork_storm.c."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    t0 = time.perf_counter_ns()
    deadline = t0 + int(seconds * 1e9)
    rfd, wfd = os.pipe()
    workers = []
    for j in range(jobs):
        quota = max_forks // jobs + (j < max_forks % jobs)
        pid = os.fork()
        if pid == 0:
            forks = 0
            while forks < quota and time.perf_counter_ns() < deadline:
                if os.fork() == 0:
                    os._exit(0)
                forks += 1
            _wait_all()
            os.write(wfd, f"{forks}\n".encode())
            os._exit(0)
        workers.append(pid)
    os.close(wfd)
    _wait_all()
    with os.fdopen(rfd) as counts:
        forks = sum(int(line) for line in counts)
    print(f"forks={forks} elapsed_ns={time.perf_counter_ns() - t0} eagain=0 "
          f"workers={','.join(map(str, workers))}", flush=True)


def generator_cmd(kind: str, forks: int, seconds: float, jobs: int) -> list[str]:
    if kind == "c":
        return [str(build_c("fork_storm", static=True)), str(forks), str(seconds), str(jobs)]
    return [sys.executable, os.path.abspath(__file__), "--as-generator", str(forks),
            str(seconds), str(jobs)]


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _finish(proc: subprocess.Popen[str]) -> tuple[int, float, set[int]]:
    """The generator's report: forks, seconds, worker pids."""
    out = proc.communicate()[0]
    fields = dict(kv.split("=", 1) for kv in out.split())
    workers = {int(w) for w in fields["workers"].split(",")}
    return int(fields["forks"]), int(fields["elapsed_ns"]) / 1e9, workers


class _Seen(NamedTuple):
    # ac_ppid -> [records, first seen, last seen, listener CPU time when last seen]
    by_parent: dict[int, list[float]]
    start: float  # when reading began
    cpu0: float  # listener CPU time then


def _storm(cmd: list[str], backlog: bool, poll: Callable[[float], list[int]]
           ) -> tuple[subprocess.Popen[str], _Seen]:
    """Run the generator and read with ``poll`` (-> one ac_ppid per exit record) until
    the storm is over.  ``backlog``: start reading only once the generator is done."""
    by_parent: dict[int, list[float]] = {}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    if backlog:
        proc.wait()
    ended = last = 0.0
    cpu0, wall0 = _cpu(), time.perf_counter()
    while True:
        parents = poll(0.05)
        now = time.perf_counter()
        if parents:
            last, cpu = now, _cpu()
            for ppid in parents:
                seen = by_parent.setdefault(ppid, [0, now, now, cpu])
                seen[0] += 1
                seen[2], seen[3] = now, cpu
        if not ended and proc.poll() is not None:
            ended = now
        if ended and not parents and now - max(ended, last) > QUIET:
            break
    return proc, _Seen(by_parent, wall0, cpu0)


def _result(proc: subprocess.Popen[str], seen: _Seen, backlog: bool, lost: int,
            match_all: bool = False) -> Storm:
    forks, gen_seconds, workers = _finish(proc)
    storm = [v for k, v in seen.by_parent.items() if match_all or k in workers]
    received = int(sum(v[0] for v in storm))
    first = seen.start if backlog else min((v[1] for v in storm), default=0.0)
    end = max((v[2] for v in storm), default=first)
    cpu_end = max((v[3] for v in storm), default=seen.cpu0)
    cpu = (cpu_end - seen.cpu0) / (end - seen.start) if end > seen.start else 0.0
    other = int(sum(v[0] for v in seen.by_parent.values())) - received
    return Storm(forks, gen_seconds, received, other, lost, end - first, cpu)


def storm_pytaskstats(cmd: list[str], backlog: bool) -> Storm:
    """One storm, counted by a pytaskstats per-CPU Listener.

    ``backlog``: read nothing until the generator is done, then drain the queue
    (how fast the listener empties a full backlog, and the Lost accounting).
    """
    with Client() as client, client.listen(per_cpu=True) as listener:
        listener.drain()
        lost0 = listener.lost

        def poll(timeout: float) -> list[int]:
            return [e.task.ac_ppid or 0 for e in listener.poll(timeout)
                    if isinstance(e, ExitRecord)]

        proc, seen = _storm(cmd, backlog, poll)
        lost = listener.lost - lost0
    return _result(proc, seen, backlog, lost)


def storm_bare(cmd: list[str], backlog: bool) -> Storm:
    """One storm, counted by bare recv loops on per-CPU registered sockets (no decode)."""
    family = family_id()
    socks: list[tuple[socket.socket, int]] = []
    sel = selectors.DefaultSelector()
    buf = bytearray(RECV_BUFFER)

    def poll(timeout: float) -> list[int]:
        got = 0
        for key, _ in sel.select(timeout):
            recv_into = key.fileobj.recv_into  # type: ignore[union-attr]
            while True:
                try:
                    recv_into(buf, RECV_BUFFER)
                except BlockingIOError:
                    break
                except OSError as err:
                    if err.errno != errno.ENOBUFS:
                        raise
                    continue
                got += 1
        return [-1] * got  # no decode, so no ac_ppid

    try:
        for cpu in possible_cpus():
            sock = raw_socket(LISTEN_RCVBUF)
            socks.append((sock, cpu))
            raw_register(sock, family, str(cpu))
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        drops0 = sum(sk_drops(s) for s, _ in socks)
        proc, seen = _storm(cmd, backlog, poll)
        lost = sum(sk_drops(s) for s, _ in socks) - drops0
        return _result(proc, seen, backlog, lost, match_all=True)
    finally:
        sel.close()
        for sock, cpu in socks:
            sock.setblocking(True)
            try:
                raw_register(sock, family, str(cpu), deregister=True)
            finally:
                sock.close()


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--as-generator":
        python_generator(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="storms per listener (default 3)")
    parser.add_argument("--forks", type=int, default=20000,
                        help="forks per live storm (default 20000)")
    parser.add_argument("--backlog-forks", type=int, default=50000,
                        help="forks per backlog storm (default 50000: more than the "
                        "listener's socket buffers hold)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="time bound of one storm's fork loop (default 10)")
    parser.add_argument("--generator", choices=("c", "python"), default="c",
                        help="fork_storm.c (default) or os.fork in Python")
    parser.add_argument("--jobs", type=int, default=len(possible_cpus()),
                        help="generator worker processes (default: one per CPU)")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare recv listener")
    parser.add_argument("--no-backlog", action="store_true", help="skip the backlog storms")
    args = parser.parse_args()
    require_root()

    live = generator_cmd(args.generator, args.forks, args.seconds, args.jobs)
    backlog = generator_cmd(args.generator, args.backlog_forks, args.seconds, args.jobs)
    listeners: list[tuple[str, Callable[[], Storm]]] = [
        ("pytaskstats Listener, live", partial(storm_pytaskstats, live, backlog=False))]
    if not args.no_backlog:
        listeners.append(("pytaskstats Listener, backlog",
                          partial(storm_pytaskstats, backlog, backlog=True)))
    if not args.no_bare:
        listeners.append(("[info] bare recv, live", partial(storm_bare, live, backlog=False)))
        if not args.no_backlog:
            listeners.append(("[info] bare recv, backlog",
                              partial(storm_bare, backlog, backlog=True)))
    results: dict[str, list[Storm]] = {name: [] for name, _ in listeners}
    t0 = time.perf_counter()
    for rep in range(args.reps):
        for k in range(len(listeners)):
            name, run = listeners[(rep + k) % len(listeners)]
            results[name].append(run())
    wall = time.perf_counter() - t0

    print(f"{args.reps} storms per listener, interleaved, in {wall:.1f} s; generator: "
          f"{args.generator} ({os.path.basename(live[0])}, {args.jobs} workers), at most "
          f"{args.forks} forks (backlog storms: {args.backlog_forks}) or {args.seconds:g} s "
          f"each; {len(possible_cpus())} CPUs; Python {sys.version.split()[0]}")
    print()
    rows = []
    for name, _ in listeners:
        metrics = [_metrics(s) for s in results[name]]
        rows += [_row(f"{name} #{i + 1}", m) for i, m in enumerate(metrics)]
        rows.append(_row(f"{name} MEDIAN", [median(col) for col in zip(*metrics, strict=True)]))
    print(table(["listener / storm", "generated", "gen exits/s", "received", "recv exits/s",
                 "missing", "Lost", "other", "listener CPU"], rows))
    print()
    print("generated = children forked; gen exits/s = forks / generator time; received = "
          "their exit records seen; recv exits/s = received / (first..last record, live) or "
          "/ (drain start..last record, backlog); missing = generated - received; Lost = "
          "what the listener reported lost (kernel drop counts, all exits); other = exits "
          "of unrelated tasks; listener CPU = its CPU time / that same span; MEDIAN = "
          "per column.")


def _metrics(s: Storm) -> list[float]:
    """generated, gen/s, received, recv/s, missing, lost, other, cpu."""
    return [s.forks, s.forks / s.gen_seconds if s.gen_seconds else 0.0, s.received,
            s.received / s.rx_seconds if s.rx_seconds else 0.0, s.forks - s.received,
            s.lost, s.other, s.cpu]


def _row(name: str, m: list[float]) -> list[str]:
    forks, gen_rate, received, rx_rate, missing, lost, other, cpu = m
    return [name, f"{forks:.0f}", f"{gen_rate:,.0f}", f"{received:.0f}", f"{rx_rate:,.0f}",
            f"{missing:.0f} ({missing / forks:.1%})" if forks else "-", f"{lost:.0f}",
            f"{other:.0f}", f"{cpu:.0%}"]


if __name__ == "__main__":
    main()
