"""taskstatsd's exit journal with its writer in a process of its own.

In one process the kernel reader and the SQLite writer share one GIL: replayed
ingest measured ~70k records/s, less than either side alone.
:class:`JournalProcess` keeps the :class:`~pytaskstats.daemon.journal.Journal`
API the daemon uses and runs that Journal in a child (``python -S``
running :func:`main` with FD and SETTINGS), fed through a socketpair.
The child reads, submits and commits in one thread (the Journal without its
writer thread).  Queries read the file directly.

Frames, in order on one stream: kind (1 byte), payload length (u32), payload.

- ``E`` parent -> child, one exit: time_ns (i64), cpu (i32; -1 None), cgroup
  length (i32; -1 None), raw length (u32), owner_sees (i8; -1 None), pidns and
  ns_ids lengths (i32 each; -1 None), the cgroup (UTF-8), pidns, ns_ids (ASCII),
  the raw message;
- ``N`` parent -> child, JSON ``[counter, n]``: losses counted before the child;
- ``C`` parent -> child, JSON ``[id, op]``, op ``status``, ``flush`` or ``stop``;
- ``R`` child -> parent, JSON ``{"id", "counters", "suspended", "pending",
  "received"}`` or ``{"id", "error"}``; id 0 answers the start.

The child ignores SIGINT and SIGTERM (a service stop signals the whole group).
It ends on ``stop`` (a clean stop), or when the parent's end closes: the daemon
died, so it commits what it holds and records no stop, and the next start notes
a "daemon_down" gap.  A writer that dies fails the journal: submit() then raises
RuntimeError, as for the writer thread.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from .journal import (
    Item,
    Journal,
    JournalEntry,
    JournalError,
    Tags,
    check_reason,
    check_settings,
    is_full,
)
from .journal_queries import JournalQueries, read

__all__ = ["JournalProcess", "main"]

_LOG = logging.getLogger(__name__)
FRAME = struct.Struct("=BI")  # kind, payload length
ENTRY = struct.Struct("=BIqiiIbii")  # FRAME, time_ns, cpu, cgroup, raw lengths, then tags
_ITEM_SIZE = ENTRY.size - FRAME.size
E, N, C, R = b"ENCR"
IOV_MAX = 1024  # pieces per sendmsg (Linux's UIO_MAXIOV)
SNDBUF_BYTES = 4 << 20  # the socket's send buffer, if we may (root); else the default
RECV_BYTES = 1 << 20  # the child reads up to this much at once
PUSH_BYTES = 64 << 10  # buffered bytes at which submit() sends at once
SEND_SHARE = 0.2  # exits wait here at most this share of max_delay_s, to go in batches
START_TIMEOUT_S = 300.0  # opening runs quick_check, which is slow on a huge journal


def _frame(kind: int, payload: Any) -> bytes:
    body = json.dumps(payload).encode()
    return FRAME.pack(kind, len(body)) + body


def _frames(buf: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """The complete frames at the start of ``buf``: (kind, start, end) of each
    frame (header included), and where the first incomplete one starts."""
    out, n, pos = [], len(buf), 0
    while n - pos >= FRAME.size:
        kind, length = FRAME.unpack_from(buf, pos)
        end = pos + FRAME.size + length
        if end > n:
            break
        out.append((kind, pos, end))
        pos = end
    return out, pos


class JournalProcess(JournalQueries):
    """The journal at ``path`` (a file) with its writer in a child process.

    Settings as :class:`~pytaskstats.daemon.journal.Journal`'s; ``queue_size``
    also bounds the exits waiting here to be sent (the rest are counted as
    ``dropped_queue_full``).  Raises JournalError when the child cannot open the
    journal.  Exits go out in batches, from the submitting thread and without
    blocking, once PUSH_BYTES are buffered or the oldest waited SEND_SHARE of
    ``max_delay_s`` (at :meth:`push`, or by a helper thread); the helper also
    sends what the socket could not take, when it has room.  Calls (counters, flush...) wait for the
    child's reply; they and submit raise RuntimeError once the child is gone.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL",
                 batch_size: int = 100, max_delay_s: float = 0.25, queue_size: int = 100_000,
                 retention_s: float | None = None, max_bytes: int | None = None,
                 low_free_pct: float = 2.0, resume_free_pct: float = 4.0,
                 check_interval_s: float = 5.0) -> None:
        settings = {"synchronous": synchronous, "batch_size": batch_size,
                    "max_delay_s": max_delay_s, "queue_size": queue_size,
                    "retention_s": retention_s, "max_bytes": max_bytes,
                    "low_free_pct": low_free_pct, "resume_free_pct": resume_free_pct,
                    "check_interval_s": check_interval_s}
        check_settings(**settings)  # type: ignore[arg-type]
        self._path = os.path.abspath(os.fspath(path))
        self._queue_size, self._send_delay = queue_size, max_delay_s * SEND_SHARE
        self._cond = threading.Condition(threading.Lock())
        self._out: deque[bytes | memoryview] = deque()  # unsent, in order; under _cond...
        self._out_bytes = 0
        self._next_push = PUSH_BYTES  # ... _out_bytes at which submit() sends
        self._unsent = 0  # ... exits submitted since _out was last empty (a bound)
        self._accepted = 0  # exits accepted since the start
        self._dropped = 0  # dropped_queue_full not yet told to the child
        self._stalled = False  # the socket was full: the helper thread sends the rest
        self._since = 0.0  # monotonic time _out became non-empty
        self._stopping = False
        self._failure: str | None = None
        self._calls = threading.Lock()  # one call at a time, and the replies are its
        self._next_id = 1
        self._inbox = b""
        self._opened = True  # whether the child could create the journal (its replies say)
        self._sock, self._proc = _spawn(self._path, settings)
        self._sender = threading.Thread(target=self._send_later, name="taskstatsd-journal-tx",
                                        daemon=True)
        self._sender.start()
        try:
            self._reply(0, START_TIMEOUT_S)
        except BaseException as err:
            self._abort()
            if isinstance(err, RuntimeError):
                raise JournalError(f"{self._path}: {err}") from None
            raise

    # ------------------------------------------------------------ producer side

    def submit(self, entry: JournalEntry) -> bool:
        """Queue ``entry`` for the writer; never blocks.  False (counted as
        ``dropped_queue_full``) when ``queue_size`` exits wait here already.
        Raises RuntimeError once stopped or failed."""
        cpu, cgroup = entry.record.cpu, entry.cgroup
        sees, pidns, ids = entry.tags
        path = b"" if cgroup is None else cgroup.encode("utf-8", "surrogateescape")
        ns = (b"" if pidns is None else pidns.encode()) + (b"" if ids is None else ids.encode())
        head = ENTRY.pack(E, _ITEM_SIZE + len(path) + len(ns) + len(entry.raw), entry.time_ns,
                          -1 if cpu is None else cpu, -1 if cgroup is None else len(path),
                          len(entry.raw), -1 if sees is None else int(sees),
                          -1 if pidns is None else len(pidns),
                          -1 if ids is None else len(ids))
        with self._cond:
            self._check_open()
            if self._unsent >= self._queue_size:
                self._dropped += 1
                return False
            if not self._out:
                self._since = time.monotonic()
                self._cond.notify()  # the helper sends it if nothing else does in time
            self._out += (head, path, ns, entry.raw)
            self._out_bytes += len(head) + len(path) + len(ns) + len(entry.raw)
            self._unsent += 1
            self._accepted += 1
            if self._out_bytes >= self._next_push:
                self._send_some()
        return True

    def push(self) -> None:
        """Send, without blocking, what has waited ``send_delay`` (the daemon calls
        this after each batch of exits; what the socket cannot take goes later)."""
        with self._cond:
            self._check_open()
            if self._out and not self._stalled and self._age() >= self._send_delay:
                self._send_some()

    def note_lost(self, reason: str, n: int = 1) -> None:
        """Count ``n`` exits lost before the journal as ``lost_<reason>``."""
        frame = _frame(N, [f"lost_{check_reason(reason, n)}", n])
        with self._cond:
            self._check_open()
            if not self._out:
                self._since = time.monotonic()
                self._cond.notify()
            self._out.append(frame)
            self._out_bytes += len(frame)

    def counters(self) -> dict[str, int]:
        """The journal's counters, as :meth:`Journal.counters`."""
        counters: dict[str, int] = self._call("status")["counters"]
        return counters

    @property
    def pending(self) -> int:
        """Exits accepted and not yet committed or dropped."""
        reply = self._call("status")
        with self._cond:
            accepted = self._accepted
        return int(accepted - reply["received"] + reply["pending"])

    @property
    def suspended(self) -> bool:
        """Whether journaling is suspended for lack of disk space."""
        return bool(self._call("status")["suspended"])

    def flush(self, timeout: float | None = None) -> None:
        """Commit (or count) everything submitted before the call."""
        self._call("flush", timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Flush, record a clean stop and end the child; idempotent."""
        with self._cond:
            stopping, self._stopping = self._stopping, True
        if not stopping and self._failure is None:
            try:
                self._call("stop", timeout, closing=True)
            except (RuntimeError, TimeoutError) as err:
                _LOG.warning("journal writer did not stop cleanly: %s", err)
        self._abort(timeout)

    def __enter__(self) -> JournalProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _select(self, sql: str, params: Sequence[Any]) -> list[Any]:
        if not self._opened:
            return []  # a full disk kept the writer from creating the journal yet
        return read(self._path, sql, params, self.budget)

    # ------------------------------------------------------------ sending

    def _check_open(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"the journal writer failed: {self._failure}")
        if self._stopping:
            raise RuntimeError("the journal is stopped")

    def _send_some(self) -> bool:
        """Send what the socket takes now (under _cond), gathered from the pieces
        without copying them; True once everything is out."""
        self._tell_dropped()
        out = self._out
        while out:
            pieces = list(itertools.islice(out, IOV_MAX))
            try:
                sent = self._sock.sendmsg(pieces, [], socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError as err:
                self._failed(self._gone(f"cannot send to it: {err}"))
                return True
            self._out_bytes -= sent
            if _consume(out, sent):
                self._stalled = True
                self._next_push = self._out_bytes + PUSH_BYTES
                self._cond.notify()
                return False
        self._unsent, self._stalled, self._next_push = 0, False, PUSH_BYTES
        return True

    def _tell_dropped(self) -> None:
        """Queue the drops counted so far for the child (under _cond; at the end,
        as the front may be a frame sent in part)."""
        if self._dropped:
            frame = _frame(N, ["dropped_queue_full", self._dropped])
            self._out.append(frame)
            self._out_bytes += len(frame)
            self._dropped = 0

    def _send_later(self) -> None:
        """The helper thread: send what waited ``send_delay`` unsent, and the rest
        when the socket has room again."""
        while True:
            with self._cond:
                if self._failure is not None or (self._stopping and not self._out):
                    return
                if not self._stalled:
                    if self._out and self._age() >= self._send_delay:
                        self._send_some()
                    else:
                        self._cond.wait(self._send_delay - self._age() if self._out else None)
                    continue
            select.select([], [self._sock], [], self._send_delay)
            with self._cond:
                self._send_some()

    def _age(self) -> float:
        """Seconds the oldest unsent piece has waited (under _cond, _out not empty)."""
        return time.monotonic() - self._since

    def _drain(self, deadline: float | None) -> None:
        """Send everything buffered, waiting for room (a call's frame is last)."""
        while True:
            with self._cond:
                if self._failure is not None:
                    raise RuntimeError(f"the journal writer failed: {self._failure}")
                if self._send_some():
                    return
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([], [self._sock], [], wait)[1] and wait is not None:
                raise TimeoutError("the journal writer is not reading")

    # ------------------------------------------------------------ calls

    def _call(self, op: str, timeout: float | None = None, *,
              closing: bool = False) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._calls:
            with self._cond:
                if not closing:
                    self._check_open()
                ident, self._next_id = self._next_id, self._next_id + 1
                self._tell_dropped()  # a status call counts every drop before it
                self._out.append(_frame(C, [ident, op]))
            self._drain(deadline)
            return self._reply(ident, None if deadline is None else deadline - time.monotonic())

    def _reply(self, ident: int, timeout: float | None) -> dict[str, Any]:
        """Read the child's reply ``ident`` (calls are one at a time)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frames, _ = _frames(self._inbox)
            if frames:
                _, start, end = frames[0]
                reply: dict[str, Any] = json.loads(self._inbox[start + FRAME.size:end])
                self._inbox = self._inbox[end:]
                if reply.get("id") != ident:
                    continue  # the answer to a call that timed out
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                self._opened = reply.get("open", self._opened)
                return reply
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._sock], [], [], wait)[0]:
                raise TimeoutError(f"no answer from the journal writer in {timeout} s")
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                code = self._proc.wait()
                self._fail(f"its process exited with status {code}")
                raise RuntimeError(f"the journal writer failed: {self._failure}")
            self._inbox += chunk

    def _gone(self, why: str) -> str:
        """Why the writer cannot be reached: its exit status when its end is closed
        because it died (reaped within a second), else ``why``."""
        try:
            return f"its process exited with status {self._proc.wait(timeout=1)}"
        except subprocess.TimeoutExpired:
            return why

    def _fail(self, why: str) -> None:
        with self._cond:
            self._failed(why)

    def _failed(self, why: str) -> None:
        """Note the child gone (under _cond): calls and submits raise from now on."""
        if self._failure is None:
            self._failure = why
            if not self._stopping:
                _LOG.error("journal writer failed: %s", why)
        self._cond.notify_all()

    def _abort(self, timeout: float | None = None) -> None:
        """Close our end (the child then ends) and reap it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with self._cond:
            if self._failure is None:
                self._failure = "stopped"
            self._cond.notify_all()
        self._sender.join(timeout)
        self._sock.close()


def _consume(out: deque[bytes | memoryview], sent: int) -> bool:
    """Drop the first ``sent`` bytes of ``out``; True if that ended inside a piece
    or before the first IOV_MAX pieces were all sent (the socket is full)."""
    for _ in range(min(len(out), IOV_MAX)):
        size = len(out[0])
        if size > sent:
            if sent:
                out[0] = memoryview(out[0])[sent:]
            return True
        out.popleft()
        sent -= size
    return False


# The child runs without site (-S): it needs only the standard library and this
# package, found where this copy of it lives (an installed or a source tree).
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); "
          "from pytaskstats.daemon.journal_process import main; sys.exit(main(sys.argv[2:]))")


