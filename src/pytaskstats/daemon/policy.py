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
its owner may see it, from a /proc scan at start and the proc connector's events
(taskstatsd reads every event queued before it judges the exit records it read):
a fork inherits its parent's verdict; a uid or gid change (the kernel reports one
for every change of real, effective, saved or fs id, including the exec of a
setuid/setgid binary, before that exec's event) makes the task hidden when its
real and effective ids differ, and unknown otherwise (saved and fs ids are not
reported) until the task's next exec; an exec starts over: it is checked in /proc
at once (new memory, new dumpability, saved and fs ids = effective ids) or, if the
task is gone (or a zombie) by then, keeps its verdict (an id change's unknown
becomes known: the exec settled the ids) and is judged by its executable at exit:
``ac_exe_dev``/``ac_exe_inode`` of the exit record against executables known to
keep a task dumpable (no setuid/setgid bit, no ``security.capability``, readable
by all).  Executables are learned by statting the standard directories (and the
daemon's PATH) at start and, for every executable seen in /proc/PID/exe, the
other files of its directory (each bounded); one seen alive is checked again (a
mode or capability change is then noticed: until then the last check holds).
A /proc sample every SAMPLE_S catches ``prctl(PR_SET_DUMPABLE, 0)`` (no event
tells).  An exit whose verdict is unknown (connector overrun, an exec of an
executable never learned reaped before it could be checked, a task older than what
the daemon saw) goes to admins only and is counted (``policy_unknown``); without
the proc connector every exit does.  Blind spot: a task that makes itself
non-dumpable less than SAMPLE_S before it exits still reaches its owner.

Exit records and history.  A non-admin listener receives an exit record when its
verdict is True and the task's real uid and gid are the client's; admins receive
every record.  The journal stores each exit's verdict (``owner_sees``; rows written
before that column existed count as unknown) and history answers a non-admin only
rows of its uid and gid with a True verdict.  Namespaced clients (see
:mod:`.namespaces`) see only tasks of their PID namespace and its descendants, with
pids and ids translated, in GET, listen and history alike; a journal row whose
namespace or pids are unknown is not shown to them (``namespace_unknown``).

Status (:func:`client_status`).  Root and the admin group in the initial
namespaces get the whole document.  Anyone else (and every namespaced client) gets
the daemon's version and uptime, the kernel's facts, the health and loss counters
(received, journaled, ``lost_*``, ``dropped_*``, ``policy_*``, ...), the journal's
gaps and its own connection's facts; never host paths (socket, state dir, metrics
address), host pids or other clients' numbers.
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import connector
from ..procfs import list_tasks
from ..records import ExitRecord

SO_PEERGROUPS = 59  # Linux 4.13+; no Python constant
SO_PEERPIDFD = 77  # Linux 6.5+
NGROUPS_MAX = 65536
SAMPLE_S = 1.0  # at most one dumpability sample of every process per this interval
MAX_TASKS = 1 << 20  # remembered verdicts; beyond, start over with a scan
MAX_EXES = 8192  # remembered executables, learned at start and since (each)
MAX_DIRS = 1024  # directories whose files were learned (then forgotten, to learn anew)
MAX_SIBLINGS = 512  # files learned per directory seen as it runs (~2 ms of stats)
STANDARD_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
                 "/usr/libexec", "/usr/local/libexec", "/usr/games")
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


_PUBLIC_COUNTERS = ("received", "journaled", "retired", "suspensions", "lost_", "dropped_",
                    "policy_")


