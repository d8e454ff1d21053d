"""Cgroup directories passed by clients as file descriptors, read without trusting them.

A client (any local user) passes taskstatsd an fd and says "count this cgroup".
taskstatsd runs as root, so nothing about the fd is taken on faith:

- it must be a directory on a mounted cgroup filesystem: its device is one that
  /proc/self/mountinfo lists as ``cgroup2`` (or ``cgroup`` for v1), so the client
  cannot plant a symlink, FIFO or device under a name such as ``cgroup.threads``
  (cgroupfs holds only the kernel's own files);
- the thread list is opened relative to that fd (never by a path re-resolved from
  it), with O_NOFOLLOW and O_NONBLOCK, must be a regular file, and is read up to
  MAX_LIST_BYTES;
- error messages never quote what was read;
- for an unprivileged client (``reader``), the list is read only when its mode
  bits let that client read it, as open(2) would have (the daemon's own open
  ignores them).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import NamedTuple

from .errors import NetlinkError

MAX_LIST_BYTES = 64 << 20  # a thread list: 4M pids of up to 8 digits and a newline, x2
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 16


def cgroup_devices(mountinfo: str = "/proc/self/mountinfo") -> dict[int, str]:
    """Device number -> filesystem type ("cgroup2" or "cgroup") of every mounted
    cgroup filesystem."""
    out: dict[int, str] = {}
    with open(mountinfo, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            try:
                fstype = fields[fields.index("-") + 1]
            except (ValueError, IndexError):
                continue
            if fstype in ("cgroup2", "cgroup"):
                major, _, minor = fields[2].partition(":")
                out[os.makedev(int(major), int(minor))] = fstype
    return out


def kind(fd: int) -> str | None:
    """"cgroup2" or "cgroup" (v1) when ``fd`` is a directory on such a mount, else
    None."""
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        return None
    return cgroup_devices().get(st.st_dev)


class Reader(NamedTuple):
    """An unprivileged client's ids, for the permission check open(2) would make."""

    uid: int
    gid: int
    groups: frozenset[int]

    def may_read(self, st: os.stat_result) -> bool:
        """Whether the file of ``st`` is readable by these ids by its mode bits
        (owner, then group, then others, as the kernel checks them)."""
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IRUSR)
        if st.st_gid == self.gid or st.st_gid in self.groups:
            return bool(st.st_mode & stat.S_IRGRP)
        return bool(st.st_mode & stat.S_IROTH)


def thread_ids(fd: int, name: str, reader: Reader | None = None) -> list[int]:
    """The thread ids listed in file ``name`` (``cgroup.threads`` or ``tasks``) of
    the cgroup directory ``fd``; NetlinkError EINVAL when it is not a readable list
    of ids, EACCES when ``reader`` (None: no check) could not read it."""
    try:
        file = os.open(name, _OPEN, dir_fd=fd)
    except OSError as err:
        raise NetlinkError(f"cannot open {name}", errno=errno.EINVAL,
                           ext_message=f"cannot read {name} ({err.strerror})") from None
    try:
        st = os.fstat(file)
        if not stat.S_ISREG(st.st_mode):
            raise NetlinkError(f"{name} is not a file", errno=errno.EINVAL)
        if reader is not None and not reader.may_read(st):
            raise NetlinkError(f"{name} not readable by the client", errno=errno.EACCES,
                               ext_message=f"{name} of that cgroup is not readable by "
                               "this user")
        data = _read_bounded(file, name)
    finally:
        os.close(file)
    words = data.split()
    if not all(w.isdigit() for w in words):
        raise NetlinkError(f"{name} is not a thread list", errno=errno.EINVAL,
                           ext_message=f"{name} is not a list of thread ids")
    return [int(w) for w in words]


def _read_bounded(file: int, name: str) -> bytes:
    chunks, size = [], 0
    while chunk := os.read(file, _CHUNK):
        size += len(chunk)
        if size > MAX_LIST_BYTES:
            raise NetlinkError(f"{name} is too long", errno=errno.EINVAL)
        chunks.append(chunk)
    return b"".join(chunks)
