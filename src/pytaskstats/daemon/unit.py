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

import os
import re
import shlex
import shutil
import subprocess
import sys

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
ExecStart={exec_start} --foreground --socket {socket} --state-dir {state_dir}
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
UMask=0077
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


def render(socket: str = DEFAULT_SOCKET, state_dir: str = DEFAULT_STATE_DIR) -> str:
    """The unit text for this installation and the local systemd."""
    version = systemd_version()
    preserve = "FileDescriptorStorePreserve=restart"
    if version is None or version < PRESERVE_SINCE:
        preserve = (f"# with systemd >= {PRESERVE_SINCE} (here: {version or 'unknown'}), "
                    f"keep the stored sockets over `systemctl restart` too:\n# {preserve}")
    return TEMPLATE.format(exec_start=exec_start(), socket=shlex.quote(socket),
                           state_dir=shlex.quote(state_dir), preserve=preserve,
                           nice=Config.nice)


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