def _spawn(path: str, settings: dict[str, Any]) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for option in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            ours.setsockopt(socket.SOL_SOCKET, option, SNDBUF_BYTES)
            break
    try:
        fd = theirs.fileno()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _CHILD, _ROOT, str(fd),
             json.dumps({"path": path, **settings})], pass_fds=[fd], stdin=subprocess.DEVNULL)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ours, proc


# ---------------------------------------------------------------- the child


def main(argv: Sequence[str] | None = None) -> int:
    """The writer process: FD (its end of the socketpair) and the JSON settings."""
    args = sys.argv[1:] if argv is None else argv
    os.umask(0o077)  # before the first open: what it creates is private to root
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(args[0]))
    settings = json.loads(args[1])
    path = settings.pop("path")
    journal: Journal | _Unopened
    try:
        journal = Journal(path, **settings, writer_thread=False)
    except Exception as err:  # told to the parent, which raises JournalError
        if not is_full(err):
            sock.sendall(_frame(R, {"id": 0, "error": str(err)}))
            return 1
        journal = _Unopened(path, settings)
    return _Child(sock, journal).serve()


class _Unopened:
    """A journal that could not be created for lack of disk space: journaling is
    suspended from the start (every exit counted as ``dropped_disk_low``) and the
    journal is created at a check once there is room; the counts and the
    "disk_low" gap then go into it (:attr:`opened`)."""

    failure: BaseException | None = None
    pending = 0
    suspended = True

    def __init__(self, path: str, settings: dict[str, Any]) -> None:
        self._path, self._settings = path, settings
        self._since_ns = time.time_ns()
        self._interval: float = settings["check_interval_s"]
        self._next: float = time.monotonic() + self._interval
        self._counts = {"journaled": 0, "dropped_disk_low": 0, "suspensions": 1}
        self.opened: Journal | None = None
        _LOG.warning("journal %s cannot be created (disk full): suspended", path)

    def counters(self) -> dict[str, int]:
        return dict(self._counts)

    def submit_many(self, items: Sequence[Item]) -> int:
        self._counts["dropped_disk_low"] += len(items)
        return 0

    def note(self, counter: str, n: int) -> None:
        self._counts[counter] = self._counts.get(counter, 0) + n

    def flush(self) -> None:
        """Nothing waits: every exit was counted when it came."""

    def stop(self, clean: bool = True) -> None:
        """Nothing to close."""

    def idle_for(self) -> float:
        return max(0.0, self._next - time.monotonic())

    def work(self) -> None:
        """At each check interval, try to create the journal."""
        if self.idle_for() > 0:
            return
        self._next = time.monotonic() + self._interval
        try:
            journal = Journal(self._path, **self._settings, writer_thread=False)
        except Exception as err:
            if not is_full(err):
                self.failure = err
            return
        for name, n in self._counts.items():
            if n and name.startswith(("lost_", "dropped_")):
                journal.note(name, n)
        try:
            journal.record_suspension(self._since_ns)
        except sqlite3.Error as err:  # full again: the journal suspends itself
            _LOG.warning("journal %s: cannot record the disk_low gap: %s", self._path, err)
        self.opened = journal


