"""What a scraper may cost the /metrics endpoint (issue 11, finding F7): slow or
half-sent requests neither get a thread each nor hold one past the read timeout,
and a request is bounded in size."""

from __future__ import annotations

import os
import select
import socket
import time
import urllib.error
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from prometheus_client.registry import CollectorRegistry

from pytaskstats.metrics.server import MAX_CONNECTIONS, MetricsServer

from .conftest import wait_until
from .daemon_util import RunningDaemon
from .test_metrics import _metrics_url, fetch

HALF = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"  # no blank line: never finished


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def _closed(sock: socket.socket) -> bool:
    """Whether the server has answered or closed ``sock`` (it reads what came)."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    return True


def _wait_closed(socks: list[socket.socket], count: int, timeout: float = 20.0) -> None:
    """Wait until at least ``count`` of ``socks`` were answered or closed."""
    deadline, done = time.monotonic() + timeout, 0
    pending = list(socks)
    while done < count:
        assert time.monotonic() < deadline, f"only {done} of {count} connections closed"
        ready = select.select(pending, [], [], 0.1)[0]
        for sock in ready:
            if _closed(sock):
                pending.remove(sock)
                done += 1


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.kernel
def test_half_sent_requests_do_not_get_a_thread_each() -> None:
    """48 connections to taskstatsd's endpoint each send half a request and wait:
    all but MAX_CONNECTIONS are answered 503 and closed at once, the daemon has at
    most MAX_CONNECTIONS more threads, a scrape meanwhile is told 503; once the
    slow ones go, scrapes are served."""
    daemon = RunningDaemon(None, "--metrics-listen", "127.0.0.1:0")
    socks: list[socket.socket] = []
    try:
        url = _metrics_url(daemon)
        fetch(url)
        before = _threads(daemon.pid)
        for _ in range(48):
            socks.append(_connect(url))
            socks[-1].sendall(HALF)
        _wait_closed(socks, 48 - MAX_CONNECTIONS)
        assert _threads(daemon.pid) <= before + MAX_CONNECTIONS
        with pytest.raises(urllib.error.HTTPError, match="503"):
            fetch(url)
        for sock in socks:
            sock.close()
        def served() -> str | None:
            try:
                return fetch(url)
            except urllib.error.HTTPError:
                return None  # still busy: the slow ones may not have left yet
        assert "taskstats_up" in wait_until(served, "a scrape after the slow ones left")
    finally:
        for sock in socks:
            sock.close()
        daemon.close()


@pytest.fixture
def quick_server() -> Iterator[MetricsServer]:
    """An endpoint on an empty registry whose requests must arrive within 0.3 s."""
    server = MetricsServer(CollectorRegistry(), "0", timeout_s=0.3)
    try:
        yield server
    finally:
        server.close()


def test_a_request_dripped_a_byte_at_a_time_is_cut_off(quick_server: MetricsServer) -> None:
    """A client that keeps sending one byte of its request line after another (each
    within the timeout) is closed once the request's time is up, unanswered."""
    sock = _connect(quick_server.url)
    got = b""
    try:
        deadline = time.monotonic() + 20
        for byte in HALF * 1000:  # a byte every 20 ms: a per-read timeout never fires
            assert time.monotonic() < deadline, "a dripping client kept its thread"
            if select.select([sock], [], [], 0.02)[0]:
                got = sock.recv(65536)
                break
            sock.send(bytes([byte]))
    except (ConnectionResetError, BrokenPipeError):
        pass  # closed with bytes unread
    finally:
        sock.close()
    assert b"200 OK" not in got


def test_an_oversized_request_is_refused(quick_server: MetricsServer) -> None:
    """64 KiB of headers (over MAX_REQUEST_BYTES) are not read: the connection is
    closed without an answer."""
    sock = _connect(quick_server.url)
    got = b""
    try:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n")
        for _ in range(64):
            sock.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
        sock.sendall(b"\r\n")
        while chunk := sock.recv(65536):  # a timeout (the server hung) fails the test
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass  # closed with bytes unread
    finally:
        sock.close()
    assert b"200 OK" not in got
