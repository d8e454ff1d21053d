"""Query latency: ``Client("daemon").pid(p)`` against ``Client("kernel").pid(p)`` one
by one (median, p99), and the bulk ``pids()`` per task, interleaved.  An ``[info]`` row
gives the floor of any userland relay: a bare Python process that receives each request
on a Unix socket, sends it to the kernel and the reply back (no checks at all).

Run as root: ``python benchmarks/query_latency.py`` (``--help`` for options;
``--quick`` for fewer rounds).  It starts a taskstatsd of its own
(tests/daemon_util.RunningDaemon).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

from _bench import (
    cpu_seconds,
    header,
    interleave,
    median,
    require_root,
    run_daemon_main,
    running_daemon,
    spread,
    table,
    task_ids,
)

from pytaskstats import Client, NoSuchTask


def _relay(listening: socket.socket) -> None:
    """The relay's loop (in a child): one client at a time, one reply per request."""
    kernel = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
    kernel.bind((0, 0))
    while True:
        conn, _ = listening.accept()
        with conn:
            while data := conn.recv(65536):
                kernel.send(data)
                conn.send(kernel.recv(65536))


@contextlib.contextmanager
def bare_relay() -> Iterator[tuple[int, str]]:
    """A bare Python relay to the kernel on a Unix socket of its own: its pid, path."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "relay.sock")
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listening.bind(path)
        listening.listen(4)
        child = os.fork()
        if child == 0:  # pragma: no cover - the relay process
            try:
                _relay(listening)
            finally:
                os._exit(0)
        listening.close()
        try:
            yield child, path
        finally:
            os.kill(child, 9)
            os.waitpid(child, 0)


def _p99(values: Sequence[int]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def _rows(names: Sequence[str], results: dict[str, list[float]],
          samples: dict[str, list[int]]) -> list[list[str]]:
    """The latency table's rows: one by one from every call, bulk from the rounds."""
    rows = []
    for name in names:
        med = median(results[name])
        kind = ("daemon" if name.startswith("daemon") else
                "relay" if "relay" in name else "kernel")
        if "one by one" in name:
            pooled = samples[kind]
            other = median(samples["kernel"])
            rows.append([name, f"{median(pooled) / 1000:.1f}", f"{_p99(pooled) / 1000:.1f}",
                         spread(results[name]),
                         f"{median(pooled) / other:.2f}x" if kind != "kernel" else "",
                         f"{_p99(pooled) / _p99(samples['kernel']):.2f}x"
                         if kind != "kernel" else ""])
        else:
            kernel_bulk = median(results["kernel pids(all), per task"])
            rows.append([name, f"{med / 1000:.1f}", "-", spread(results[name]),
                         f"{med / kernel_bulk:.2f}x" if kind == "daemon" else "", ""])
    return rows


def latency_section(daemon_pid: int, socket_path: str, args: argparse.Namespace) -> None:
    ids = task_ids()
    repeat = max(1, math.ceil(int(args.queries) / len(ids)))
    samples: dict[str, list[int]] = {}
    esrch = {"daemon": 0, "kernel": 0, "relay": 0}
    server_cpu = {"daemon": 0.0, "relay": 0.0}  # s of the serving process, one by one
    servers: dict[str, int] = {"daemon": daemon_pid}

    def one_by_one(client: Client, name: str) -> Callable[[], float]:
        def run() -> float:
            lat = []
            query = client.pid
            server = servers.get(name)
            cpu0 = cpu_seconds(server) if server else 0.0
            for _ in range(repeat):
                for i in ids:
                    t0 = time.perf_counter_ns()
                    try:
                        query(i)
                    except NoSuchTask:
                        esrch[name] += 1
                    lat.append(time.perf_counter_ns() - t0)
            if server:
                server_cpu[name] += cpu_seconds(server) - cpu0
            samples.setdefault(name, []).extend(lat)
            return median(lat)

        return run

    def bulk(client: Client) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter_ns()
            for _ in range(repeat):
                client.pids(ids)
            return (time.perf_counter_ns() - t0) / (repeat * len(ids))

        return run

    with Client("daemon", socket_path=socket_path) as via_daemon, \
            Client("kernel") as kernel, bare_relay() as (relay_pid, relay_path), \
            Client("daemon", socket_path=relay_path) as via_relay:
        servers["relay"] = relay_pid
        contenders = [("daemon pid(p), one by one", one_by_one(via_daemon, "daemon")),
                      ("kernel pid(p), one by one", one_by_one(kernel, "kernel")),
                      ("[info] bare relay pid(p), one by one", one_by_one(via_relay, "relay")),
                      ("daemon pids(all), per task", bulk(via_daemon)),
                      ("kernel pids(all), per task", bulk(kernel))]
        for _, run in contenders:  # warm-up, not counted
            run()
        samples.clear()
        esrch.update(daemon=0, kernel=0, relay=0)
        server_cpu.update(daemon=0.0, relay=0.0)
        t0 = time.perf_counter()
        results = interleave(contenders, args.latency_reps)
        wall = time.perf_counter() - t0

    gone = sum(not os.path.exists(f"/proc/{i}") for i in ids)
    print("== 4. query latency: Client(\"daemon\") against Client(\"kernel\") ==")
    print(f"{len(ids)} threads ({gone} gone since listed; ESRCH one by one: daemon "
          f"{esrch['daemon']}, kernel {esrch['kernel']}, relay {esrch['relay']}), "
          f"{repeat} x {len(ids)} = "
          f"{repeat * len(ids):,} queries per contender and round; {args.latency_reps} "
          f"interleaved rounds in {wall:.1f} s")
    print()
    rows = _rows([name for name, _ in contenders], results, samples)
    print(table(["query", "median us", "p99 us", "min/max", "vs kernel",
                 "p99 vs kernel"], rows))
    print()
    print(table(["server", "CPU us per query (one by one)"],
                [[name, f"{server_cpu[name] * 1e6 / len(samples[name]):.1f}"]
                 for name in ("daemon", "relay")]))
    print()
    print("one by one: latency of each call (perf_counter_ns around Client.pid), median and "
          "p99 over all rounds' calls; min/max = spread of the per-round medians. pids(all): "
          "the whole pipelined bulk query / number of tasks. [info] bare relay: a Python "
          "process that only receives each request, sends it to the kernel and the reply "
          "back (no peer, policy or framing checks): the floor of any relay in Python.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--queries", type=int, default=2000,
                        help="one-by-one queries per latency contender and round (default 2000)")
    parser.add_argument("--latency-reps", type=int, default=None,
                        help="interleaved latency rounds (default 5; --quick 2)")
    parser.add_argument("--no-cgroups", action="store_true",
                        help="run the daemon with --no-cgroups")
    args = parser.parse_args()
    if args.latency_reps is None:
        args.latency_reps = 2 if args.quick else 5
    require_root()
    t0 = time.perf_counter()
    header("taskstatsd query latency", args.quick)
    with running_daemon(args.no_cgroups) as (pid, socket_path, status):
        time.sleep(1.0)  # start-up done, heap settled
        status.counters()
        latency_section(pid, socket_path, args)
    print()
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    run_daemon_main(main, "query_latency.py")
