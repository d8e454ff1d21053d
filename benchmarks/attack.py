"""taskstatsd under attack: memory, latency of well-behaved clients, file descriptors.

Run as root: ``python benchmarks/attack.py`` (~60 s; ``--help`` for options).  It
starts its own taskstatsd (tests/daemon_util.RunningDaemon, socket and state in a
temp dir) and runs the hostile clients as nobody (``setpriv``, with a world-readable
copy of the package).  Three windows, in one run, with the same well-behaved clients
(``--clients`` processes as root, each asking for its own record through the daemon
every ``--pause-ms``, each call timed on its own):

1. quiet: no attacker;
2. flood: one client sends up to 149 datagrams of 2,000 GETs and reads nothing (the
   unread-replies attack of issue 11);
3. fuzz + flood + hoarders: the flood, ``--fuzzers`` clients sending random and
   mutated frames (kernel commands, cpumasks such as 0-99999999, extension requests,
   pipelined datagrams of GETs, reading what comes back), and ``--hoarders`` users
   opening 300 connections each;
4. fork storm: fork_storm.c (``--storm-forks`` at most), no hostile client;
   the same clients then ask the kernel directly during the storm (the baseline,
   like the quiet window's second row: what the machine itself costs);
5. all at once.

Printed: the good clients' p50/p99/max latency per window, the daemon's RSS before,
at its highest during the attacks (sampled every 0.1 s) and after the attackers
are gone, its open fds at the same points, and its loss and refusal counters.
Every attacker stops by itself (``--seconds`` per window), and is killed when the
window ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _bench import build_c, median, require_root, run_daemon_main, table

import pytaskstats
from pytaskstats import Client, extproto

REPO = Path(__file__).resolve().parent.parent
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SAMPLE_S = 0.1

GOOD = """
import json, os, sys, time
from pytaskstats import Client
path, seconds, pause = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) / 1000
sys.stdin.readline()
out, end = [], time.monotonic() + seconds
backend = "kernel" if path == "kernel" else "daemon"
with Client(backend, socket_path=None if backend == "kernel" else path, timeout=30) as c:
    me = os.getpid()
    while time.monotonic() < end:
        t0 = time.perf_counter_ns()
        c.pid(me)
        out.append(time.perf_counter_ns() - t0)
        time.sleep(pause)
print(json.dumps(out))
"""

FLOOD = """
import os, socket, struct, sys, time
from pytaskstats import taskstats as ts
from pytaskstats.kernel import Connection
path, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
family = Connection(socket_path=path).family.id
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(path)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("@ll", 0, 200000))
data = b"".join(ts.encode_get_pid(family, os.getpid(), seq=j + 1) for j in range(2000))
sent = 0
while sent < 149 and time.monotonic() < end:
    try:
        s.send(data)
        sent += 1
    except (BlockingIOError, TimeoutError):
        pass
print(sent, flush=True)
time.sleep(max(0.0, end - time.monotonic()))
"""

FUZZ = """
import os, random, socket, sys, time
from pytaskstats import genetlink as genl, netlink as nl, taskstats as ts
from pytaskstats import extproto
from pytaskstats.kernel import Connection
path, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
end, rng = time.monotonic() + seconds, random.Random(seed)
family = Connection(socket_path=path).family.id
mask = lambda m: genl.encode(family, ts.CMD_GET, nl.encode_attr(ts.ATTR_REGISTER_CPUMASK, m),
                             seq=9, flags=nl.NLM_F_REQUEST | nl.NLM_F_ACK)
valid = [ts.encode_get_pid(family, os.getpid(), seq=1), ts.encode_get_tgid(family, 1, seq=2),
         ts.encode_register(family, "0-1", seq=3), mask(b"0-99999999\\0"), mask(b"0-9999999\\0"),
         extproto.encode_request(extproto.CMD_STATUS, {}, seq=4),
         extproto.encode_request(extproto.CMD_HISTORY, {"limit": 5}, seq=5),
         genl.encode_get_family("TASKSTATS", seq=6)]
