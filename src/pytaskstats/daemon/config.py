"""taskstatsd configuration: defaults, an INI file, then command-line flags."""

from __future__ import annotations

import argparse
import configparser
import grp
from collections.abc import Sequence
from dataclasses import dataclass, fields

from ..transport import DEFAULT_SOCKET

DEFAULT_STATE_DIR = "/var/lib/taskstats"
DEFAULT_CONFIG = "/etc/taskstats/taskstatsd.conf"


@dataclass
class Config:
    """Everything taskstatsd can be told; units in the names."""

    socket: str = DEFAULT_SOCKET
    state_dir: str = DEFAULT_STATE_DIR
    foreground: bool = False
    admin_group: str = ""  # members see every task, like root
    synchronous: str = "NORMAL"  # SQLite durability: NORMAL or FULL
    retention_days: float = 30.0
    max_journal_mb: float = 1024.0
    low_free_pct: float = 2.0  # suspend journaling below this free space
    resume_free_pct: float = 4.0  # and resume at or above this
    rcvbuf_bytes: int = 32 << 20  # per kernel listener socket
    max_clients: int = 256
    client_queue_records: int = 8192
    max_request_bytes: int = 65536
    max_clients_per_uid: int = 32  # connections one non-admin uid may hold
    admin_reserved_clients: int = 8  # the last of max_clients: root and admins only
    client_reply_bytes: int = 256 * 1024  # queued answers; then its requests wait
    client_queue_bytes: int = 4 << 20  # queued exit records (with client_queue_records)
    client_turn_messages: int = 16  # requests answered per client per loop turn
    client_turn_ms: float = 0.5  # and for at most this long (the last one finishes)
    cgroups: bool = True  # capture each exiting process's cgroup path
    source: str = "auto"  # auto (kernel, else /proc), kernel, or procfs
    procfs_interval_s: float = 1.0  # /proc scan period when running on /proc
    metrics_listen: str = ""  # ADDR:PORT (or PORT, on 127.0.0.1) of /metrics; off when empty
    metrics_groups: str = ""  # command groups: "NAME=REGEX,NAME=REGEX" (first match wins)
    metrics_cgroup_depth: int = 3  # cgroup labels keep this many path components
    metrics_max_series: int = 500  # at most this many cgroup labels; the rest are "other"
    metrics_interval_s: float = 15.0  # live task sampling period

    @property
    def admin_gid(self) -> int | None:
        """The admin group's gid, None when unset."""
        if not self.admin_group:
            return None
        if self.admin_group.isdigit():
            return int(self.admin_group)
        return grp.getgrnam(self.admin_group).gr_gid


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskstatsd",
        description="The kernel's taskstats as a service: exit listeners, an SQLite exit "
        "journal, and a Unix socket that unprivileged users and containers can query.")
    p.add_argument("--config", default=None, help=f"INI file (default {DEFAULT_CONFIG} if "
                   "present), section [taskstatsd], keys as the long options")
    p.add_argument("--foreground", action="store_true", default=None,
                   help="stay in the foreground (as under systemd)")
    for f in fields(Config):
        if f.name == "foreground":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, dest=f.name, type=kind, default=None,
                           help=f"default: {f.default}")
    return p


def load(argv: Sequence[str] | None = None) -> Config:
    """Defaults, then the config file, then flags."""
    args = _parser().parse_args(argv)
    cfg = Config()
    path: str | None = args.config
    ini = configparser.ConfigParser()
    read = ini.read(path or DEFAULT_CONFIG)
    if path and not read:
        raise SystemExit(f"taskstatsd: cannot read config file {path}")
    if ini.has_section("taskstatsd"):
        for key, value in ini.items("taskstatsd"):
            _set(cfg, key.replace("-", "_"), value)
    for f in fields(Config):
        flag = getattr(args, f.name, None)
        if flag is not None:
            setattr(cfg, f.name, flag)
    return cfg


def _set(cfg: Config, name: str, text: str) -> None:
    kinds = {f.name: str(f.type) for f in fields(Config)}
    if name not in kinds:
        raise SystemExit(f"taskstatsd: unknown config key {name!r}")
    kind = kinds[name]
    if kind == "bool":
        setattr(cfg, name, text.strip().lower() in ("1", "yes", "true", "on"))
    elif kind in ("int", "float"):
        setattr(cfg, name, int(text) if kind == "int" else float(text))
    else:
        setattr(cfg, name, text.strip())