def client_status(doc: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The status document ``doc`` as shown to a non-admin or namespaced client (see
    the module docstring), with ``own``: facts about the client's own connection."""
    daemon = doc["daemon"]
    return {
        "daemon": {k: daemon[k] for k in ("version", "started_ns", "uptime_s")},
        "kernel": doc["kernel"],
        "exit_policy": doc["exit_policy"],
        "counters": {k: v for k, v in doc["counters"].items()
                     if k.startswith(_PUBLIC_COUNTERS)},
        "gaps": doc["gaps"],
        "client": own,
    }


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
    unsure: bool = False  # changed ids to equal real and effective ones: saved, fs unknown


_OK = _Task(True, False)
_HIDDEN = _Task(False, False)
_UNSURE = _Task(False, False, True)


class ExitPolicy:
    """Per live task, whether its owner may see its exit record (see the module
    docstring).  Fed with the proc connector's events (:meth:`event`), asked once
    per exit record (:meth:`owner_sees`).  The caller must feed every connector
    event queued before it asks about exit records it has read: a task's fork,
    exec and id events are emitted before its exit record."""

    def __init__(self, proc: str = "/proc", exe_dirs: Sequence[str] | None = None) -> None:
        self.proc = proc
        self.tasks: dict[int, _Task] = {}
        self.base: dict[tuple[int, int], bool] = {}  # learned at start, kept
        self.exes: dict[tuple[int, int], bool] = {}  # learned since, cleared when full
        self.dirs: set[tuple[int, int]] = set()  # directories whose files were learned
        self.counters = {"policy_unknown": 0, "policy_hidden": 0, "policy_scans": 0,
                         "policy_samples": 0}
        self._sampled = 0.0
        self._scanned = -SAMPLE_S
        self.trusted = False
        self.rescan()
        for directory in (standard_exe_dirs() if exe_dirs is None else exe_dirs):
            self.learn_dir(directory, self.base, MAX_EXES)

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
            # real != effective: hidden (an exec keeps them apart); else unknown
            # until an exec is checked alive (the saved and fs ids are not reported)
            state = _HIDDEN if ev.real != ev.effective else _UNSURE
            for pid in (ev.pid, ev.tgid):  # setuid() & co. apply to every thread
                now = self.tasks.get(pid)
                if now is None or now.ok or now.unsure:  # hidden stays hidden
                    self.tasks[pid] = state

    def _exec(self, pid: int) -> None:
        """An exec gives the task new memory and dumpability, and saved ids equal to
        the effective ones: checked alive, its verdict starts over; gone, it keeps
        the one it had, and is judged by its executable at exit."""
        before = self.tasks.get(pid)
        if before is None:
            return
        creds = read_creds(pid, self.proc)
        # /proc/PID/exe is read after the ids: if it is there, the task still had
        # its memory then, so the owner of its status file told its dumpability (a
        # zombie's looks dumpable whatever it was)
        if creds is None or not self._learn_exe(pid):
            self.tasks[pid] = before._replace(exec_unchecked=True)
            return
        self.tasks[pid] = _OK if creds.owner_sees() else _HIDDEN

    def _learn_exe(self, pid: int) -> bool:
        """Learn (or check again) the executable of live task ``pid`` and, the first
        time it is seen, its directory's other files; False when the task has no
        executable any more (gone, or a zombie)."""
        exe = f"{self.proc}/{pid}/exe"
        try:
            st = os.stat(exe)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        plain = _keeps_dumpable(exe, st)
        for known in (self.base, self.exes):
            if key in known:
                known[key] = plain  # checked again: a chmod or setcap since shows
                return True
        self._remember(self.exes, key, plain)
        try:
            path = os.readlink(exe)
        except OSError:
            return True
        if path.startswith("/") and not path.endswith(" (deleted)"):
            self.learn_dir(f"{self.proc}/{pid}/root{os.path.dirname(path)}", self.exes,
                           MAX_SIBLINGS)
        return True

    def learn_dir(self, directory: str, into: dict[tuple[int, int], bool], limit: int) -> None:
        """Learn at most ``limit`` files of ``directory`` into ``into``, once per
        directory (MAX_DIRS remembered); what cannot be read is skipped."""
        try:
            st = os.stat(directory)
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in self.dirs:
            return
        if len(self.dirs) >= MAX_DIRS:
            self.dirs.clear()
        self.dirs.add(key)
        try:
            with os.scandir(directory) as entries:
                for _, entry in zip(range(limit), entries, strict=False):
                    self._learn_file(entry.path, into)
        except OSError:
            return

    def _learn_file(self, path: str, into: dict[tuple[int, int], bool]) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            self._remember(into, (st.st_dev, st.st_ino), _keeps_dumpable(path, st))

    def _remember(self, into: dict[tuple[int, int], bool], key: tuple[int, int],
                  plain: bool) -> None:
        if key in into:
            return
        if len(into) >= MAX_EXES:
            if into is self.base:
                return  # the start's share is full: the rest is learned as it runs
            into.clear()
        into[key] = plain

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

    def owner_sees(self, record: ExitRecord, complete: bool = True) -> bool | None:
        """Whether the owner (ac_uid/ac_gid) of this exit may see it; None when unknown
        (admins only), always when ``complete`` is False (the caller could not read
        every event queued before the record).  Forgets the task; counts hidden and
        unknown exits."""
        verdict = self._verdict(record)
        if not complete:
            verdict = None
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
        states = (task,) if group is None else (task, group)
        if any(not s.ok and not s.unsure for s in states):
            return False
        # an exec since an id change set the saved and fs ids to the effective ones:
        # the ids are then settled, the executable decides
        if any(s.unsure and not s.exec_unchecked for s in states):
            return None
        if task.exec_unchecked:
            key = (record.task.ac_exe_dev or 0, record.task.ac_exe_inode or 0)
            known = self.base.get(key)
            return self.exes.get(key) if known is None else known  # None: never learned
        return True


def _keeps_dumpable(path: str, st: os.stat_result) -> bool:
    """Whether exec'ing the file ``path`` (stat ``st``) leaves a task dumpable for any
    user: no setuid/setgid bit, readable by all, no file capabilities."""
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID) or st.st_mode & 0o444 != 0o444:
        return False
    try:
        os.getxattr(path, "security.capability")
    except OSError as err:
        return err.errno in (errno.ENODATA, errno.ENOTSUP)
    return False


def standard_exe_dirs() -> list[str]:
    """Where executables usually are: the daemon's PATH and the standard directories."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d.startswith("/")]
    return list(dict.fromkeys([*path, *STANDARD_DIRS]))
