"""The package's layers, bottom to top: a module imports only from its own layer or
below (tests/test_layers.py checks every import, lazy ones included).

- codec: pure functions and values over bytes: the netlink, genetlink and taskstats
  codecs, taskstatsd's extension protocol, the field table, records, errors;
- sources: what reads the kernel, /proc or taskstatsd: transports, the kernel
  client (netlink or taskstatsd's socket), the procfs source, the backend contracts;
- client: the ``Client`` facade, and the text formatting that services and the
  command line share;
- services: taskstatsd, the Prometheus exporter, top, the HTML reports (and, in
  ``report``, the critical path, traces and run comparisons);
- cli: the ``taskstats`` command line.
"""

from __future__ import annotations

__all__ = ["LAYERS", "MODULES", "layer_of"]

LAYERS = ("codec", "sources", "client", "services", "cli")

# module (or package: all modules below it) -> layer; the longest match wins
MODULES: dict[str, str] = {
    **dict.fromkeys(("errors", "fields", "records", "timeviews", "netlink", "genetlink",
                     "taskstats", "cpulist", "plausible", "summary", "extproto", "layers",
                     "replyshape"),
                    "codec"),
    **dict.fromkeys(("transport", "kernel", "listener", "procfs", "procfs_parse", "procfs_mapping",
                     "connector", "delayacct", "birthcgroups", "cgroupfd", "backends",
                     "procinfo", "sysstat"),
                    "sources"),
    **dict.fromkeys(("client", "textfmt", "processes"), "client"),
    **dict.fromkeys(("daemon", "metrics", "top", "report"), "services"),
    **dict.fromkeys(("cli", "__main__", "apidoc"), "cli"),
}


def layer_of(module: str) -> int | None:
    """The layer (index into :data:`LAYERS`) of ``pytaskstats.<...>`` module
    ``module``; None when the table does not place it."""
    parts = module.split(".")
    if parts[0] != "pytaskstats":
        return None
    if len(parts) == 1:  # the package's __init__: the public API, Client included
        return LAYERS.index("client")
    for end in range(len(parts), 1, -1):
        key = ".".join(parts[1:end])
        if key in MODULES:
            return LAYERS.index(MODULES[key])
    return None
