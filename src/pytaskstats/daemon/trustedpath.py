"""Directories a root daemon may trust by name: no other user can change where
their path leads (sshd's StrictModes, with sticky directories allowed).

The path is walked from ``/`` the way the kernel resolves it, symlinks
included.  Every directory passed through must be owned by root or the daemon's
user and writable by no one else, unless it is sticky: then other users may
create entries in it but only rename or remove their own, so the entry walked
through must be root's or the daemon's.  Once a path passes, it leads to the
same directory until root or the daemon changes it, so what lies below may be
opened by name (as sqlite does).
"""

from __future__ import annotations

import os
import stat

from ..errors import TaskstatsError

MAX_LINKS = 40  # symlinks followed in one walk, as the kernel's bound
OTHERS_WRITE = 0o022  # group or others may write


def trusted_uids() -> tuple[int, int]:
    """Who may own what the daemon trusts: root and the daemon's user."""
    return (0, os.geteuid())


def check_chain(path: str) -> str:
    """Raise TaskstatsError unless absolute directory ``path`` and every directory
    on the way to it, across symlinks, are trusted (module docstring); return its
    real path.  A missing component is an error naming it."""
    parts = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    here, here_st = "/", os.lstat("/")
    _check_dir(here, here_st)
    links = 0
    while parts:
        name = parts.pop()
        if name == "..":
            here = os.path.dirname(here)
            here_st = os.lstat(here)
            continue
        entry = os.path.join(here, name)
        st = _lstat(entry)
        if here_st.st_mode & OTHERS_WRITE and st.st_uid not in trusted_uids():
            raise TaskstatsError(f"{entry} is owned by uid {st.st_uid} in {here}, which "
                                 "other users can write: not trusting it")
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise TaskstatsError(f"{path}: more than {MAX_LINKS} symlinks")
            target = os.readlink(entry)
            if target.startswith("/"):
                here, here_st = "/", os.lstat("/")
            parts.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise TaskstatsError(f"{entry} is not a directory")
        _check_dir(entry, st)
        here, here_st = entry, st
    return here


def _lstat(entry: str) -> os.stat_result:
    try:
        return os.lstat(entry)
    except FileNotFoundError:
        raise TaskstatsError(f"{entry} does not exist") from None


def _check_dir(path: str, st: os.stat_result) -> None:
    """Refuse a directory another user owns, or may write without the sticky bit."""
    if st.st_uid not in trusted_uids():
        raise TaskstatsError(f"{path} is owned by uid {st.st_uid}, who could redirect "
                             "paths through it: not trusting it")
    if st.st_mode & OTHERS_WRITE and not st.st_mode & stat.S_ISVTX:
        raise TaskstatsError(f"{path} is writable by other users (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}) and not sticky: not "
                             "trusting it")
