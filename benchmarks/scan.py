"""Per-task cost of a full scan of all threads, with full decode, side by side.

Run as root: ``python benchmarks/scan.py`` (``--help`` for options).

Contenders, interleaved round by round (medians of ``--reps`` rounds):

* C floor: benchmarks/c_floor.c, one TASKSTATS_CMD_GET per task (send, recv
  into 64 KiB, header check, STATS located), timed inside the C program;
* pytaskstats pipelined: ``Client.pids(ids)``, full decode into TaskStats;
* pytaskstats one by one: ``Client.pid(i)`` for each id;
* pyroute2: ``TaskStats.get_pid_stat(pid)``, with the reply's nest, pid and
  STATS attributes fetched (``get_attr``) and one field read, which forces its
  lazy decode of the whole struct.

Informational rows ("[info]", not contenders) split the costs: the C program
with 128 requests per send(), and bare Python socket loops that only send, recv
and match sequence numbers (no decode), once with Python's socket timeout
(``settimeout``, as pytaskstats' sockets have: CPython adds a poll() to every
send and recv) and once blocking with the kernel's SO_RCVTIMEO.

``--profile`` prints cProfile tables of the two pytaskstats contenders instead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable

from _bench import (
    RECV_BUFFER,
    build_c,
    bulk_scan,
    family_id,
    interleave,
    median,
    raw_socket,
    require_root,
    run_main,
    single_scan,
    spread,
    table,
    task_ids,
    timed,
)

from pytaskstats import Client
from pytaskstats import taskstats as ts

TARGET_PIPELINED = 1.0  # x the C floor
TARGET_SINGLE = 1.5  # x the C floor
TARGET_VS_PYROUTE2 = 40.0  # pyroute2's time / pytaskstats pipelined
C_WINDOW = 128

_NLMSG_ERROR = 2
_HEADER = struct.Struct("=IHHI")


def c_floor(exe: str, family: int, ids: list[int], repeat: int, window: int = 1
            ) -> Callable[[], float]:
    """The C program's own ns/task (its process start-up is not timed)."""
    stdin = "\n".join(map(str, ids))

    def run() -> float:
        out = subprocess.run([exe, str(family), str(repeat), str(window)], input=stdin,
                             capture_output=True, text=True, check=True).stdout
        fields = dict(kv.split("=", 1) for kv in out.split())
        return float(fields["ns_per_task"])

    return run


