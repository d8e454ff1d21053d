"""``taskstats status``: which source answers, delay accounting, taskstatsd health."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import delayacct
from ..client import choose_backend, daemon_socket
from ..errors import TaskstatsError
from .common import open_client, print_json


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("status", help="show the backend in use and taskstatsd's health",
                       description="Show which source answers queries and why, delay "
                       "accounting, and (when it runs) taskstatsd's health and loss counters.")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=run)


def gather(args: argparse.Namespace) -> dict[str, Any]:
    """The status document: local facts, then the daemon's own status if reachable."""
    path = daemon_socket(args.socket)
    backend, reason = choose_backend(args.backend, path)
    doc: dict[str, Any] = {"backend": backend, "reason": reason,
                           "delayacct": delayacct.status(), "socket": path, "daemon": None}
    try:
        with open_client(args, backend="daemon") as client:
            doc["daemon"] = client.status()
    except TaskstatsError as err:
        doc["daemon_error"] = str(err)
    return doc


def format_status(doc: dict[str, Any]) -> str:
    """Readable lines for the status document."""
    da = {True: "delay accounting: on", False: delayacct.OFF_NOTE,
          None: "delay accounting: not available (no kernel.task_delayacct sysctl)"}
    lines = [f"backend: {doc['backend']} ({doc['reason']})", da[doc["delayacct"]]]
    daemon = doc["daemon"]
    if daemon is None:
        why = doc.get("daemon_error") or ""
        if doc["socket"] in why:
            lines.append(f"taskstatsd: {why}")
        elif "refused" in why:  # it answered: its refusal says why
            lines.append(f"taskstatsd at {doc['socket']}: {why}")
        else:
            lines.append(f"taskstatsd: not reachable at {doc['socket']}: {why or 'no answer'}")
        return "\n".join(lines)
    d, k = daemon["daemon"], daemon["kernel"]
    if "pid" in d:  # root and the admin group see the whole document
        lines += [f"taskstatsd: pid {d['pid']}, version {d['version']}, up "
                  f"{d['uptime_s']:.0f}s, socket {d['socket']}, state {d['state_dir']}",
                  f"kernel: struct taskstats v{k['struct_version']}, family id "
                  f"{k['family_id']}",
                  f"listeners: {daemon['listeners']['kernel_sockets']} kernel sockets, "
                  f"{daemon['listeners']['client_listeners']} client listeners; "
                  f"{daemon['clients']} clients"]
    else:  # what others may see (daemon/policy.py)
        lines += [f"taskstatsd: version {d['version']}, up {d['uptime_s']:.0f}s",
                  f"kernel: struct taskstats v{k['struct_version']}, family id "
                  f"{k['family_id']}"]
    policy = daemon.get("exit_policy")
    if policy is not None:
        why = f" ({policy['why']})" if policy.get("why") else ""
        lines.append(f"exit records for non-admin listeners: {policy['non_admin_exits']}{why}")
    lines.append("counters: " + ", ".join(f"{k} {v}" for k, v in daemon["counters"].items()))
    for start, end, why in daemon["gaps"]:
        lines.append(f"gap: {why} for {(end - start) / 1e9:.1f}s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the status; exit 1 if the daemon was asked for and is not reachable."""
    doc = gather(args)
    doc["uid"] = os.getuid()
    if args.json:
        print_json(doc)
    else:
        print(format_status(doc))
    if doc["daemon"] is None and doc["backend"] == "daemon":
        print(f"taskstats: {doc.get('daemon_error') or 'taskstatsd did not answer'}",
              file=sys.stderr)
        return 1
    return 0
