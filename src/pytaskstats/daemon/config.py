"""taskstatsd configuration: defaults, an INI file, then command-line flags.

:func:`load` checks every setting (type, range, choice, paths, the admin group)
before the daemon touches the disk or forks, and raises :class:`ConfigError`
with a one-line message for the first problem (a usage error: exit status 2).
"""

from __future__ import annotations

import argparse
import configparser
import difflib
import grp
import math
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from .. import __version__
from ..errors import TaskstatsError
from ..transport import DEFAULT_SOCKET
from .socketfile import check_path

DEFAULT_STATE_DIR = "/var/lib/taskstats"
DEFAULT_CONFIG = "/etc/taskstats/taskstatsd.conf"
SECTION = "taskstatsd"
CHOICES = {"synchronous": ("NORMAL", "FULL"), "source": ("auto", "kernel", "procfs")}
# inclusive (low, high) of each number; a number not named here: 0 .. 2**31-1
BOUNDS: dict[str, tuple[float, float]] = {
    "retention_days": (0, 36500),  # 0: keep rows forever
    "max_journal_mb": (0, 1 << 30),  # 0: no size limit
    "low_free_pct": (0, 100),
    "resume_free_pct": (0, 100),
    "rcvbuf_bytes": (4096, (1 << 31) - 1),  # an int for SO_RCVBUF(FORCE)
    "max_clients": (1, 1 << 20),
    "nice": (-20, 19),
    "client_queue_records": (1, 1 << 24),
    "max_request_bytes": (64, 1 << 24),
    "max_clients_per_uid": (1, 1 << 20),
    "max_held_fds": (0, 1 << 20),
    "admin_reserved_clients": (0, 1 << 20),
    "client_reply_bytes": (4096, 1 << 30),
    "client_queue_bytes": (4096, 1 << 30),
    "client_turn_messages": (1, 1 << 16),
    "client_turn_ms": (0.01, 10000),
    "history_max_rows": (1, 1 << 24),
    "history_max_mb": (0.01, 1024),
    "history_max_ms": (1, 3_600_000),
    "history_admin_max_ms": (1, 3_600_000),
    "procfs_interval_s": (0.01, 3600),
    "max_wait_ms": (0, 60_000),
    "metrics_cgroup_depth": (0, 64),
    "metrics_max_series": (1, 1 << 20),
    "metrics_interval_s": (0.1, 86400),
    "sample_interval_s": (0, 86400),  # 0: no samples of live processes
}
DEFAULT_BOUNDS = (0, (1 << 31) - 1)
MAX_GID = (1 << 32) - 2  # (gid_t)-1 means "no group" to the kernel
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few lines; more is a mistake
TRUE, FALSE = ("1", "yes", "true", "on"), ("0", "no", "false", "off")


class ConfigError(TaskstatsError):
    """A setting taskstatsd cannot use (a usage error: exit status 2)."""


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
    max_held_fds: int = 256  # passed fds kept for clients' pending cgroup requests
    client_reply_bytes: int = 256 * 1024  # queued answers; then its requests wait
    client_queue_bytes: int = 4 << 20  # queued exit records (with client_queue_records)
    client_turn_messages: int = 16  # requests answered per client per loop turn
    client_turn_ms: float = 0.5  # and for at most this long (the last one finishes)
    history_max_rows: int = 10_000  # rows per history answer, whatever its limit; then cut
    history_max_mb: float = 4.0  # JSON bytes per history answer (MiB); then cut
    history_max_ms: float = 200.0  # a non-admin's history query, then ETIME
    history_admin_max_ms: float = 2000.0  # an admin's
    cgroups: bool = True  # capture each exiting process's cgroup path
    source: str = "auto"  # auto (kernel; /proc if absent or refused), kernel, or procfs
    procfs_interval_s: float = 1.0  # /proc scan period when running on /proc
    max_wait_ms: float = 100.0  # an exit reaches live clients within about this (0: at once)
    sample_interval_s: float = 60.0  # live processes journaled this often (0: never)
    metrics_listen: str = ""  # ADDR:PORT (or PORT, on 127.0.0.1) of /metrics; off when empty
    metrics_groups: str = ""  # command groups: "NAME=REGEX,NAME=REGEX" (first match wins)
    metrics_cgroup_depth: int = 3  # cgroup labels keep this many path components
    metrics_max_series: int = 500  # at most this many cgroup labels; the rest are "other"
    metrics_interval_s: float = 15.0  # live task sampling period
    nice: int = -10  # scheduling priority of the daemon and its journal writer

    @property
    def admin_gid(self) -> int | None:
        """The admin group's gid (0 .. MAX_GID), None when unset; ConfigError for a
        gid out of range or a name the group database does not know."""
        name = self.admin_group
        if not name:
            return None
        if name.isascii() and name.isdigit():
            if int(name) > MAX_GID:
                raise ConfigError(f"admin_group {name}: a gid is 0 .. {MAX_GID}")
            return int(name)
        try:
            return grp.getgrnam(name).gr_gid
        except (KeyError, ValueError):  # ValueError: a NUL in the name
            raise ConfigError(f"admin_group {name!r}: no such group (give a group "
                              "name known to this system, or a gid)") from None


