"""The metrics endpoint's listen address, parsed without the exporter extra (so a
mistyped ``--listen`` is a usage error whether or not prometheus-client is installed)."""

from __future__ import annotations

LOOPBACK = "127.0.0.1"


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6ADDR]:PORT``, ``:PORT`` or ``PORT`` -> (address, port);
    the address defaults to loopback.  ValueError names what is accepted."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = "", text.strip()
    host = host.removeprefix("[").removesuffix("]") or LOOPBACK
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics listen address {text!r}: expected ADDR:PORT or PORT")
    return host, int(port)
