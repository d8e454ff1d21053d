"""Shared helpers of the benchmark scripts (not a benchmark itself).

Building the C helpers, listing tasks, running contenders interleaved and
printing tables.  Only the standard library and pytaskstats are used here.
"""

from __future__ import annotations

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
from collections.abc import Callable, Sequence
from pathlib import Path

from pytaskstats import NoSuchTask, TaskstatsError
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.kernel import Connection

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


def bulk_scan(pids: Callable[[list[int]], object], ids: list[int],
              repeat: int) -> Callable[[], int]:
    """A scan: ``pids(ids)`` (one bulk query) ``repeat`` times; returns the tasks asked."""

    def scan() -> int:
        for _ in range(repeat):
            pids(ids)
        return repeat * len(ids)

    return scan


def single_scan(pid: Callable[[int], object], ids: list[int],
                repeat: int) -> Callable[[], int]:
    """A scan: ``pid(i)`` for each id, ``repeat`` times (tasks gone are skipped)."""

    def scan() -> int:
        for _ in range(repeat):
            for i in ids:
                try:  # noqa: SIM105 - cheaper than contextlib.suppress in a timed loop
                    pid(i)
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