# --help text of each setting (its choices, range and default are added from the tables)
HELP = {
    "socket": "the clients' Unix socket (SOCK_SEQPACKET, mode 0666)",
    "state_dir": "absolute path of the journal's directory (created if missing; its "
                 "parent must exist)",
    "admin_group": "members of this group (name or gid) see every task, like root "
                   "(empty: nobody but root)",
    "synchronous": "journal durability: NORMAL (a daemon crash loses nothing committed) "
                   "or FULL (commits also survive a power loss)",
    "retention_days": "drop journaled exits older than this many days (0: keep them)",
    "max_journal_mb": "drop the oldest exits past this journal size in MiB (0: no limit)",
    "low_free_pct": "suspend journaling below this much free disk space, in percent",
    "resume_free_pct": "resume journaling at this much free disk space, in percent",
    "rcvbuf_bytes": "receive buffer of each kernel listener socket, in bytes",
    "max_clients": "client connections at once",
    "nice": "scheduling priority of the daemon and its journal writer, -20 to 19 "
            "(in a fork storm it otherwise waits behind every new task)",
    "client_queue_records": "exit records queued per listening client; more are "
                            "dropped for it and counted",
    "max_request_bytes": "largest client request, in bytes",
    "max_clients_per_uid": "connections one non-admin uid may hold",
    "admin_reserved_clients": "the last of max_clients, kept for root and admins",
    "max_held_fds": "passed fds kept at once for clients' pending cgroup requests; "
                    "beyond, a cgroup request fails with ENFILE",
    "client_reply_bytes": "answers queued per client, in bytes; then its requests wait",
    "client_queue_bytes": "exit records queued per client, in bytes",
    "client_turn_messages": "requests answered per client per turn of the loop",
    "client_turn_ms": "time per client per turn of the loop, in ms",
    "history_max_rows": "rows per history answer, whatever its limit asks; more are cut "
                        "(the answer says so)",
    "history_max_mb": "JSON per history answer, in MiB (about 2,000 exits); more rows "
                      "are cut (the answer says so)",
    "history_max_ms": "time one non-admin history query may run, in ms; then it is "
                      "answered ETIME (the exits are drained meanwhile); a uid's "
                      "queries get at most a quarter of the daemon's time (then EAGAIN)",
    "history_admin_max_ms": "time one root or admin history query may run, in ms",
    "cgroups": "record each exiting process's cgroup path",
    "source": "where records come from: auto (the kernel's taskstats; /proc when the "
              "kernel has none or refuses taskstatsd, which needs root or "
              "CAP_NET_ADMIN for them), kernel (fail instead), or procfs (/proc and "
              "the proc connector, without privilege)",
    "procfs_interval_s": "period of the /proc scan with the procfs source, in seconds",
    "max_wait_ms": "when exits come fast, the loop waits up to a quarter of this after "
                   "a wake-up so that one drain serves many (journal and clients get "
                   "an exit within about this many ms; 0: never wait)",
    "sample_interval_s": "journal what each live process did (CPU, delays, IO) this "
                         "often, in seconds (0: exits only)",
    "metrics_listen": "serve Prometheus /metrics at ADDR:PORT (a bare PORT: 127.0.0.1; "
                      "empty: off); needs the exporter extra",
    "metrics_groups": "command groups for metrics: NAME=REGEX,NAME=REGEX (first match "
                      "wins)",
    "metrics_cgroup_depth": "cgroup labels keep this many path components",
    "metrics_max_series": "at most this many cgroup labels; the rest are \"other\"",
    "metrics_interval_s": "live task sampling period for metrics, in seconds",
}