def frame():
    kind = rng.randrange(5)
    if kind == 0:
        return os.urandom(rng.randrange(1, 600))
    if kind == 4:  # a pipelined datagram of many messages
        return b"".join(rng.choice(valid) for _ in range(rng.randrange(2, 2000)))[:65536]
    data = bytearray(rng.choice(valid))
    for _ in range(rng.randrange(1, 6)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    if kind == 2:
        data = data[:rng.randrange(1, len(data) + 1)]
    if kind == 3:
        data += os.urandom(rng.randrange(1, 64))
    return bytes(data)
sent, s = 0, None
while time.monotonic() < end:
    if s is None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(path)
        s.setblocking(False)
    try:
        try:
            s.send(frame())
            sent += 1
        except BlockingIOError:
            time.sleep(0.0005)
        while True:  # read what came back, so the daemon keeps reading us
            s.recv(1 << 17)
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        s = None
print(sent, flush=True)
"""

HOARD = """
import socket, sys, time
socks = []
for _ in range(300):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    socks.append(s)
print(len(socks), flush=True)
time.sleep(float(sys.argv[2]))
"""


def world_readable_package() -> tuple[str, dict[str, str]]:
    """A copy of pytaskstats that nobody can import, and the environment to use it."""
    base = tempfile.mkdtemp(prefix="pytaskstats-attack-", dir="/tmp")
    os.chmod(base, 0o755)
    shutil.copytree(Path(pytaskstats.__file__).parent, Path(base) / "pytaskstats",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in Path(base).rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return base, {**os.environ, "PYTHONPATH": base}


def world_python() -> str:
    """An interpreter nobody may run: the system's when it is this version."""
    system = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system:
        out = subprocess.run([system, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=False).stdout.strip()
        if out == str(sys.version_info[:2]):
            return system
    return sys.executable


class Watch(threading.Thread):
    """Samples a process's VmRSS (MB) and open fds every SAMPLE_S; keeps the maxima."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.rss, self.fds = pid, 0.0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            self.rss = max(self.rss, rss_mb(self.pid))
            self.fds = max(self.fds, fd_count(self.pid))


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def good_clients(socket_path: str, args: argparse.Namespace) -> list[float]:
    """Latencies (ms) of the well-behaved clients over one window; ``socket_path``
    "kernel" asks the kernel directly (the baseline)."""
    procs = [subprocess.Popen([sys.executable, "-c", GOOD, socket_path, str(args.seconds),
                               str(args.pause_ms)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
             for _ in range(args.clients)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.close()
    latencies: list[float] = []
    for p in procs:
        assert p.stdout is not None
        out = p.stdout.read()  # the clients end by themselves after args.seconds
        p.stdout.close()
        p.wait()
        latencies += [ns / 1e6 for ns in json.loads(out or "[]")]
    return latencies


class Attackers:
    """Hostile processes (as nobody unless ``uid`` says otherwise), killed at the end."""

    def __init__(self, socket_path: str, env: dict[str, str], python: str) -> None:
        self.socket_path, self.env, self.python = socket_path, env, python
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, script: str, *argv: str, uid: int = 65534,
              wait_line: bool = False) -> str:
        """Start one; with ``wait_line``, return its first output line."""
        user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        proc = subprocess.Popen([*user, self.python, "-c", script, self.socket_path, *argv],
                                stdout=subprocess.PIPE, text=True, env=self.env, cwd="/")
        self.procs.append(proc)
        return proc.stdout.readline().strip() if wait_line and proc.stdout else ""

    def stop(self, wait: float = 0.0) -> list[str]:
        """Give them ``wait`` seconds to end by themselves, then kill them all; their
        outputs after the first line."""
        outs = []
        deadline = time.monotonic() + wait
        for proc in self.procs:
            try:
                out, _ = proc.communicate(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate(timeout=30)
            outs.append(out.strip())
        self.procs = []
        return outs


def status(socket_path: str) -> extproto.Status:
    """The daemon's status document."""
    with Client("daemon", socket_path=socket_path, timeout=30) as c:
        doc = c.status()
    return doc


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    from tests.daemon_util import RunningDaemon  # noqa: PLC0415  (needs the repo on sys.path)

    storm = build_c("fork_storm", static=True)
    base, env = world_readable_package()
    daemon = RunningDaemon()
    attackers = Attackers(daemon.socket, env, world_python())
    try:
        status(daemon.socket)
        memory: list[tuple[str, float, int | None]] = [
            ("before", rss_mb(daemon.pid), fd_count(daemon.pid))]
        rows, watch, fuzz_sent, storm_out = [], Watch(daemon.pid), 0, []
        rows.append(("quiet", good_clients(daemon.socket, args)))
        rows.append(("quiet, kernel (baseline)", good_clients("kernel", args)))
        watch.start()
        for name in ("flood", "fuzz + flood + hoarders", "fork storm", "all at once"):
            parts = {"flood": "flood" in name or "all" in name,
                     "fuzz": "fuzz" in name or "all" in name,
                     "storm": "storm" in name or "all" in name}
            sent = attackers.start(FLOOD, str(args.seconds + 5), wait_line=True)
            if parts["fuzz"]:
                for k in range(args.hoarders):
                    attackers.start(HOARD, str(args.seconds + 5), uid=60000 + k,
                                    wait_line=True)
                for seed in range(args.fuzzers):
                    attackers.start(FUZZ, str(args.seconds), str(seed))
            span = args.seconds * (2 if name == "fork storm" else 1)  # + the baseline
            gen = subprocess.Popen([str(storm), str(int(args.storm_forks * span / args.seconds)),
                                    str(span),
                                    str(os.cpu_count() or 1)], stdout=subprocess.PIPE,
                                   text=True) if parts["storm"] else None
            if not parts["flood"]:
                attackers.procs[0].kill()  # the flood runs in every window but this one
            label = f"{name} (flood: {sent} of 149 datagrams taken)" if parts["flood"] else name
            rows.append((label, good_clients(daemon.socket, args)))
            if name == "fork storm":  # the same storm, asking the kernel: the baseline
                rows.append(("fork storm, kernel (baseline)", good_clients("kernel", args)))
            if gen is not None:
                storm_out = gen.communicate(timeout=span + 60)[0].split()
            outs = attackers.stop(wait=2.0)
            fuzz_sent += sum(int(x) for x in outs if x.isdigit())  # fuzzers print a count
            memory.append((f"after the {name} window", rss_mb(daemon.pid), None))
        deadline = time.monotonic() + 10  # until the daemon has seen them go
        while status(daemon.socket)["clients"] > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        watch.stop.set()
        watch.join()
        counters = status(daemon.socket)["counters"]
        memory += [("highest during the attacks", watch.rss, watch.fds),
                   ("at the end", rss_mb(daemon.pid), fd_count(daemon.pid))]
        report(args, rows, memory, counters, fuzz_sent=fuzz_sent, storm=storm_out)
    finally:
        attackers.stop()
        daemon.close()
        shutil.rmtree(base, ignore_errors=True)


def report(args: argparse.Namespace, rows: list[tuple[str, list[float]]],
           memory: list[tuple[str, float, int | None]], counters: dict[str, int], *,
           fuzz_sent: int, storm: list[str]) -> None:
    print(f"{args.clients} well-behaved clients (root), one query each every "
          f"{args.pause_ms} ms, {args.seconds:.0f} s per window")
    print(table(["window", "queries", "p50 ms", "p99 ms", "max ms"],
                [(name, f"{len(lat):,}", f"{median(lat):.2f}", f"{percentile(lat, 99):.2f}",
                  f"{max(lat):.1f}") for name, lat in rows if lat]))
    print()
    print(table(["daemon", "VmRSS MB", "open fds"],
                [(name, f"{rss:.1f}", "-" if fds is None else str(fds))
                 for name, rss, fds in memory]))
    print()
    print(f"fuzzers: {args.fuzzers} sent {fuzz_sent:,} frames; hoarders: {args.hoarders} "
          f"uids x 300 connections; storm: {' '.join(storm[:2])}")
    keys = ("received", "lost_overrun", "client_dropped", "clients_refused",
            "client_reply_peak_bytes")
    print("daemon counters: " + ", ".join(f"{k} {counters.get(k, 0):,}" for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16,
                        help="well-behaved client processes (default 16)")
    parser.add_argument("--pause-ms", type=float, default=5.0,
                        help="pause between a good client's queries (default 5 ms)")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="length of each window (default 6 s)")
    parser.add_argument("--fuzzers", type=int, default=4, help="fuzzing clients (default 4)")
    parser.add_argument("--hoarders", type=int, default=1,
                        help="users holding 300 connections each (default 1)")
    parser.add_argument("--storm-forks", type=int, default=50_000,
                        help="most forks of the fork storm (default 50000)")
    args = parser.parse_args()
    require_root()
    t0 = time.perf_counter()
    run(args)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    run_daemon_main(main, "attack.py")
