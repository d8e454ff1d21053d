"""The observer's cost: CPU per exit of our listeners beside a C listener's, the
overhead ``taskstats run`` adds to the job it accounts, delivery latency of live
consumers and exits lost in a two-generator storm.

Run as root: ``python benchmarks/observer_cost.py`` (``--help`` for options;
``--quick`` for a shorter loop and windows).  Phases:

1. the fork loop (``sh`` running ``/bin/true`` N times) watched by ``taskstats listen
   --json`` and ``--format procacct`` (each to a pipe read by this script), each run
   beside benchmarks/c_listener.c in the same window;
2. a taskstatsd of its own (tests/daemon_util.RunningDaemon): idle, paced 1k and 5k
   exits/s (benchmarks/fork_rate.c), a two-generator storm (fork_storm.c, two
   workers), each beside the C listener;
3. ``taskstats run -- sh -c LOOP`` against the bare loop, alternating A/B, medians;
4. delivery latency (exit reaped by waitpid -> record in the consumer's hands) of
   ``taskstats listen`` output and of a client's listener through taskstatsd, under
   a paced 1k exits/s background.

CPU is read from /proc/PID/task/*/schedstat (ns on CPU, every thread; taskstatsd's
journal writer process included) before and after each window; per exit = CPU /
exit records that observer received in the window (other exits on the machine are
received and paid for too, by every observer alike).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from _bench import (
    Status,
    build_c,
    family_id,
    finish,
    header,
    kill,
    lost,
    median,
    require_root,
    run_daemon_main,
    running_daemon,
    table,
    writer_pid,
)

from pytaskstats import Client, ExitRecord
from pytaskstats.cpulist import format_cpulist
from pytaskstats.kernel import possible_cpus

PY = [sys.executable, "-m", "pytaskstats"]
PID_RE = re.compile(rb" pid=(\d+) ")
TARGET_LISTEN = 2.0  # x the C listener's CPU per exit
TARGET_DAEMON = 3.0
TARGET_RUN_WALL = 5.0  # % over the bare loop
TARGET_RUN_CPU = 8.0
TARGET_LATENCY_MS = 100.0


def loop_cmd(n: int) -> list[str]:
    """The job: a shell running /bin/true ``n`` times, one after the other."""
    return ["sh", "-c", f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"]


def cpu_ns(pid: int) -> int:
    """ns on CPU of every thread of ``pid`` (schedstat: exact, not in ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    return total


def daemon_ns(pid: int) -> int:
    """The daemon's CPU ns and its journal writer's."""
    writer = writer_pid(pid)
    return cpu_ns(pid) + (cpu_ns(writer) if writer else 0)


class Reader:
    """Reads an observer's stdout in a thread: counts lines, stamps the arrival of
    each ``pid=N`` (monotonic s) for the latency probes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.lines = proc, 0
        self.arrived: dict[int, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines += 1
            m = PID_RE.search(line) or re.search(rb'"pid": (\d+)', line)
            if m:
                self.arrived[int(m.group(1))] = time.monotonic()

    def settle(self, at_least: int, quiet: float = 0.5, limit: float = 30.0) -> None:
        """Wait until ``at_least`` lines came and no new line for ``quiet`` s."""
        deadline, last, seen = time.monotonic() + limit, time.monotonic(), self.lines
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if self.lines != seen:
                seen, last = self.lines, time.monotonic()
            elif self.lines >= at_least and time.monotonic() - last >= quiet:
                return


class CListener:
    """benchmarks/c_listener.c, registered on every CPU, running."""

    def __init__(self, exe: Path, family: int) -> None:
        self.proc = subprocess.Popen([str(exe), str(family), format_cpulist(possible_cpus())],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            kill(self.proc)
            raise RuntimeError("c_listener did not register")
        self.ns0 = cpu_ns(self.proc.pid)

    def stop(self) -> tuple[int, int]:
        """(CPU ns since it became ready, exit records it received)."""
        ns = cpu_ns(self.proc.pid) - self.ns0
        self.proc.send_signal(signal.SIGTERM)
        out = finish(self.proc, 10)
        return ns, int(out.get("tasks", 0)) + int(out.get("groups", 0))


class Row(NamedTuple):
    name: str
    exits: int  # records the observer received
    ns: int  # its CPU in the window
    c_exits: int
    c_ns: int
    window: float
    target: float | None  # ratio to C

    def per_exit(self) -> float:
        return self.ns / self.exits / 1e3 if self.exits else float("nan")

    def c_per_exit(self) -> float:
        return self.c_ns / self.c_exits / 1e3 if self.c_exits else float("nan")

    def ratio(self) -> float:
        return self.per_exit() / self.c_per_exit()


def run_loop(n: int) -> None:
    subprocess.run(loop_cmd(n), check=True)


def wait_registered(reader: Reader) -> None:
    """Exit /bin/true until the observer prints a line: its listener is registered."""
    deadline = time.monotonic() + 20
    while reader.lines == 0:
        if time.monotonic() > deadline or reader.proc.poll() is not None:
            raise RuntimeError("the listener printed nothing")
        subprocess.run(["/bin/true"], check=True)
        time.sleep(0.05)


def listen_row(name: str, args: list[str], c_exe: Path, family: int, loop: int) -> Row:
    """``taskstats listen ARGS`` to a pipe, beside the C listener, over the loop."""
    proc = subprocess.Popen([*PY, "--backend", "kernel", "listen", *args],
                            stdout=subprocess.PIPE)
    c: CListener | None = None
    try:
        reader = Reader(proc)
        wait_registered(reader)
        reader.settle(1, quiet=0.3)
        c = CListener(c_exe, family)
        lines0, ns0, t0 = reader.lines, cpu_ns(proc.pid), time.monotonic()
        run_loop(loop)
        reader.settle(lines0 + loop)
        ns, lines, window = cpu_ns(proc.pid) - ns0, reader.lines - lines0, time.monotonic() - t0
        c_ns, c_exits = c.stop()
        c = None
    finally:
        if c is not None:
            c.stop()
        proc.terminate()  # SIGINT may be ignored (inherited from a background shell)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            kill(proc)  # type: ignore[arg-type]
    return Row(name, lines, ns, c_exits, c_ns, window, TARGET_LISTEN)


def daemon_window(name: str, pid: int, status: Status, *, c_exe: Path, family: int,
                  gen: list[str] | None, window: float, target: float | None) -> Row:
    """The daemon's CPU over ``window`` s (with generator ``gen`` running), beside C."""
    proc = subprocess.Popen(gen, stdout=subprocess.PIPE, text=True) if gen else None
    c: CListener | None = None
    try:
        if proc is not None:
            time.sleep(0.5)  # under way
        c = CListener(c_exe, family)
        r0, ns0, t0 = status.counters()["received"], daemon_ns(pid), time.monotonic()
        time.sleep(window)
        r1, ns1, t1 = status.counters()["received"], daemon_ns(pid), time.monotonic()
        c_ns, c_exits = c.stop()
        c = None
    finally:
        if c is not None:
            c.stop()
        kill(proc)
    return Row(name, r1 - r0, ns1 - ns0, c_exits, c_ns, t1 - t0, target)


class Storm(NamedTuple):
    row: Row
    generated: int
    journaled: int
    lost: int


def storm_row(pid: int, status: Status, *, storm_exe: Path, c_exe: Path, family: int,
              forks: int) -> Storm:
    """Two fork_storm workers of ``forks`` children together; the daemon's CPU from
    the start until every storm exit is journaled, beside C; lost = generated minus
    journaled (by comm) and the daemon's loss counters."""
    since = time.time_ns()
    c0 = status.counters()
    c = CListener(c_exe, family)
    ns0, t0 = daemon_ns(pid), time.monotonic()
    out = finish(subprocess.Popen([str(storm_exe), str(forks), "20", "2"],
                                  stdout=subprocess.PIPE, text=True), 60)
    generated = int(out.get("forks", 0)) + len(out.get("workers", "").split(",")) + 1
    journaled, last, changed = 0, -1, time.monotonic()
    while time.monotonic() - changed < 1.0 and journaled < generated:
        rows = status.history(comm=storm_exe.name, since_ns=since, group_by="comm")
        journaled = int(rows[0]["exits"]) if rows else 0
        if journaled != last:
            last, changed = journaled, time.monotonic()
        time.sleep(0.1)
    ns1, t1 = daemon_ns(pid), time.monotonic()
    c_ns, c_exits = c.stop()
    c1 = status.counters()
    row = Row("taskstatsd storm (2 generators)", c1["received"] - c0["received"], ns1 - ns0,
              c_exits, c_ns, t1 - t0, None)
    return Storm(row, generated, journaled, lost(c0, c1))


LEGS = ("bare loop", "loop beside c_listener", "taskstats run")


def run_legs(loop: int, pairs: int, c_exe: Path, family: int
             ) -> dict[str, list[tuple[float, float]]]:
    """The bare loop, the loop while the C listener is registered (the kernel's own
    cost of sending exit records, paid by the exiting tasks) and ``taskstats run``
    of it, each ``pairs`` times, the order rotating; (wall s, CPU s) of each, CPU
    from wait4's rusage (the process and every descendant it reaped)."""
    out: dict[str, list[tuple[float, float]]] = {leg: [] for leg in LEGS}
    for k in range(pairs):
        for j in range(len(LEGS)):
            leg = LEGS[(k + j) % len(LEGS)]
            cmd = [*PY, "--backend", "kernel", "run", "--", *loop_cmd(loop)] \
                if leg == "taskstats run" else loop_cmd(loop)
            c = CListener(c_exe, family) if leg == "loop beside c_listener" else None
            try:
                t0 = time.perf_counter()
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                _, status, ru = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - t0
            finally:
                if c is not None:
                    c.stop()
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}")
            out[leg].append((wall, ru.ru_utime + ru.ru_stime))
    return out