def _help(name: str, default: object) -> str:
    """The --help line of setting ``name``: what it does, what it takes, its default."""
    text = HELP.get(name, "")
    if name in CHOICES:
        text += f"; one of {', '.join(CHOICES[name])}"
    elif isinstance(default, (int, float)) and not isinstance(default, bool):
        low, high = BOUNDS.get(name, DEFAULT_BOUNDS)
        text += f"; {_number(low)} to {_number(high)}"
    shown = default if default != "" else "empty"
    return f"{text} (default: {shown})".lstrip("; ")


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


_NAMED_METAVARS = {"socket": "PATH", "state_dir": "DIR", "admin_group": "GROUP",
                   "synchronous": "MODE", "source": "SOURCE", "metrics_listen": "ADDR:PORT",
                   "metrics_groups": "NAME=REGEX,..."}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see 'taskstatsd --help')")


def build_parser() -> argparse.ArgumentParser:
    """taskstatsd's argument parser (built, nothing run: the man page and the
    completions are generated from it)."""
    p = _Parser(
        prog="taskstatsd",
        description="The kernel's taskstats as a service: exit listeners, an SQLite exit "
        "journal, and a Unix socket that unprivileged users and containers can query.")
    p.add_argument("--version", action="version", version=f"taskstatsd {__version__}")
    p.add_argument("--config", default=None, metavar="FILE",
                   help=f"INI file (default {DEFAULT_CONFIG} if present), section "
                   f"[{SECTION}], keys as the long options with _ for -")
    p.add_argument("--foreground", action="store_true", default=None,
                   help="stay in the foreground (as under systemd)")
    p.add_argument("--print-unit", action="store_true",
                   help="print a systemd unit for this installation and exit")
    for f in fields(Config):
        if f.name == "foreground":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None, help=_help(f.name, "yes" if f.default else "no"))
        else:
            p.add_argument(flag, dest=f.name, default=None, help=_help(f.name, f.default),
                           metavar=_NAMED_METAVARS.get(f.name) or _METAVARS.get(str(f.type),
                                                                                "TEXT"))
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, parsed (ConfigError on a usage error)."""
    return build_parser().parse_args(argv)


def load(argv: Sequence[str] | None = None) -> Config:
    """Defaults, then the config file, then flags; every setting checked."""
    return from_args(parse_args(argv))


def from_args(args: argparse.Namespace) -> Config:
    """The checked Config of parsed arguments (reads the config file)."""
    cfg = Config()
    origin: dict[str, str] = {}  # setting -> where it was given, for the messages
    for key, value in _read_file(args.config).items():
        name = key.replace("-", "_")
        origin[name] = f"config file {args.config or DEFAULT_CONFIG}: "
        _set(cfg, name, value, origin[name])
    for f in fields(Config):
        flag = getattr(args, f.name, None)
        if isinstance(flag, bool):
            setattr(cfg, f.name, flag)
        elif flag is not None:
            origin[f.name] = "--" + f.name.replace("_", "-") + ": "
            _set(cfg, f.name, flag, origin[f.name])
    check(cfg, origin)
    return cfg


def _read_file(path: str | None) -> dict[str, str]:
    """The [taskstatsd] settings of ``path`` (or of DEFAULT_CONFIG if it exists)."""
    name = path or DEFAULT_CONFIG
    ini = configparser.ConfigParser(interpolation=None)
    try:
        text = _read_text(name)
    except FileNotFoundError:
        if path:
            raise ConfigError(f"cannot read config file {name}: no such file") from None
        return {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {name}: {err.strerror}") from None
    try:
        ini.read_string(text.decode("utf-8"), source=name)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {name}: not UTF-8 text") from None
    except configparser.MissingSectionHeaderError as err:
        raise ConfigError(f"config file {name}, line {err.lineno}: a setting before the "
                          f"[{SECTION}] section header") from None
    except configparser.Error as err:
        raise ConfigError(f"config file {name}: {' '.join(str(err).split())}") from None
    other = [s for s in ini.sections() if s != SECTION]
    if other:
        raise ConfigError(f"config file {name}: unknown section [{other[0]}]; the settings "
                          f"go in [{SECTION}]")
    return dict(ini.items(SECTION)) if ini.has_section(SECTION) else {}


def _read_text(name: str) -> bytes:
    """The bytes of config file ``name``: a regular file of at most MAX_CONFIG_BYTES,
    or /dev/null (no settings).  Opened without blocking (a FIFO with no writer
    would hang the start) and never read past the cap (a device never ends)."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat(os.devnull).st_rdev:
            return b""
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                    "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket")
            raise ConfigError(f"config file {name}: {kind}, not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {name}: larger than {MAX_CONFIG_BYTES} bytes")
    return data


