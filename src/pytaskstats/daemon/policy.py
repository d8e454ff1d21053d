"""Who sees what: a client's identity from its socket, and the /proc rule for tasks.

Identity.  Everything taskstatsd knows about a client comes from the connected
socket, never from a pid that can be recycled: ``SO_PEERCRED`` (uid and gid at
connect), ``SO_PEERGROUPS`` (supplementary groups at connect) and, where the
kernel has it (6.5+), ``SO_PEERPIDFD``.  The one thing read from /proc about a
client is its namespaces (:mod:`.namespaces`), and that read counts only if the
pidfd says afterwards that the process is still the one that connected; when that
cannot be established the connection is refused (:func:`PeerCred.alive`).

Who is admin: root (uid 0) and members of ``admin_gid`` (primary or supplementary
group at connect).  Admins see every task.

The visibility rule for everyone else.  A client with uid U and gid G sees a task
exactly when the kernel's /proc would show it that task's ``/proc/PID/io``, i.e.
``ptrace_may_access(PTRACE_MODE_READ_FSCREDS)`` without CAP_SYS_PTRACE:

- the task's real, effective and saved uid are all U, its real, effective and
  saved gid are all G; and
- the task is dumpable: a task that exec'd a setuid/setgid/file-capability binary,
  or one it may not read, or called ``prctl(PR_SET_DUMPABLE, 0)``, is not.  /proc
  shows it: ``/proc/PID/status`` is owned by the task's euid only while it is
  dumpable (by root otherwise); ``/proc/PID`` itself always shows the euid.

Live tasks (GET) are checked against /proc as they are asked for
(:func:`owner_may_see`).  Exit records cannot be: by the time one is read the task
is usually reaped.  :class:`ExitPolicy` therefore remembers, per live task, whether
its owner may see it, from a /proc scan at start and the proc connector's events:
a fork inherits its parent's verdict; an exec is checked in /proc at once (and,
if the task is gone already, by its executable: ``ac_exe_dev``/``ac_exe_inode``
of the exit record against executables seen earlier); a uid or gid change makes
the task admin-only for the rest of its life; a /proc sample every SAMPLE_S
catches ``prctl(PR_SET_DUMPABLE, 0)`` (the kernel reports no event for it).  An
exit whose verdict is unknown (connector overrun, an exec of a never-seen binary
reaped before it could be checked, a task older than what the daemon saw) goes to
admins only and is counted (``policy_unknown``).  Blind spot: a task that makes
itself non-dumpable less than SAMPLE_S before it exits still reaches its owner.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import stat
import struct
import time
from dataclasses import dataclass
from typing import NamedTuple

from .. import connector
from ..procfs import list_tasks
from ..records import ExitRecord

SO_PEERGROUPS = 59  # Linux 4.13+; no Python constant
SO_PEERPIDFD = 77  # Linux 6.5+
NGROUPS_MAX = 65536
SAMPLE_S = 1.0  # at most one dumpability sample of every process per this interval
MAX_TASKS = 1 << 20  # remembered verdicts; beyond, start over with a scan
MAX_EXES = 4096  # remembered executables
_GROUP = struct.Struct("=I")


# ---------------------------------------------------------------- peers


@dataclass(frozen=True)
class PeerCred:
    """A client's identity at connect: ``pid`` (only to name it, never to read
    /proc without :meth:`alive`), ``uid``, ``gid``, supplementary ``groups`` and a
    pidfd of the process (None where the kernel has no SO_PEERPIDFD and pidfd_open
    failed)."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]
    pidfd: int | None

    def alive(self) -> bool:
        """Whether the peer process is still the one that connected (so /proc/PID
        read before this call was about it).  False without a pidfd."""
        if self.pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, 0)
        except PermissionError:
            return True  # exists (a signal to it would be refused, as to any task)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Close the pidfd."""
        if self.pidfd is not None:
            os.close(self.pidfd)