def pyroute2_scan(ids: list[int], queries: int) -> tuple[Callable[[], int], Callable[[], None]]:
    """pyroute2's TaskStats; returns (scan, close)."""
    from pyroute2 import TaskStats  # noqa: PLC0415 - optional dependency
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    sock = TaskStats()
    sock.bind()
    work = (ids * (queries // len(ids) + 1))[:queries]

    def scan() -> int:
        for pid in work:
            try:
                msg = sock.get_pid_stat(pid)[0]
            except NetlinkError:
                continue
            aggr = msg.get_attr("TASKSTATS_TYPE_AGGR_PID")
            aggr.get_attr("TASKSTATS_TYPE_PID")
            aggr.get_attr("TASKSTATS_TYPE_STATS")["cpu_count"]
        return len(work)

    return scan, sock.close


def raw_pipelined(sock: socket.socket, family: int, ids: list[int], repeat: int,
                  window: int) -> Callable[[], int]:
    """Python's transport floor: batched sends, recv_into per reply, seq check only."""
    encode = ts.encode_get_fast("pid")
    buf = bytearray(RECV_BUFFER)
    unpack = _HEADER.unpack_from

    def scan() -> int:
        seq = 1 << 20
        for _ in range(repeat):
            for i in range(0, len(ids), window):
                chunk = ids[i:i + window]
                sock.send(b"".join(encode(family, pid, seq + k) for k, pid in enumerate(chunk)))
                want = seq + len(chunk)
                while seq < want:
                    sock.recv_into(buf, RECV_BUFFER)
                    _, mtype, _, rseq = unpack(buf, 0)
                    if rseq == seq and mtype in (family, _NLMSG_ERROR):
                        seq += 1
        return repeat * len(ids)

    return scan


def raw_single(sock: socket.socket, family: int, ids: list[int], repeat: int
               ) -> Callable[[], int]:
    """Python's transport floor for one query per round trip."""
    encode = ts.encode_get_fast("pid")
    buf = bytearray(RECV_BUFFER)
    unpack = _HEADER.unpack_from

    def scan() -> int:
        seq = 1 << 24
        for _ in range(repeat):
            for pid in ids:
                sock.send(encode(family, pid, seq))
                while True:
                    sock.recv_into(buf, RECV_BUFFER)
                    if unpack(buf, 0)[3] == seq:
                        break
                seq += 1
        return repeat * len(ids)

    return scan


def profile(client: Client, ids: list[int], repeat: int, top: int) -> None:
    for label, scan in (("pipelined Client.pids()", bulk_scan(client.pids, ids, repeat)),
                        ("one by one Client.pid()", single_scan(client.pid, ids, repeat))):
        prof = cProfile.Profile()
        t0 = time.perf_counter_ns()
        prof.runcall(scan)
        ns = (time.perf_counter_ns() - t0) / (repeat * len(ids))
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("tottime").print_stats(top)
        print(f"=== cProfile: {label}, {repeat * len(ids)} queries, "
              f"{ns / 1000:.1f} us/task under the profiler ===")
        print("\n".join(line for line in out.getvalue().splitlines()
                        if line.strip() and not line.startswith(("   Ordered", "Ordered"))))
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--queries", type=int, default=20000,
                        help="queries per round per contender, at least (default 20000)")
    parser.add_argument("--pyroute2-queries", type=int, default=2000,
                        help="queries per round for pyroute2 (default 2000; it is slow)")
    parser.add_argument("--no-pyroute2", action="store_true", help="skip pyroute2")
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile tables of the pytaskstats contenders and exit")
    args = parser.parse_args()
    require_root()

    ids = task_ids()
    repeat = max(1, math.ceil(args.queries / len(ids)))
    client = Client()
    if args.profile:
        profile(client, ids, repeat, 18)
        return

    exe = str(build_c("c_floor"))
    family = family_id()
    # bare sockets of our own for the no-decode loops: one with Python's socket
    # timeout (as pytaskstats' sockets have), one blocking with SO_RCVTIMEO
    raw = raw_socket(timeout=5.0)
    raw_k = raw_socket(timeout=None, rcvtimeo=5.0)
    contenders: list[tuple[str, Callable[[], float]]] = [
        ("C floor (send+recv per task)", c_floor(exe, family, ids, repeat)),
        ("pytaskstats pipelined pids()", timed(bulk_scan(client.pids, ids, repeat))),
        ("pytaskstats one by one pid()", timed(single_scan(client.pid, ids, repeat))),
        (f"[info] C, {C_WINDOW} requests per send", c_floor(exe, family, ids, repeat, C_WINDOW)),
        ("[info] Python socket, pipelined, settimeout",
         timed(raw_pipelined(raw, family, ids, repeat, C_WINDOW))),
        ("[info] Python socket, pipelined, SO_RCVTIMEO",
         timed(raw_pipelined(raw_k, family, ids, repeat, C_WINDOW))),
        ("[info] Python socket, one by one, settimeout",
         timed(raw_single(raw, family, ids, repeat))),
        ("[info] Python socket, one by one, SO_RCVTIMEO",
         timed(raw_single(raw_k, family, ids, repeat))),
    ]
    close_pyroute2: Callable[[], None] | None = None
    if not args.no_pyroute2:
        try:
            scan, close_pyroute2 = pyroute2_scan(ids, args.pyroute2_queries)
        except ImportError:
            print("pyroute2 is not installed (pip install pyroute2): skipping it\n")
        else:
            contenders.insert(3, ("pyroute2 TaskStats.get_pid_stat()", timed(scan)))

    # warm-up round (imports, caches, socket buffers), not counted
    for _, run in contenders:
        run()
    t0 = time.perf_counter()
    results = interleave(contenders, args.reps)
    wall = time.perf_counter() - t0
    if close_pyroute2 is not None:
        close_pyroute2()
    raw.close()
    raw_k.close()

    floor = median(results[contenders[0][0]])
    pipelined = median(results["pytaskstats pipelined pids()"])
    targets = {"pytaskstats pipelined pids()": f"<= {TARGET_PIPELINED:.1f}x",
               "pytaskstats one by one pid()": f"<= {TARGET_SINGLE:.1f}x"}
    rows = []
    for name, _ in contenders:
        med = median(results[name])
        rows.append([name, f"{med / 1000:.2f}", spread(results[name]), f"{med / floor:.2f}x",
                     targets.get(name, "")])
    gone = sum(not os.path.exists(f"/proc/{i}") for i in ids)
    print(f"full scan of {len(ids)} threads ({gone} gone since listed); {args.reps} interleaved "
          f"rounds in {wall:.1f} s; per round {repeat} x {len(ids)} = {repeat * len(ids)} "
          f"queries per contender (pyroute2: {args.pyroute2_queries}); "
          f"Python {sys.version.split()[0]}")
    print()
    print(table(["contender", "us/task", "min/max", "vs C floor", "target"], rows))
    if "pyroute2 TaskStats.get_pid_stat()" in results:
        p2 = median(results["pyroute2 TaskStats.get_pid_stat()"])
        print()
        print(table(["speedup", "measured", "target"],
                    [["pytaskstats pipelined vs pyroute2", f"{p2 / pipelined:.1f}x",
                      f">= {TARGET_VS_PYROUTE2:.0f}x"],
                     ["pytaskstats one by one vs pyroute2",
                      f"{p2 / median(results['pytaskstats one by one pid()']):.1f}x", ""]]))
    client.close()


if __name__ == "__main__":
    run_main(main)
