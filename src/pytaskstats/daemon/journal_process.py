"""taskstatsd's exit journal: the writer process, from the daemon's side.

In one process the kernel reader and the SQLite writer share one GIL: replayed
ingest measured ~70k records/s, less than either side alone.  So the
:class:`~pytaskstats.daemon.journal.Store` runs in a child (``python -S`` running
:func:`.journal_writer.main`), fed through a socketpair in the frames of
:mod:`.journal_frames`.  The child pushes its :class:`JournalHealth`; this side
keeps the last one, so :attr:`JournalProcess.health` (and ``pending``,
``suspended``, ``counters()``) never wait.  :meth:`JournalProcess.flush` is the
one call that waits for the writer.  Queries read the file directly.

A writer that dies fails the journal: submit() and flush() then raise RuntimeError.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from .journal_frames import (
    CALL,
    HEALTH,
    NOTE,
    REPLY,
    SAMPLES,
    JournalHealth,
    Unframer,
    decode_health,
    encode_exit,
    encode_json,
    json_of,
)
from .journal_queries import Budget, JournalQueries, read
from .journal_rows import JournalEntry
from .journal_schema import JournalError, check_reason, check_settings

__all__ = ["JournalProcess"]

_LOG = logging.getLogger(__name__)
IOV_MAX = 1024  # pieces per sendmsg (Linux's UIO_MAXIOV)
SNDBUF_BYTES = 4 << 20  # the socket's send buffer, if we may (root); else the default
PUSH_BYTES = 64 << 10  # buffered bytes at which submit() sends at once
SEND_SHARE = 0.2  # exits wait here at most this share of max_delay_s, to go in batches
START_TIMEOUT_S = 300.0  # opening runs quick_check, which is slow on a huge journal


class JournalProcess:
    """The journal at ``path`` (a file) with its writer in a child process.

    Settings as :class:`~pytaskstats.daemon.journal.Store`'s, plus the commit rule
    (``batch_size`` exits, or the oldest ``max_delay_s`` seconds old) and
    ``queue_size``, which bounds the exits waiting here to be sent and those the
    writer holds (the rest are counted as ``dropped_queue_full``).  Raises
    JournalError when the child cannot open the journal.  Exits go out in
    batches, from the submitting thread and without blocking, once PUSH_BYTES
    are buffered or the oldest waited SEND_SHARE of ``max_delay_s`` (at
    :meth:`push`, or by a helper thread); the helper also sends what the socket
    could not take, when it has room.  Another thread reads what the writer says.
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
        self._calls = threading.Lock()  # one call at a time
        self._next_id = 1
        self._told = threading.Condition(threading.Lock())  # guards what follows
        self._health = JournalHealth()
        self._replies: dict[int, dict[str, Any]] = {}
        self.queries = JournalQueries(self._read, self.counters)
        self._sock, self._proc = _spawn(self._path, settings)
        self._threads = [threading.Thread(target=target, name=name, daemon=True) for
                         target, name in ((self._send_later, "taskstatsd-journal-tx"),
                                          (self._receive, "taskstatsd-journal-rx"))]
        for thread in self._threads:
            thread.start()
        try:
            self._reply(0, time.monotonic() + START_TIMEOUT_S)
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
        pieces = encode_exit(entry)
        size = sum(map(len, pieces))
        with self._cond:
            self._check_open()
            if self._unsent >= self._queue_size:
                self._dropped += 1
                return False
            if not self._out:
                self._since = time.monotonic()
                self._cond.notify()  # the helper sends it if nothing else does in time
            self._out += pieces
            self._out_bytes += size
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

    def submit_samples(self, values: Sequence[Sequence[Any]]) -> None:
        """Queue sample rows (values in ``SAMPLE_COLUMNS`` order) for the writer, which
        commits them in one transaction; never blocks."""
        if values:
            self._queue(encode_json(SAMPLES, [list(v) for v in values]))

    def note_lost(self, reason: str, n: int = 1) -> None:
        """Count ``n`` exits lost before the journal as ``lost_<reason>``."""
        self._queue(encode_json(NOTE, [f"lost_{check_reason(reason, n)}", n]))

    def _queue(self, frame: bytes) -> None:
        """Queue one frame after what was submitted before it."""
        with self._cond:
            self._check_open()
            if not self._out:
                self._since = time.monotonic()
                self._cond.notify()
            self._out.append(frame)
            self._out_bytes += len(frame)

    # ------------------------------------------------------------ health (never waits)

    @property
    def health(self) -> JournalHealth:
        """What the writer last said of itself (a few ms old at most while it
        works; exact after :meth:`flush`)."""
        with self._told:
            return self._health

    def counters(self) -> dict[str, int]:
        """The writer's counters as last pushed (see :attr:`health`)."""
        return dict(self.health.counters)

    @property
    def pending(self) -> int:
        """Exits accepted and not yet committed or dropped (as of :attr:`health`)."""
        health = self.health
        with self._cond:
            accepted = self._accepted
        return accepted - health.received + health.pending

    @property
    def suspended(self) -> bool:
        """Whether journaling is suspended for lack of disk space."""
        return self.health.suspended

    # ------------------------------------------------------------ calls (wait)

    def flush(self, timeout: float | None = None) -> None:
        """Commit (or count) everything submitted before the call; :attr:`health`
        then counts it all."""
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

    def _read(self, sql: str, params: Sequence[Any], budget: Budget | None) -> list[Any]:
        if not self.health.open:
            return []  # a full disk kept the writer from creating the journal yet
        return read(self._path, sql, params, budget)

    def _call(self, op: str, timeout: float | None = None, *,
              closing: bool = False) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._calls:
            with self._cond:
                if not closing:
                    self._check_open()
                ident, self._next_id = self._next_id, self._next_id + 1
                self._tell_dropped()  # a flush counts every drop before it
                self._out.append(encode_json(CALL, [ident, op]))
            self._drain(deadline)
            self._reply(ident, deadline)

    def _reply(self, ident: int, deadline: float | None) -> dict[str, Any]:
        """Wait for the writer's reply ``ident`` (calls are one at a time)."""
        with self._told:
            while ident not in self._replies:
                if self._failure is not None:
                    raise RuntimeError(f"the journal writer failed: {self._failure}")
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise TimeoutError("no answer from the journal writer in time")
                self._told.wait(wait)
            reply = self._replies.pop(ident)
            self._replies.clear()  # the answers to calls that timed out
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def _receive(self) -> None:
        """The reader thread: keep the writer's health, hand replies to callers, and
        fail the journal when the writer's end closes."""
        unframer = Unframer()
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            data, frames = unframer.feed(chunk)
            with self._told:
                for frame in frames:
                    if frame[0] == HEALTH:
                        self._health = decode_health(json_of(data, frame))
                    elif frame[0] == REPLY:
                        reply = json_of(data, frame)
                        self._replies[reply["id"]] = reply
                self._told.notify_all()
        self._fail(self._gone("its end closed"))

    # ------------------------------------------------------------ sending

    def _check_open(self) -> None:
        if self._stopping:
            raise RuntimeError("the journal is stopped")
        if self._failure is not None:
            raise RuntimeError(f"the journal writer failed: {self._failure}")

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
            frame = encode_json(NOTE, ["dropped_queue_full", self._dropped])
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

    # ------------------------------------------------------------ failure and end

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
        with self._told:
            self._told.notify_all()

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
        for thread in self._threads:
            thread.join(timeout)
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
          "from pytaskstats.daemon.journal_writer import main; sys.exit(main(sys.argv[2:]))")


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