class _Child:
    def __init__(self, sock: socket.socket, journal: Journal | _Unopened) -> None:
        self.sock, self.journal = sock, journal
        self.received = 0

    def serve(self) -> int:
        """Read, submit and commit in this one thread (no GIL to share) until told
        to stop (0), the parent is gone (0) or the journal failed (1)."""
        journal = self.journal
        self._reply(0, "status")
        buf = b""
        while journal.failure is None:
            if select.select([self.sock], [], [], journal.idle_for())[0]:
                chunk = self.sock.recv(RECV_BYTES)
                if not chunk:
                    journal.stop(clean=False)  # the daemon died: keep what we hold
                    return 0
                data = buf + chunk if buf else chunk
                frames, pos = _frames(data)
                if self._handle(data, frames):
                    return 0
                buf = data[pos:]
            journal.work()
            if isinstance(journal, _Unopened) and journal.opened is not None:
                journal = self.journal = journal.opened
        return 1

    def _handle(self, data: bytes, frames: list[tuple[int, int, int]]) -> bool:
        """Submit the exits and run the calls of ``frames``, in order; True on stop."""
        items: list[Item] = []
        for kind, start, end in frames:
            if kind == E:
                items.append(_item(data, start, end))
                continue
            self._submit(items)
            items = []
            body = json.loads(data[start + FRAME.size:end])
            if kind == N:
                self.journal.note(body[0], body[1])
            elif kind == C and self._call(*body):
                return True
        self._submit(items)
        return False

    def _submit(self, items: list[Item]) -> None:
        if items:
            self.journal.submit_many(items)
            self.received += len(items)

    def _call(self, ident: int, op: str) -> bool:
        try:
            if op == "flush":
                self.journal.flush()
            elif op == "stop":
                self.journal.stop()
        except RuntimeError as err:
            self.sock.sendall(_frame(R, {"id": ident, "error": str(err)}))
            return op == "stop"
        self._reply(ident, op)
        return op == "stop"

    def _reply(self, ident: int, op: str) -> None:
        j = self.journal
        status = ({"counters": j.counters(), "suspended": j.suspended, "pending": j.pending,
                   "open": isinstance(j, Journal)} if op != "stop" else {})
        self.sock.sendall(_frame(R, {"id": ident, "received": self.received, **status}))


def _item(data: bytes, start: int, end: int) -> Item:
    _, _, time_ns, cpu, cgroup_len, raw_len, sees, pidns_len, ids_len = ENTRY.unpack_from(
        data, start)
    at = start + ENTRY.size
    texts: list[str | None] = []
    for length in (cgroup_len, pidns_len, ids_len):
        texts.append(None if length < 0 else
                     data[at:at + length].decode("utf-8", "surrogateescape"))
        at += max(length, 0)
    if at + raw_len != end:
        raise ValueError(f"exit frame of {end - start} bytes declares {raw_len} raw bytes")
    cgroup, pidns, ids = texts
    tags = Tags(None if sees < 0 else bool(sees), pidns, ids)
    return time_ns, None if cpu < 0 else cpu, cgroup, data[at:end], tags


if __name__ == "__main__":
    sys.exit(main())
