"""Parts of taskstatsd's STATUS document built from one component each."""

from __future__ import annotations

from typing import Any

from .policy import ExitPolicy
from .server import Server

__all__ = ["policy_status", "server_counters"]


def policy_status(policy: ExitPolicy | None, off: str) -> dict[str, Any]:
    """Whether non-admin listeners get exit records, and why not (``off``)."""
    if policy is None:
        return {"state": "off", "why": off or "no proc connector", "non_admin_exits": "none"}
    return {"state": "on", "trusted": policy.trusted, "non_admin_exits": "own",
            "executables": len(policy.base) + len(policy.exes)}


def server_counters(server: Server) -> dict[str, int]:
    """The client side's counters: records dropped for slow clients, refusals, fds."""
    return {"client_dropped": server.dropped_client_records,
            "clients_refused": server.refused_clients,
            "client_accept_failures": server.accept_failures,
            "client_fds_held": server.held_fds, "client_fds_refused": server.refused_fds,
            "client_reply_peak_bytes": server.reply_peak,
            "namespace_unattributed": server.unattributed()}
