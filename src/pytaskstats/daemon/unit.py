"""The systemd unit of taskstatsd, as ``taskstatsd --print-unit`` writes it.

Installed with::

    taskstatsd --print-unit > /etc/systemd/system/taskstatsd.service
    systemctl daemon-reload && systemctl enable --now taskstatsd

ExecStart names this installation's entry point (a venv's or pipx's script, or
the interpreter running the package), so the unit verifies and starts wherever
pytaskstats was installed.  Directives newer than the local systemd are written
as comments (``FileDescriptorStorePreserve=`` needs systemd 254).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import fields

from ..transport import DEFAULT_SOCKET
from .config import DEFAULT_STATE_DIR, Config

PRESERVE_SINCE = 254  # systemd version that knows FileDescriptorStorePreserve=

TEMPLATE = """\
# taskstatsd.service, written by `taskstatsd --print-unit` (pytaskstats)
[Unit]
Description=taskstatsd: per-task accounting service and exit journal (taskstats)
Documentation=https://pypi.org/project/pytaskstats/
After=local-fs.target

[Service]
Type=notify
ExecStart={exec_start} --foreground --socket {socket} --state-dir {state_dir}{settings}
Restart=on-failure
# the daemon's `nice` setting: systemd sets it (the bounding set has no CAP_SYS_NICE);
# during a fork storm the daemon competes with every new task for the CPU
Nice={nice}
# taskstatsd hands its registered exit-listener sockets to systemd (FDSTORE=1,
# FDPOLL=0) and takes them back on restart: exits during the restart wait in them.
FileDescriptorStoreMax=256
# each client holds a connection and, while its cgroup request waits, the fd it
# passed; the daemon raises its soft limit to this hard one (the default 1024 is
# near what max_clients=256 clients may take)
LimitNOFILE=65536
{preserve}
# /run/taskstats (0755: every user connects; the policy is per request) and
# /var/lib/taskstats (0700: the journal holds every user's tasks).
RuntimeDirectory=taskstats
RuntimeDirectoryMode=0755
StateDirectory=taskstats
StateDirectoryMode=0700
{paths}UMask=0077
# CAP_NET_ADMIN: TASKSTATS commands, listener registration, the proc connector,
# SO_RCVBUFFORCE.  CAP_SYS_PTRACE: /proc/PID/ns and /proc/PID/io of every task
# (namespaced clients, the /proc source).  CAP_DAC_READ_SEARCH: /proc files and
# cgroup directories of other users.  Root needs no ambient capabilities.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Listeners need the initial user, PID and network namespaces: no PrivateUsers=,
# PrivateNetwork= or private PID namespace.  With --metrics-listen, add AF_INET
# AF_INET6 (the /metrics endpoint); without it no IP socket is needed.
RestrictAddressFamilies=AF_UNIX AF_NETLINK

[Install]
WantedBy=multi-user.target
"""


def render(cfg: Config | None = None, args: argparse.Namespace | None = None) -> str:
    """The unit text for this installation and the local systemd, running with
    ``cfg``'s socket, state directory and nice (checked by the caller) and the
    other settings given in ``args`` (the command line of ``--print-unit``)."""
    cfg = cfg or Config()
    version = systemd_version()
    preserve = "FileDescriptorStorePreserve=restart"
    if version is None or version < PRESERVE_SINCE:
        preserve = (f"# with systemd >= {PRESERVE_SINCE} (here: {version or 'unknown'}), "
                    f"keep the stored sockets over `systemctl restart` too:\n# {preserve}")
    settings = "".join(" " + shlex.quote(word) for word in _given(cfg, args))
    return TEMPLATE.format(exec_start=exec_start(), socket=shlex.quote(cfg.socket),
                           state_dir=shlex.quote(cfg.state_dir), preserve=preserve,
                           nice=cfg.nice, settings=settings, paths=_paths(cfg))


def _given(cfg: Config, args: argparse.Namespace | None) -> list[str]:
    """The flags for the settings given in ``args`` besides socket and state_dir
    (``--config`` as an absolute path), with ``cfg``'s checked values."""
    if args is None:
        return []
    words = ["--config", os.path.abspath(args.config)] if args.config else []
    for f in fields(Config):
        if f.name in ("socket", "state_dir", "foreground") or getattr(args, f.name) is None:
            continue
        flag = f.name.replace("_", "-")
        value = getattr(cfg, f.name)
        if isinstance(value, bool):
            words.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            words += [f"--{flag}", str(value)]
    return words


def _paths(cfg: Config) -> str:
    """ReadWritePaths= for a socket or state directory outside those systemd makes
    (ProtectSystem=strict leaves every other path read-only)."""
    own = [os.path.dirname(cfg.socket)] if os.path.dirname(cfg.socket) != os.path.dirname(
        DEFAULT_SOCKET) else []
    own += [cfg.state_dir] if cfg.state_dir != DEFAULT_STATE_DIR else []
    if not own:
        return ""
    return ("# the settings' own directories (create them first: the rest of the file "
            "system is read-only)\nReadWritePaths=" + " ".join(
                "-" + shlex.quote(p) for p in own) + "\n")


def exec_start() -> str:
    """This installation's taskstatsd: the ``taskstatsd`` script being run, else
    the running interpreter with ``-I -m pytaskstats.daemon`` (isolated: no
    PYTHON* variables, no current directory on sys.path)."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "taskstatsd" and os.path.isfile(script):
        return shlex.quote(os.path.abspath(script))
    return f"{shlex.quote(os.path.abspath(sys.executable))} -I -m pytaskstats.daemon"


def systemd_version() -> int | None:
    """The local systemd's version (``systemctl --version``), None without one."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    try:
        out = subprocess.run([systemctl, "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else None
