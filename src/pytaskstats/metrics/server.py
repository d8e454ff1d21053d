"""The /metrics HTTP endpoint: prometheus_client's server on a registry of our own."""

from __future__ import annotations

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

LOOPBACK = "127.0.0.1"


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6ADDR]:PORT``, ``:PORT`` or ``PORT`` -> (address, port);
    the address defaults to loopback."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    host = host.removeprefix("[").removesuffix("]") or LOOPBACK
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics listen address {text!r}: expected ADDR:PORT or PORT")
    return host, int(port)


class MetricsServer:
    """Serves ``registry`` at http://ADDR:PORT/metrics from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        addr, port = parse_listen(listen)
        self._httpd, self._thread = start_http_server(port, addr, registry=registry)

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