def peer_credentials(sock: socket.socket) -> PeerCred:
    """The identity of the process at the other end of ``sock`` (see the module
    docstring); raises OSError if the socket cannot tell uid and gid."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return PeerCred(pid, uid, gid, _peer_groups(sock), _peer_pidfd(sock, pid))


def _peer_groups(sock: socket.socket) -> frozenset[int]:
    """SO_PEERGROUPS; Python's getsockopt takes at most 1024 bytes (256 groups), so
    a longer list is read with libc."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
    except OSError as err:
        if err.errno != errno.ERANGE:
            raise
        raw = _long_groups(sock.fileno())
    return frozenset(g for (g,) in _GROUP.iter_unpack(raw[:len(raw) // 4 * 4]))


def _long_groups(fd: int) -> bytes:
    buf = ctypes.create_string_buffer(4 * NGROUPS_MAX)
    size = ctypes.c_uint32(len(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.getsockopt(fd, socket.SOL_SOCKET, SO_PEERGROUPS, buf, ctypes.byref(size)):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw[:size.value]


def _peer_pidfd(sock: socket.socket, pid: int) -> int | None:
    """SO_PEERPIDFD; before 6.5 a pidfd_open of the pid (which the caller must not
    trust more than the pid itself was at this moment)."""
    try:
        return int(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
    except OSError:
        pass
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


class Policy:
    """Root and members of ``admin_gid`` see everything; others what the /proc rule
    lets them see (see the module docstring)."""

    def __init__(self, admin_gid: int | None = None) -> None:
        self.admin_gid = admin_gid

    def is_admin(self, cred: PeerCred) -> bool:
        """Whether a client with these credentials sees every task."""
        if cred.uid == 0:
            return True
        if self.admin_gid is None:
            return False
        return cred.gid == self.admin_gid or self.admin_gid in cred.groups


# ---------------------------------------------------------------- tasks


class TaskCreds(NamedTuple):
    """A task's (real, effective, saved) uids and gids, and the owner of its
    /proc/PID/status (its euid while dumpable)."""

    uids: tuple[int, int, int]
    gids: tuple[int, int, int]
    dump_owner: int

    @property
    def dumpable(self) -> bool:
        """Whether the kernel considers the task dumpable (see the module docstring)."""
        return self.dump_owner == self.uids[1]

    def owner_sees(self) -> bool:
        """Whether the task's own user (its real ids) may read its /proc/PID/io."""
        return (len(set(self.uids)) == 1 and len(set(self.gids)) == 1 and self.dumpable)

    def visible_to(self, uid: int, gid: int) -> bool:
        """The /proc rule for a client of ``uid``/``gid`` without privileges."""
        return self.uids[0] == uid and self.gids[0] == gid and self.owner_sees()


def read_creds(pid: int | str, proc: str = "/proc") -> TaskCreds | None:
    """The credentials of task ``pid`` (a tid works too); None if it is gone."""
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            owner = os.fstat(f.fileno()).st_uid
            ids: dict[bytes, tuple[int, int, int]] = {}
            for line in f:
                if line.startswith((b"Uid:", b"Gid:")):
                    a, b, c = line.split()[1:4]
                    ids[line[:3]] = (int(a), int(b), int(c))
                    if len(ids) == 2:
                        return TaskCreds(ids[b"Uid"], ids[b"Gid"], owner)
    except (OSError, ValueError):
        pass
    return None


def owner_may_see(pid: int, uid: int, gid: int, proc: str = "/proc") -> bool:
    """The /proc rule for a live task (False when it is gone: fail closed)."""
    creds = read_creds(pid, proc)
    return creds is not None and creds.visible_to(uid, gid)


class _Task(NamedTuple):
    ok: bool  # its owner may see it, as far as the last check knew
    exec_unchecked: bool  # exec'd since, and gone before /proc could be read


_OK = _Task(True, False)
_HIDDEN = _Task(False, False)


class ExitPolicy:
    """Per live task, whether its owner may see its exit record (see the module
    docstring).  Fed with the proc connector's events (:meth:`event`), asked once
    per exit record (:meth:`owner_sees`).  The caller must feed every connector
    event queued before it asks about exit records it has read: a task's fork,
    exec and id events are emitted before its exit record."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.tasks: dict[int, _Task] = {}
        self.exes: dict[tuple[int, int], bool] = {}
        self.counters = {"policy_unknown": 0, "policy_hidden": 0, "policy_scans": 0,
                         "policy_samples": 0}
        self._sampled = 0.0
        self._scanned = -SAMPLE_S
        self.trusted = False
        self.rescan()

    # -------------------------------------------------------- learning

    def rescan(self) -> None:
        """Start over from /proc (at start, after a connector overrun); at most once
        per SAMPLE_S: until then every exit is unknown."""
        now = time.monotonic()
        if now - self._scanned < SAMPLE_S:
            self.trusted = False
            return
        self._scanned = now
        self.tasks.clear()
        for _, tid in list_tasks(self.proc):
            creds = read_creds(tid, self.proc)
            if creds is not None:
                self.tasks[tid] = _OK if creds.owner_sees() else _HIDDEN
        self.trusted = True
        self.counters["policy_scans"] += 1

    def tick(self) -> None:
        """Periodic work: a due dumpability sample, a rescan owed since an overrun."""
        if not self.trusted:
            self.rescan()
        self.sample()

    def overrun(self) -> None:
        """Events were lost: nothing learned so far can be trusted."""
        self.trusted = False
        self.rescan()

    def event(self, ev: connector.Event) -> None:
        """Learn from one proc connector event."""
        if isinstance(ev, connector.Fork):
            parent = self.tasks.get(ev.parent_pid) or self.tasks.get(ev.ppid)
            if parent is not None:
                if len(self.tasks) >= MAX_TASKS:
                    self.overrun()
                self.tasks[ev.pid] = parent
        elif isinstance(ev, connector.Exec):
            self._exec(ev.pid)
        elif isinstance(ev, connector.IdChange):
            if ev.pid in self.tasks:
                self.tasks[ev.pid] = _HIDDEN
            self.tasks[ev.tgid] = _HIDDEN  # setuid() & co. apply to every thread

    def _exec(self, pid: int) -> None:
        before = self.tasks.get(pid)
        if before is None:
            return
        creds = read_creds(pid, self.proc)
        if creds is None:  # gone already: judged by its executable at exit
            self.tasks[pid] = _Task(before.ok, True)
            return
        self._learn_exe(pid)
        self.tasks[pid] = _OK if before.ok and creds.owner_sees() else _HIDDEN

    def _learn_exe(self, pid: int) -> None:
        """Remember whether the executable of ``pid`` keeps a task dumpable for every
        user: no setuid/setgid bit, no file capabilities, readable by all."""
        try:
            st = os.stat(f"{self.proc}/{pid}/exe")
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in self.exes:
            return
        plain = not st.st_mode & (stat.S_ISUID | stat.S_ISGID) and st.st_mode & 0o444 == 0o444
        if plain:
            try:
                os.getxattr(f"{self.proc}/{pid}/exe", "security.capability")
                plain = False
            except OSError as err:
                plain = err.errno == errno.ENODATA
        if len(self.exes) >= MAX_EXES:
            self.exes.clear()
        self.exes[key] = plain

    def sample(self) -> None:
        """Every SAMPLE_S: mark processes that made themselves non-dumpable (no
        event tells).  Two stats per process."""
        now = time.monotonic()
        if now - self._sampled < SAMPLE_S:
            return
        self._sampled = now
        for name in os.listdir(self.proc):
            if not name.isdigit():
                continue
            try:
                euid = os.stat(f"{self.proc}/{name}").st_uid
                owner = os.stat(f"{self.proc}/{name}/status").st_uid
            except OSError:
                continue
            if owner != euid:
                self.tasks[int(name)] = _HIDDEN
        self.counters["policy_samples"] += 1

    # -------------------------------------------------------- deciding

    def owner_sees(self, record: ExitRecord) -> bool | None:
        """Whether the owner (ac_uid/ac_gid) of this exit may see it; None when unknown
        (admins only).  Forgets the task; counts hidden and unknown exits."""
        verdict = self._verdict(record)
        if verdict is None:
            self.counters["policy_unknown"] += 1
        elif not verdict:
            self.counters["policy_hidden"] += 1
        return verdict

    def _verdict(self, record: ExitRecord) -> bool | None:
        pid, tgid = record.pid, record.tgid
        leader_first = pid == tgid and record.ended_process is False  # threads live on
        task = self.tasks.get(pid) if leader_first else self.tasks.pop(pid, None)
        group = self.tasks.get(tgid) if tgid is not None and tgid != pid else None
        if record.ended_process and tgid is not None:
            self.tasks.pop(tgid, None)
        if task is None or not self.trusted:
            return None
        if not task.ok or (group is not None and not group.ok):
            return False
        if task.exec_unchecked:
            exe = self.exes.get((record.task.ac_exe_dev or 0, record.task.ac_exe_inode or 0))
            return exe  # None: an executable never seen alive
        return True