def probe_latency(arrived: Callable[[int], float | None], probes: int) -> list[float]:
    """Exit /bin/true ``probes`` times, 20 ms apart; per probe the ms from waitpid's
    return to the consumer holding its record (missing: not seen within 2 s)."""
    out: list[float] = []
    for _ in range(probes):
        proc = subprocess.Popen(["/bin/true"])
        proc.wait()
        t_exit = time.monotonic()
        deadline = t_exit + 2.0
        while (at := arrived(proc.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.001)
        out.append(float("inf") if at is None else max(0.0, at - t_exit) * 1e3)
        time.sleep(0.02)
    return out


@contextmanager
def paced(exe: Path, rate: int, seconds: float) -> Iterator[None]:
    proc = subprocess.Popen([str(exe), str(rate), str(seconds)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        yield
    finally:
        kill(proc)  # type: ignore[arg-type]


def listen_latency(rate_exe: Path, probes: int) -> list[float]:
    proc = subprocess.Popen([*PY, "--backend", "kernel", "listen", "--format", "procacct"],
                            stdout=subprocess.PIPE)
    try:
        reader = Reader(proc)
        wait_registered(reader)
        with paced(rate_exe, 1000, probes * 0.05 + 5):
            return probe_latency(reader.arrived.get, probes)
    finally:
        proc.terminate()  # SIGINT may be ignored (inherited from a background shell)
        proc.wait(10)


def client_latency(socket: str, rate_exe: Path, probes: int) -> list[float]:
    """A client's exit listener through taskstatsd, in a thread of this process."""
    arrived: dict[int, float] = {}
    stop = threading.Event()
    with Client("daemon", socket_path=socket) as client, client.listen() as listener:
        def consume() -> None:
            while not stop.is_set():
                for event in listener.poll(0.1):
                    if isinstance(event, ExitRecord):
                        arrived[event.pid] = time.monotonic()
        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        try:
            with paced(rate_exe, 1000, probes * 0.05 + 5):
                return probe_latency(arrived.get, probes)
        finally:
            stop.set()
            thread.join()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_cpu(rows: list[Row], idle_pct: float) -> None:
    print("== CPU per exit, each beside benchmarks/c_listener.c in the same window ==")
    out = []
    for r in rows:
        target = "" if r.target is None else (
            f"<= {r.target:g}x: {verdict(r.ratio() <= r.target)}")
        out.append([r.name, f"{r.window:.1f}", f"{r.exits:,}", f"{r.exits / r.window:,.0f}",
                    f"{100 * r.ns / 1e9 / r.window:.1f}%", f"{r.per_exit():.1f}",
                    f"{r.c_per_exit():.1f}", f"{r.ratio():.2f}x", target])
    print(table(["observer", "window s", "exits recv", "exits/s", "CPU", "us/exit",
                 "C us/exit", "vs C", "target"], out))
    print(f"taskstatsd idle: {idle_pct:.2f}% of a core")
    print()


def print_run(loop: int, pairs: int, c_exe: Path, family: int) -> None:
    """The run rows: ``taskstats run`` against the bare loop (and the loop beside the
    C listener: the kernel's share of the overhead), rotating, medians."""
    legs = run_legs(loop, pairs, c_exe, family)
    wall = {leg: median([w for w, _ in v]) for leg, v in legs.items()}
    cpu = {leg: median([c for _, c in v]) for leg, v in legs.items()}
    bare = LEGS[0]
    print(f"== taskstats run vs the bare loop ({loop:,} exits, {pairs} rounds of "
          f"{len(LEGS)}, rotating; medians; CPU from wait4 rusage) ==")
    print(table(["", "wall s", "CPU s", "wall vs bare", "CPU vs bare", "wall min-max"], [
        [leg, f"{wall[leg]:.3f}", f"{cpu[leg]:.3f}",
         f"{100 * (wall[leg] / wall[bare] - 1):+.1f}%", f"{100 * (cpu[leg] / cpu[bare] - 1):+.1f}%",
         f"{min(w for w, _ in legs[leg]):.3f}-{max(w for w, _ in legs[leg]):.3f}"]
        for leg in LEGS]))
    w = 100 * (wall["taskstats run"] / wall[bare] - 1)
    c = 100 * (cpu["taskstats run"] / cpu[bare] - 1)
    print(f"run overhead: wall {w:+.1f}% (target <= {TARGET_RUN_WALL:g}%: "
          f"{verdict(w <= TARGET_RUN_WALL)}), CPU {c:+.1f}% (target <= "
          f"{TARGET_RUN_CPU:g}%: {verdict(c <= TARGET_RUN_CPU)})")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 exits, short windows")
    parser.add_argument("--loop", type=int, default=None, help="exits of the loop (12000)")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of the run legs (3)")
    parser.add_argument("--window", type=float, default=None, help="paced window s (4)")
    parser.add_argument("--probes", type=int, default=100, help="latency probes (100)")
    parser.add_argument("--storm-forks", type=int, default=50000)
    parser.add_argument("--no-cgroups", action="store_true",
                        help="run the daemon with --no-cgroups (no cgroup read at birth "
                        "and exit)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["listen", "daemon", "run", "latency"])
    args = parser.parse_args()
    loop = args.loop or (3000 if args.quick else 12000)
    window = args.window or (2.0 if args.quick else 4.0)
    require_root()
    header("observer cost", args.quick)
    c_exe = build_c("c_listener")
    rate_exe = build_c("fork_rate", static=True)
    storm_exe = build_c("fork_storm", static=True)
    family = family_id()
    rows: list[Row] = []
    if "listen" not in args.skip:
        rows.append(listen_row("taskstats listen --json", ["--json"], c_exe, family, loop))
        rows.append(listen_row("taskstats listen --format procacct",
                               ["--format", "procacct"], c_exe, family, loop))
    idle_pct, storm, client_lat = float("nan"), None, None
    if "daemon" not in args.skip or "latency" not in args.skip:
        with running_daemon(args.no_cgroups) as (pid, sock, status):
            time.sleep(1.0)
            if "daemon" not in args.skip:
                idle = daemon_window("idle", pid, status, c_exe=c_exe, family=family,
                                     gen=None, window=window * 2, target=None)
                idle_pct = 100 * idle.ns / 1e9 / idle.window
                for rate in (1000, 5000):
                    rows.append(daemon_window(
                        f"taskstatsd ~{rate:,} exits/s", pid, status, c_exe=c_exe,
                        family=family, gen=[str(rate_exe), str(rate), str(window + 1.5)],
                        window=window, target=TARGET_DAEMON))
                storm = storm_row(pid, status, storm_exe=storm_exe, c_exe=c_exe,
                                  family=family, forks=args.storm_forks)
                rows.append(storm.row)
            if "latency" not in args.skip:
                client_lat = client_latency(sock, rate_exe, args.probes)
    print_cpu(rows, idle_pct)
    if storm is not None:
        print(f"two-generator storm: {storm.generated:,} exits generated, {storm.journaled:,} "
              f"journaled, daemon loss counters +{storm.lost}: "
              f"{storm.generated - storm.journaled} lost")
        print()
    if "run" not in args.skip:
        print_run(loop, args.pairs, c_exe, family)
    if "latency" not in args.skip:
        lat = [("taskstats listen --format procacct", listen_latency(rate_exe, args.probes))]
        if client_lat is not None:
            lat.append(("client listener via taskstatsd", client_lat))
        print(f"== delivery latency, waitpid -> consumer, {args.probes} probes under a paced "
              "1k exits/s ==")
        print(table(["consumer", "p50 ms", "p99 ms", "max ms", "missing", "target"], [
            [name, f"{statistics.median(v):.2f}", f"{pct(v, 0.99):.2f}", f"{max(v):.2f}",
             str(sum(x == float('inf') for x in v)),
             f"p99 <= {TARGET_LATENCY_MS:g}: {verdict(pct(v, 0.99) <= TARGET_LATENCY_MS)}"]
            for name, v in lat]))


if __name__ == "__main__":
    run_daemon_main(main, "observer_cost.py")