def _set(cfg: Config, name: str, text: str, where: str) -> None:
    """Set ``name`` from ``text``, converted to its type (ConfigError if it is not one)."""
    kinds = {f.name: str(f.type) for f in fields(Config)}
    if name not in kinds:
        near = difflib.get_close_matches(name, kinds, n=1)
        hint = f" (did you mean {near[0]}?)" if near else " (see taskstatsd --help)"
        raise ConfigError(f"{where}unknown setting {name!r}{hint}")
    try:
        setattr(cfg, name, _convert(kinds[name], text.strip()))
    except ValueError:
        raise ConfigError(f"{where}{name} = {text!r}: not {_KIND_NAMES[kinds[name]]}") from None


_KIND_NAMES = {"bool": "yes or no", "int": "an integer", "float": "a number", "str": "text"}
_METAVARS = {"int": "N", "float": "X"}


def _convert(kind: str, text: str) -> Any:
    if kind == "bool":
        if text.lower() not in TRUE + FALSE:
            raise ValueError(text)
        return text.lower() in TRUE
    if kind == "int":
        return int(text, 10)
    if kind == "float":
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    return text


def check(cfg: Config, origin: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError for the first setting taskstatsd cannot use; reads, never
    writes (paths are looked at, the admin group looked up).  ``origin``: setting ->
    where it was given ("config file F: ", "--flag: "), said before it."""
    where = origin or {}
    for f in fields(Config):
        value = getattr(cfg, f.name)
        if f.type in ("int", "float"):
            low, high = BOUNDS.get(f.name, DEFAULT_BOUNDS)
            if not low <= value <= high:
                raise ConfigError(f"{where.get(f.name, '')}{f.name} = {_number(value)}: "
                                  f"want {_number(low)} .. {_number(high)}")
    for name, choices in CHOICES.items():
        value = getattr(cfg, name)
        if name == "synchronous":
            value = cfg.synchronous = value.upper()
        if value not in choices:
            raise ConfigError(f"{where.get(name, '')}{name} = {value!r}: want one of "
                              f"{', '.join(choices)}")
    _check_together(cfg)
    _check_state_dir(cfg.state_dir)
    try:
        check_path(cfg.socket)
    except TaskstatsError as err:
        raise ConfigError(str(err)) from None
    cfg.admin_gid  # noqa: B018 - raises ConfigError for an unknown group
    _check_metrics(cfg)


def _check_together(cfg: Config) -> None:
    """Settings each in range but impossible together."""
    if cfg.low_free_pct > cfg.resume_free_pct:  # equal: no hysteresis (0, 0: never)
        raise ConfigError(f"low_free_pct ({cfg.low_free_pct}) is above resume_free_pct "
                          f"({cfg.resume_free_pct})")
    if cfg.admin_reserved_clients >= cfg.max_clients:
        raise ConfigError(f"admin_reserved_clients ({cfg.admin_reserved_clients}) leaves "
                          f"no connection of max_clients ({cfg.max_clients}) for other "
                          "users: want fewer than max_clients")


def _check_state_dir(path: str) -> None:
    if not os.path.isabs(path):
        raise ConfigError(f"state_dir {path!r}: want an absolute path")
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"state_dir {path}: not a directory")
    elif not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"state_dir {path}: {os.path.dirname(path)} does not exist "
                          "(taskstatsd creates only the state directory itself)")


def _check_metrics(cfg: Config) -> None:
    from ..metrics.address import parse_listen  # noqa: PLC0415 - only when configured
    from ..metrics.aggregate import parse_groups  # noqa: PLC0415 - only when configured

    try:
        parse_groups(g.strip() for g in cfg.metrics_groups.split(",") if g.strip())
    except ValueError as err:
        raise ConfigError(f"metrics_groups: {err}") from None
    if not cfg.metrics_listen:
        return
    try:
        parse_listen(cfg.metrics_listen)
    except ValueError as err:
        raise ConfigError(str(err)) from None
