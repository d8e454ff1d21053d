"""Decode-only throughput of the codec on real v16 datagrams (no I/O in the timed loops).

Run as root: ``python benchmarks/decode.py`` (``--help`` for options).

At start it captures, from the live kernel:

* a query reply (CMD_NEW, AGGR_PID{PID, STATS}) for this process, received on
  a bare netlink socket of the benchmark's own;
* a dual-record exit datagram (AGGR_PID + AGGR_TGID, 1172 bytes on v16) of a
  short-lived two-thread child, received on a socket registered for all CPUs.
  If none arrives within a few seconds it is built with ``encode_exit`` from
  live pid and tgid records instead (the output says which).

Then it times, interleaved round by round (medians of ``--reps`` rounds):
``taskstats.decode()`` of each datagram, ``decode_stats()`` of each STATS
payload alone, and informational pieces (the bare ``struct`` unpack of the v16
layout, ``split_messages``, the attribute walk) that bound what decode can cost.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

from _bench import (
    RECV_BUFFER,
    family_id,
    interleave,
    median,
    raw_register,
    raw_socket,
    require_root,
    spread,
    table,
)

from pytaskstats import ExitRecord, TaskStats
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.cpulist import format_cpulist
from pytaskstats.fields import layout
from pytaskstats.kernel import possible_cpus


def query(sock: socket.socket, family: int, scope: str) -> bytes:
    """One live query reply datagram for this process (scope "pid" or "tgid")."""
    encode = ts.encode_get_pid if scope == "pid" else ts.encode_get_tgid
    seq = 1000 + (scope == "tgid")
    sock.send(encode(family, os.getpid(), seq=seq))
    while True:
        data = sock.recv(RECV_BUFFER)
        if any(isinstance(e, ts.StatsReply) and e.seq == seq for e in ts.decode(data, family)):
            return data


def _two_thread_child() -> None:
    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
    os._exit(0)


def capture_exit(sock: socket.socket, family: int, timeout: float = 3.0) -> bytes | None:
    """A live AGGR_PID + AGGR_TGID exit datagram of a child with two threads, or None."""
    cpus = format_cpulist(possible_cpus())
    raw_register(sock, family, cpus)
    try:
        child = os.fork()
        if child == 0:
            _two_thread_child()
        os.waitpid(child, 0)
        sock.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(RECV_BUFFER)
            except TimeoutError:
                continue
            for event in ts.decode(data, family):
                if isinstance(event, ExitRecord) and event.group is not None \
                        and event.tgid == child:
                    return data
        return None
    finally:
        sock.settimeout(5.0)
        raw_register(sock, family, cpus, deregister=True)


def build_exit(sock: socket.socket, family: int) -> bytes:
    """An exit datagram built from live records of this process (the fallback)."""
    task = ts.decode(query(sock, family, "pid"), family)[0]
    group = ts.decode(query(sock, family, "tgid"), family)[0]
    if not isinstance(task, ts.StatsReply) or not isinstance(group, ts.StatsReply):
        sys.exit("could not query this process's records")
    record = ExitRecord(task=task.stats, group=group.stats, pid=os.getpid(), tgid=os.getpid())
    return ts.encode_exit(family, record)


def _stats_bounds(data: bytes, which: int = 0) -> tuple[bytes, int, int]:
    """(data, start, end) of the ``which``-th STATS payload in a one-message datagram."""
    msg = nl.split_messages(data)[0]
    found = []
    for atype, a, b in nl.iter_attrs(data, msg.start + 4, msg.end):
        if atype in (ts.TYPE_AGGR_PID, ts.TYPE_AGGR_TGID):
            found += [(c, d) for t, c, d in nl.iter_attrs(data, a, b) if t == ts.TYPE_STATS]
    start, end = found[which]
    return data, start, end


def per_record(fn: Callable[[], object], loops: int, records: int) -> Callable[[], float]:
    """A contender: run ``fn`` ``loops`` times; return ns per record."""

    def run() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        return (time.perf_counter_ns() - t0) / (loops * records)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--loops", type=int, default=20000, help="calls per round (default 20000)")
    args = parser.parse_args()
    require_root()

    family = family_id()
    with raw_socket() as sock:
        reply = query(sock, family, "pid")
        live_exit = capture_exit(sock, family)
        exit_dgram = live_exit if live_exit is not None else build_exit(sock, family)
    exit_events = ts.decode(exit_dgram, family)
    record = exit_events[0]
    if not isinstance(record, ExitRecord) or record.group is None:
        sys.exit("the exit datagram does not decode to a dual record")
    stats = ts.decode(reply, family)[0]
    if not isinstance(stats, ts.StatsReply):
        sys.exit("the reply does not decode to a StatsReply")

    # the reply as a Connection sees it: in a reused 64 KiB buffer, with its size
    buffer = bytearray(RECV_BUFFER)
    buffer[:len(reply)] = reply
    view, size = memoryview(buffer), len(reply)
    pid_stats = _stats_bounds(reply)
    tgid_stats = _stats_bounds(exit_dgram, 1)
    v16 = layout(stats.stats.version)
    bare = v16.struct_for(len(v16.fields))
    nest_start = nl.split_messages(reply)[0].start + 4

    def walk() -> None:
        for _, a, b in nl.iter_attrs(reply, nest_start, len(reply)):
            for _ in nl.iter_attrs(reply, a, b):
                pass

    loops = args.loops
    cases: list[tuple[str, int, Callable[[], float]]] = [
        ("decode(reply), 64 KiB memoryview + size", 1,
         per_record(lambda: ts.decode(view, family, size), loops, 1)),
        ("decode(reply), bytes", 1, per_record(lambda: ts.decode(reply, family), loops, 1)),
        ("decode(exit datagram, pid + tgid records)", 2,
         per_record(lambda: ts.decode(exit_dgram, family), loops, 2)),
        ("decode_stats(pid STATS payload)", 1,
         per_record(lambda: ts.decode_stats(*pid_stats), loops, 1)),
        ("decode_stats(tgid STATS payload)", 1,
         per_record(lambda: ts.decode_stats(*tgid_stats, scope="tgid"), loops, 1)),
        ("[info] Struct.unpack_from, v16 layout", 1,
         per_record(lambda: bare.unpack_from(reply, pid_stats[1]), loops, 1)),
        ("[info] tuple.__new__(TaskStats, 75 values)", 1,
         per_record(lambda: tuple.__new__(TaskStats, stats.stats), loops, 1)),
        ("[info] empty call (the loop's own cost)", 1, per_record(lambda: None, loops, 1)),
        ("[info] netlink.split_messages(reply)", 1,
         per_record(lambda: nl.split_messages(reply), loops, 1)),
        ("[info] iter_attrs walk of the reply nest", 1, per_record(walk, loops, 1)),
    ]
    contenders = [(name, run) for name, _, run in cases]
    for _, run in contenders:  # warm-up, not counted
        run()
    t0 = time.perf_counter()
    results = interleave(contenders, args.reps)
    wall = time.perf_counter() - t0

    how = "captured live" if live_exit else "BUILT with encode_exit (no live capture)"
    print(f"reply datagram: {len(reply)} bytes, struct v{stats.stats.version}, STATS payload "
          f"{pid_stats[2] - pid_stats[1]} bytes; exit datagram: {len(exit_dgram)} bytes, {how}")
    print(f"{args.reps} interleaved rounds of {loops} calls each, in {wall:.1f} s; "
          f"Python {sys.version.split()[0]}")
    print()
    rows = []
    for name, records, _ in cases:
        med = median(results[name])
        rows.append([name, str(records), f"{med * records / 1000:.2f}", f"{med / 1000:.2f}",
                     f"{1e9 / med:,.0f}", spread(results[name])])
    print(table(["operation", "rec/call", "us/call", "us/record", "records/s", "min/max"],
                rows))


if __name__ == "__main__":
    main()
