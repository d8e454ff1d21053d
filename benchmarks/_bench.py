"""Shared helpers of the benchmark scripts (not a benchmark itself).

Building the C helpers, listing tasks, running contenders interleaved and
printing tables; starting a taskstatsd and reading its CPU time and counters.
Only the standard library and pytaskstats are used here.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from pytaskstats import Client, NoSuchTask, TaskstatsError
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.kernel import Connection, possible_cpus

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"  # gitignored
RECV_BUFFER = 65536
NETLINK_GENERIC = 16
SO_RCVBUFFORCE = 33
SO_MEMINFO = 55


def require_root() -> None:
    """Exit with a message (not a traceback) when not root."""
    if os.geteuid() != 0:
        sys.exit(f"{Path(sys.argv[0]).name}: run as root (TASKSTATS needs CAP_NET_ADMIN)")


def build_c(name: str, *, static: bool = False) -> Path:
    """Compile ``benchmarks/NAME.c`` with gcc -O2 into benchmarks/.build/NAME (if stale).

    ``static``: link statically if the toolchain can (cheaper fork/exec), else
    dynamically.
    """
    src = HERE / f"{name}.c"
    exe = BUILD / name
    if exe.exists() and exe.stat().st_mtime >= src.stat().st_mtime:
        return exe
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        sys.exit(f"cannot build {src.name}: no gcc/cc on PATH")
    BUILD.mkdir(exist_ok=True)
    cmd = [gcc, "-O2", "-Wall", "-Wextra", "-o", str(exe), str(src)]
    if static:
        linked = subprocess.run([*cmd, "-static"], capture_output=True, check=False)
        if linked.returncode == 0:
            return exe
    subprocess.run(cmd, check=True)
    return exe


def task_ids() -> list[int]:
    """Every thread of every process: the names in /proc/*/task/ (initial pid namespace)."""
    ids: list[int] = []
    for proc in os.listdir("/proc"):
        if not proc.isdigit():
            continue
        try:
            ids += [int(t) for t in os.listdir(f"/proc/{proc}/task") if t.isdigit()]
        except OSError:
            continue  # the process exited while we listed
    return sorted(ids)


def family_id() -> int:
    """The TASKSTATS family id, looked up by pytaskstats."""
    with Connection() as conn:
        return conn.family.id


def raw_socket(rcvbuf: int = 1 << 20, timeout: float | None = 5.0, *,
               rcvtimeo: float | None = None) -> socket.socket:
    """A bare bound NETLINK_GENERIC socket of our own (for the baselines and captures).

    ``timeout`` is Python's socket timeout: CPython then poll()s before every
    send and recv.  ``rcvtimeo`` (use with ``timeout=None``) sets the kernel's
    SO_RCVTIMEO instead: a blocking socket whose recv fails with EAGAIN after
    that long, with no extra system call.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         NETLINK_GENERIC)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    sock.settimeout(timeout)
    if rcvtimeo is not None:
        sec = int(rcvtimeo)
        usec = int((rcvtimeo - sec) * 1e6)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", sec, usec))
    return sock


def raw_register(sock: socket.socket, family: int, cpus: str, *,
                 deregister: bool = False) -> None:
    """(De)register ``sock`` as exit listener for ``cpus``; wait for the ACK."""
    encode = ts.encode_deregister if deregister else ts.encode_register
    seq = 0x7FFF0000
    sock.send(encode(family, cpus, seq=seq, ack=True))
    buf = bytearray(RECV_BUFFER)
    while True:
        n = sock.recv_into(buf, RECV_BUFFER)
        for event in ts.decode(memoryview(buf), family, n):
            if isinstance(event, nl.ErrorReply) and event.seq == seq:
                if event.error:
                    raise OSError(event.error, f"(de)register {cpus}: {os.strerror(event.error)}")
                return


def sk_drops(sock: socket.socket) -> int:
    """The kernel's count of datagrams dropped on ``sock`` (SO_MEMINFO)."""
    return int(struct.unpack_from("=9I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))[8])


def interleave(contenders: Sequence[tuple[str, Callable[[], float]]],
               reps: int) -> dict[str, list[float]]:
    """Run each contender once per round, ``reps`` rounds, rotating the order each round.

    A contender returns its own measurement (e.g. ns per task).  A full GC runs
    before every measurement so no contender pays for another's garbage.
    """
    results: dict[str, list[float]] = {name: [] for name, _ in contenders}
    n = len(contenders)
    for rep in range(reps):
        for k in range(n):
            name, run = contenders[(rep + k) % n]
            gc.collect()
            results[name].append(run())
    return results


def median(values: Sequence[float]) -> float:
    """The median."""
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """``min-max`` of the repetitions, relative to the median, e.g. ``-3%/+8%``."""
    med = median(values)
    if med == 0:
        return "-"
    return f"-{(1 - min(values) / med) * 100:.0f}%/+{(max(values) / med - 1) * 100:.0f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def timed(scan: Callable[[], int]) -> Callable[[], float]:
    """Wrap a scan returning how many tasks it handled into one returning ns/task."""

    def run() -> float:
        t0 = time.perf_counter_ns()
        tasks = scan()
        return (time.perf_counter_ns() - t0) / tasks

    return run


def read_fields(records: Iterable[Iterable[object]]) -> None:
    """Read every field of every record: each record is iterated to its end (in C,
    by a zero-length deque), so a record that decoded lazily would pay here."""
    deque(chain.from_iterable(records), 0)


def bulk_scan(pids: Callable[[list[int]], Mapping[int, Iterable[object]]], ids: list[int],
              repeat: int) -> Callable[[], int]:
    """A scan: ``pids(ids)`` (one bulk query) ``repeat`` times, every field of every
    record read (:func:`read_fields`); returns the tasks asked."""

    def scan() -> int:
        for _ in range(repeat):
            read_fields(pids(ids).values())
        return repeat * len(ids)

    return scan


def single_scan(pid: Callable[[int], Iterable[object]], ids: list[int],
                repeat: int) -> Callable[[], int]:
    """A scan: ``pid(i)`` for each id, ``repeat`` times (tasks gone are skipped),
    every field of every record read."""
    sink: deque[object] = deque(maxlen=0)
    consume = sink.extend

    def scan() -> int:
        for _ in range(repeat):
            for i in ids:
                try:  # noqa: SIM105 - cheaper than contextlib.suppress in a timed loop
                    consume(pid(i))
                except NoSuchTask:
                    pass
        return repeat * len(ids)

    return scan


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``: a clear exit for a missing privilege and for ^C."""
    try:
        main()
    except OSError as err:
        if err.errno in (errno.EPERM, errno.EACCES):
            sys.exit(f"permission denied: {err}")
        raise
    except KeyboardInterrupt:
        sys.exit(130)


def run_daemon_main(main: Callable[[], None], name: str) -> None:
    """:func:`run_main` for a benchmark that starts its own taskstatsd: SIGTERM ends
    it through its ``finally`` blocks (which stop the daemon and clean up), and a
    daemon that did not start (RuntimeError) or failed is one line."""
    def guarded() -> None:
        try:
            main()
        except (TaskstatsError, RuntimeError) as err:
            sys.exit(f"{name}: {err}")

    signal.signal(signal.SIGTERM, _terminate)
    run_main(guarded)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- a running taskstatsd

REPO = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def report_of(out: str) -> dict[str, str]:
    """The ``key=value`` words of a generator's output."""
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, str]:
    """A generator's ``key=value`` report; it is killed if it overstays ``timeout``."""
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    return report_of(out or "")


def kill(proc: subprocess.Popen[str] | None) -> None:
    """Kill and reap ``proc`` if it still runs."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of process ``pid`` (or of its thread ``tid``), in seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        text = f.read()
    after = text[text.rindex(")") + 2:].split()  # field 3 (state) onwards
    return (int(after[11]) + int(after[12])) / CLK_TCK


def writer_pid(pid: int) -> int | None:
    """The daemon's child: its journal writer process."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids = f.read().split()
        if kids:
            return int(kids[0])
    return None


def daemon_cpu(pid: int) -> tuple[float, float, float]:
    """CPU seconds of the daemon and its writer together, its main thread, the writer."""
    writer = writer_pid(pid)
    spent = cpu_seconds(writer) if writer else 0.0
    return cpu_seconds(pid) + spent, cpu_seconds(pid, pid), spent


class Status:
    """The daemon's status counters and journal, through a daemon-backend Client."""

    def __init__(self, socket_path: str) -> None:
        self.client = Client("daemon", socket_path=socket_path)

    def sample(self) -> tuple[float, dict[str, int]]:
        """(the daemon's wall clock when it read its counters, in s; the counters)."""
        doc = self.client.status()
        daemon = doc["daemon"]
        at = (int(daemon["started_ns"]) + float(daemon["uptime_s"]) * 1e9) / 1e9
        return at, {k: int(v) for k, v in doc["counters"].items()}

    def counters(self) -> dict[str, int]:
        return self.sample()[1]

    def history(self, **params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client.history(**params)
        return rows

    def close(self) -> None:
        self.client.close()


def lost(before: dict[str, int], after: dict[str, int]) -> int:
    """Exits lost before the journal or dropped by it, between two counter readings."""
    return sum(v - before.get(k, 0) for k, v in after.items()
               if k.startswith(("lost_", "dropped_")))


def daemon_config(no_cgroups: bool) -> str:
    """How the benchmarks' taskstatsd runs, for their headers."""
    return "--config /dev/null: defaults" + (", --no-cgroups" if no_cgroups else "")


@contextlib.contextmanager
def running_daemon(no_cgroups: bool) -> Iterator[tuple[int, str, Status]]:
    """A taskstatsd of its own (tests/daemon_util.RunningDaemon: needs the checkout):
    its pid, socket and a :class:`Status` of it; stopped afterwards."""
    sys.path.insert(0, str(REPO))
    from tests.daemon_util import RunningDaemon  # noqa: PLC0415  (needs the repo on sys.path)

    daemon = RunningDaemon(None, *(["--no-cgroups"] if no_cgroups else []))
    status: Status | None = None
    try:
        status = Status(daemon.socket)
        yield daemon.pid, daemon.socket, status
    finally:
        if status is not None:
            status.close()
        daemon.close()


def header(what: str, quick: bool) -> None:
    """The first line of a daemon benchmark's output."""
    print(f"{what}{' (--quick)' if quick else ''}: {len(possible_cpus())} CPUs, Linux "
          f"{os.uname().release}, Python {sys.version.split()[0]}")
    print()


_SLEEPERS = """
import sys, threading
threading.stack_size(64 * 1024)
stop = threading.Event()
for _ in range(int(sys.argv[1])):
    threading.Thread(target=stop.wait, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def sleeping_threads(count: int) -> subprocess.Popen[str]:
    """A helper process with ``count`` threads waiting (its main thread too), started;
    close its stdin to end it."""
    proc = subprocess.Popen([sys.executable, "-c", _SLEEPERS, str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the helper did not start {count} threads")
    return proc
