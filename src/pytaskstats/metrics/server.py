"""The /metrics HTTP endpoint: prometheus_client's WSGI app on a registry of our own,
served by a bounded server: at most ``max_connections`` requests at once (more are
answered 503 and closed), each read within ``timeout_s`` and ``MAX_REQUEST_BYTES``.

The endpoint is unauthenticated and shows per-cgroup totals to whoever reaches it:
bind it to loopback (the default) or firewall it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from .address import parse_listen

MAX_CONNECTIONS = 16  # requests served at once (one thread each)
TIMEOUT_S = 5.0  # to read a request (line and headers), and per blocked write
MAX_REQUEST_BYTES = 16384  # request line and headers
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"Connection: close\r\nContent-Length: 25\r\n\r\ntoo many scrapes at once\n")


class RequestTooLarge(OSError):
    """A request over MAX_REQUEST_BYTES."""


class _Reader:
    """The request side of a connection, as a file for http.server: at most
    ``limit`` bytes, all read before ``deadline`` (time.monotonic(), s), else
    TimeoutError or RequestTooLarge: a client sending a byte at a time cannot keep
    a thread."""

    def __init__(self, sock: socket.socket, limit: int, deadline: float) -> None:
        self.sock, self.left, self.deadline = sock, limit, deadline
        self.buf = b""

    def _fill(self) -> bool:
        """Read what comes next into ``buf``; False at the end of the stream."""
        if self.left <= 0:
            raise RequestTooLarge(f"request over {MAX_REQUEST_BYTES} bytes")
        wait = self.deadline - time.monotonic()
        if wait <= 0:
            raise TimeoutError("request not read in time")
        self.sock.settimeout(wait)
        chunk = self.sock.recv(min(4096, self.left))
        self.left -= len(chunk)
        self.buf += chunk
        return bool(chunk)

    def readline(self, size: int = -1) -> bytes:
        """One line (at most ``size`` bytes when ``size`` >= 0)."""
        while b"\n" not in self.buf and (size < 0 or len(self.buf) < size) and self._fill():
            pass
        end = self.buf.find(b"\n") + 1 or len(self.buf)
        if size >= 0:
            end = min(end, size)
        line, self.buf = self.buf[:end], self.buf[end:]
        return line

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes (all until the end of the stream when negative)."""
        while (size < 0 or len(self.buf) < size) and self._fill():
            pass
        end = len(self.buf) if size < 0 else size
        data, self.buf = self.buf[:end], self.buf[end:]
        return data

    def close(self) -> None:
        """Nothing to release (the connection is the server's)."""


class _Handler(WSGIRequestHandler):
    """Reads the request through a bounded :class:`_Reader`; logs nothing."""

    timeout = TIMEOUT_S  # for writes: a client that does not read is dropped

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        limit = getattr(self.server, "timeout_s", TIMEOUT_S)
        self.rfile = _Reader(self.connection, MAX_REQUEST_BYTES,  # type: ignore[assignment]
                             time.monotonic() + limit)

    def parse_request(self) -> bool:
        ok = super().parse_request()  # the headers are read: now the answer is written
        self.connection.settimeout(TIMEOUT_S)
        return ok

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per request, at most ``max_connections`` at once; errors of a
    request (a timeout, a client gone) only close its connection."""

    daemon_threads = True
    request_queue_size = 64  # listen() backlog (5 by default: SYNs dropped, retried)
    max_connections = MAX_CONNECTIONS
    timeout_s = TIMEOUT_S
    busy = 0  # connections answered 503

    def server_activate(self) -> None:
        self.slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.busy += 1
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed request is closed (by the caller) without a traceback."""


def _server_class(addr: str, port: int) -> type[_Server]:
    """_Server for the address family of ``addr``."""
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
    return type("MetricsHTTPServer", (_Server,), {"address_family": family})


class MetricsServer:
    """Serves ``registry`` at http://ADDR:PORT/metrics from a daemon thread, at most
    ``max_connections`` requests at once, each read within ``timeout_s``."""

    def __init__(self, registry: CollectorRegistry, listen: str, *,
                 max_connections: int = MAX_CONNECTIONS, timeout_s: float = TIMEOUT_S) -> None:
        addr, port = parse_listen(listen)
        cls = _server_class(addr, port)
        cls.max_connections, cls.timeout_s = max_connections, timeout_s
        self._httpd = make_server(addr, port, make_wsgi_app(registry), cls,
                                  handler_class=_Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where it serves (the real port when 0 was asked for)."""
        host, port = self._httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
