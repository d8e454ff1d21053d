"""A fake TASKSTATS kernel behind the sockets :mod:`pytaskstats.transport` opens.

:meth:`FakeKernel.install` points the ``socket`` name that transport.py opens its
sockets through at this kernel, for the test only: every NETLINK_GENERIC socket
``NetlinkSocket`` makes (or adopts by fd) is then a :class:`FakeSocket`, and the
library's own transport, client and codec run unchanged above it.  The proc
connector's socket is a fake too; Unix sockets stay real unless a
:class:`~tests.fakedaemon.FakeDaemon` plays taskstatsd.

The kernel answers as Linux 6.18 does (kernel/taskstats.c, net/netlink/genetlink.c,
af_netlink.c; see shared/reference/kernel-taskstats.md), synchronously inside
``send()`` as the real one does: nlctrl's family lookup; GET by PID or TGID with
the records a test gave it, encoded in the struct version it chose; REGISTER and
DEREGISTER_CPUMASK; CGROUPSTATS GET; NLMSG_ERROR with the kernel's errnos; ACKs
when asked.  Receive buffers are accounted as the kernel does (a reply costs
:data:`TRUESIZE`): a full one drops what comes, counts the drop, reports ENOBUFS
at the next recv and stays congested until its queue is read empty.

Every request is also checked more strictly than the kernel does
(:meth:`FakeKernel.check`): what the client does wrong lands in ``problems``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest

from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats import transport
from pytaskstats.connector import NETLINK_CONNECTOR
from pytaskstats.cpulist import CpulistError, parse_cpumask
from pytaskstats.errors import RemoteProtocolError
from pytaskstats.fields import FIELDS, Scope, Timespec, layout
from pytaskstats.kernel import possible_cpus
from pytaskstats.records import CgroupStats, ExitRecord, TaskStats

TRUESIZE = 2304  # receive-buffer bytes one reply skb charges (genlmsg_new's ~1.2 KB + skb)
RMEM_MAX = 212992  # net.core.rmem_max: the cap of an unprivileged SO_RCVBUF
SOCK_MIN_RCVBUF = 4608  # 2 * (2048 + sizeof(struct sk_buff), aligned)
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
GENL_ADMIN_PERM = 0x01
# what nlctrl reports for TASKSTATS on 6.18 (live): GET is GENL_ADMIN_PERM | CAP_DO |
# CAP_HASPOL, CGROUPSTATS_GET CAP_DO | CAP_HASPOL; maxattr 0 (per-op policies)
OPS = ((ts.CMD_GET, 0x0B), (ts.CGROUPSTATS_CMD_GET, 0x0A))
_TASKSTATS_CMDS = (ts.CMD_GET, ts.CGROUPSTATS_CMD_GET)
Tamper = Callable[[list[bytes]], list[bytes]]


class FakeSocket:
    """One NETLINK_GENERIC socket of the fake kernel: the calls transport.py makes
    on a ``socket.socket``, over a queue of datagrams.  ``fileno()`` is an eventfd
    that is readable while a datagram or an error waits, so selectors work."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.portid = 0
        self.queue: deque[bytes] = deque()
        self.rcvbuf = 212992  # net.core.rmem_default
        self.rmem = 0
        self.drops = 0
        self.error = 0  # sk_err: reported (and cleared) by the next recv
        self.more_errors: list[int] = []  # set by a test: errors for the recvs after
        self.congested = False
        self.timeout: float | None = None  # SO_RCVTIMEO; None: wait forever
        self.blocking = True
        self.closed = False
        self.cap_ack = self.ext_ack = False
        self.timeouts = 0  # recvs that timed out
        self.fds_in: list[int] = []  # fds passed with the last datagram (SCM_RIGHTS)
        self.last_seq = 0
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._signalled = False

    # ------------------------------------------------ the socket.socket interface
    def bind(self, address: tuple[int, int]) -> None:
        self.portid = address[0] or self.kernel.autobind()

    def getsockname(self) -> tuple[int, int]:
        return self.portid, 0

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        if level == socket.SOL_SOCKET and option == transport.SO_RCVBUFFORCE:
            if not self.kernel.privileged:
                raise PermissionError(errno.EPERM, "Operation not permitted")
            self.rcvbuf = max(2 * int(value), SOCK_MIN_RCVBUF)  # doubled for overhead
        elif level == socket.SOL_SOCKET and option == socket.SO_RCVBUF:
            self.rcvbuf = max(2 * min(int(value), RMEM_MAX), SOCK_MIN_RCVBUF)
        elif level == socket.SOL_SOCKET and option == socket.SO_RCVTIMEO:
            assert isinstance(value, bytes)
            sec, usec = struct.unpack("@ll", value)
            self.timeout = sec + usec / 1e6 or None
        elif level == SOL_NETLINK and option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            setattr(self, "cap_ack" if option == NETLINK_CAP_ACK else "ext_ack", bool(value))
        else:
            raise AssertionError(f"fake kernel: unexpected setsockopt({level}, {option})")

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes:
        if level == socket.SOL_SOCKET and option == socket.SO_RCVBUF:
            return self.rcvbuf
        if level == socket.SOL_SOCKET and option == transport.SO_MEMINFO:
            meminfo = (self.rmem, self.rcvbuf, 0, 212992, 0, 0, 0, 0, self.drops)
            return struct.pack("=9I", *meminfo)[:buflen]
        raise AssertionError(f"fake kernel: unexpected getsockopt({level}, {option})")

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)

    def send(self, data: bytes, flags: int = 0) -> int:
        assert not self.closed, "send on a closed socket"
        if not self.portid:
            self.bind((0, 0))
        try:
            self.kernel.receive(self, bytes(data))
        finally:
            self.fds_in = []
        return len(data)

    def recv_into(self, buffer: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        """One datagram into ``buffer``, as netlink_recvmsg(): a pending error first;
        with MSG_TRUNC the datagram's full length; the congestion ends once the queue
        is read empty.  Empty: EAGAIN at once when non-blocking or on a receive
        timeout (nothing can arrive later: the fake answers inside send())."""
        assert not self.closed, "recv on a closed socket"
        if self.error or not self.queue:
            self.congested = self.congested and bool(self.queue)
            if self.error:
                err, self.error = self.error, self.more_errors.pop(0) if self.more_errors else 0
                self._sync()
                raise OSError(err, os.strerror(err))
            waits = self.blocking and not flags & socket.MSG_DONTWAIT
            if waits and self.timeout is None:
                raise AssertionError("fake kernel: this recv would block forever")
            self.timeouts += waits
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        data = self.queue.popleft()
        self.rmem -= TRUESIZE
        size = nbytes or len(buffer)
        buffer[:min(size, len(data))] = data[:size]
        if not self.queue:
            self.congested = False
        self._sync()
        return len(data) if flags & socket.MSG_TRUNC else min(size, len(data))

    # ------------------------------------------------ the kernel's side
    def deliver(self, data: bytes) -> bool:
        """Queue ``data`` as netlink_attachskb() does for a kernel sender: taken when
        the queue is empty or it fits the buffer, and the socket is not congested;
        else dropped: sk_drops + 1, and ENOBUFS once per congestion."""
        if self.closed:
            return False
        if self.congested or (self.queue and self.rmem + TRUESIZE > self.rcvbuf):
            self.drops += 1
            if not self.congested:
                self.congested, self.error = True, errno.ENOBUFS
            self._sync()
            return False
        self.queue.append(data)
        self.rmem += TRUESIZE
        self._sync()
        return True

    def _sync(self) -> None:
        """The eventfd is readable exactly while something waits."""
        want = bool(self.queue or self.error)
        if want and not self._signalled:
            os.eventfd_write(self._fd, 1)
        elif not want and self._signalled:
            os.eventfd_read(self._fd)
        self._signalled = want


S = TypeVar("S", bound=FakeSocket)


class FakeConnector(FakeSocket):
    """A NETLINK_CONNECTOR socket: joining the proc connector's group needs
    CAP_NET_ADMIN (EPERM); ``kernel.connector_refused`` makes the listen request fail
    (ECONNREFUSED, as outside the initial network namespace)."""

    def bind(self, address: tuple[int, int]) -> None:
        if not self.kernel.privileged:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.portid = os.getpid()

    def send(self, data: bytes, flags: int = 0) -> int:
        if self.kernel.connector_refused:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        self.kernel.datagrams.append(bytes(data))
        return len(data)


class _SocketModule:
    """What transport.py sees as ``socket`` while the fake is installed: the real
    module, except that netlink sockets (and fds of fake ones) are fakes, and so are
    Unix sockets where the kernel plays taskstatsd."""

    def __init__(self, kernel: FakeKernel) -> None:
        self._kernel = kernel

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    def socket(self, family: int = -1, type: int = -1, proto: int = -1,
               fileno: int | None = None) -> Any:
        kernel = self._kernel
        if fileno is not None and fileno in kernel.by_fd:
            adopted = kernel.by_fd[fileno]
            adopted.last_seq = 0  # a new owner numbers its requests afresh
            return adopted
        if family == socket.AF_NETLINK and proto in (transport.NETLINK_GENERIC,
                                                     NETLINK_CONNECTOR):
            if kernel.refuse_sockets:
                raise OSError(kernel.refuse_sockets, os.strerror(kernel.refuse_sockets))
            if proto == NETLINK_CONNECTOR:
                return kernel.track(FakeConnector(kernel))
            return kernel.open_socket()
        if family == socket.AF_UNIX and fileno is None:
            peer = kernel.open_unix()
            if peer is not None:
                return peer
        return socket.socket(family, type, proto, fileno)

    @staticmethod
    def send_fds(sock: Any, buffers: list[bytes], fds: list[int], flags: int = 0) -> int:
        """Datagram and fds to a fake peer (kept in its ``fds_in``), else the real call."""
        if not isinstance(sock, FakeSocket):
            return socket.send_fds(sock, buffers, fds, flags)
        sock.fds_in = list(fds)
        return sock.send(b"".join(buffers), flags)


class FakeKernel:
    """A kernel with the TASKSTATS family: give it tasks (:meth:`add_task`), thread
    groups, cgroups and exits (:meth:`exit`); read what it was asked in ``requests``
    and what the client did wrong in ``problems``.

    ``privileged``: the caller has CAP_NET_ADMIN (else GET and register are EPERM and
    SO_RCVBUFFORCE is refused); ``initial_ns``: it is in the initial user and PID
    namespaces (else register is EINVAL); ``family``: None when the kernel has no
    TASKSTATS family; ``tamper``: rewrites the replies to each request datagram
    before they are queued (reorder, drop, change them); ``after``: called once each
    request datagram is answered (to change the scene between requests).
    """

    def __init__(self, *, family_id: int = 31, privileged: bool = True,
                 initial_ns: bool = True, cpus: Iterable[int] | None = None) -> None:
        self.family: genl.FamilyInfo | None = genl.FamilyInfo(
            family_id, ts.FAMILY_NAME, ts.GENL_VERSION, 0, 0, OPS)
        self.privileged, self.initial_ns = privileged, initial_ns
        self.possible = sorted(possible_cpus() if cpus is None else cpus)
        self.tasks: dict[int, TaskStats] = {}
        self.groups: dict[int, TaskStats] = {}
        self.cgroups: dict[int, CgroupStats | int] = {}  # fd -> counts, or an errno
        self.errors: dict[tuple[str, int], int] = {}  # (scope, id) -> errno to answer
        self.listeners: dict[int, list[FakeSocket]] = {}  # cpu -> sockets, in order
        self.sockets: list[FakeSocket] = []
        self.by_fd: dict[int, FakeSocket] = {}
        self.requests: list[ts.Request | tuple[str, str]] = []
        self.datagrams: list[bytes] = []
        self.problems: list[str] = []
        self.tamper: Tamper | None = None
        self.after: Callable[[], None] | None = None  # called when a datagram is answered
        self.refuse_sockets = 0
        self.connector_refused = False
        self._ports = iter(range(0xFFFFEFFF, 0, -1))  # the kernel's autobind rover
        self._exit_seq: dict[int, int] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
        """Make pytaskstats.transport open its netlink sockets here (until the test
        ends).  Fails loudly if transport.py no longer opens sockets via ``socket``."""
        assert getattr(transport, "socket", None) is socket, \
            "transport.py no longer opens its sockets through the socket module"
        monkeypatch.setattr(transport, "socket", _SocketModule(self))
        return self

    def open_socket(self) -> FakeSocket:
        """A new NETLINK_GENERIC socket."""
        return self.track(FakeSocket(self))

    def open_unix(self) -> FakeSocket | None:
        """An AF_UNIX socket: a real one (None) unless this kernel plays taskstatsd."""
        return None

    def track(self, sock: S) -> S:
        """Count ``sock`` among this kernel's sockets (findable by its fd)."""
        self.sockets.append(sock)
        self.by_fd[sock.fileno()] = sock
        return sock

    def autobind(self) -> int:
        """The first socket of a process gets its pid; later ones the rover's."""
        if all(s.portid != os.getpid() for s in self.sockets):
            return os.getpid()
        return next(self._ports)

    def close(self) -> None:
        """Close what the client left open (the eventfds)."""
        for sock in self.sockets:
            sock.close()

    # ------------------------------------------------ what the kernel knows
    def add_task(self, pid: int, *, version: int = 16, tgid: int | None = None,
                 comm: str = "fake", **fields: Any) -> TaskStats:
        """A live task; returns its record as a client decodes it (by pid)."""
        self.tasks[pid] = record(pid, version=version, tgid=tgid, comm=comm, **fields)
        return expected(self.tasks[pid], "pid")

    def add_group(self, tgid: int, *, version: int = 16, **fields: Any) -> TaskStats:
        """A live thread group; returns its record as a client decodes it."""
        self.groups[tgid] = record(tgid, version=version, tgid=tgid, scope="tgid", **fields)
        return expected(self.groups[tgid], "tgid")

    def exit(self, pid: int, cpu: int, *, group: TaskStats | None = None) -> ExitRecord:
        """Task ``pid`` exits on ``cpu``: its record (and ``group``'s, when it was the
        last thread) goes to every listener of ``cpu``, port 0, with the CPU's
        sequence number; listeners whose socket is closed are pruned (ECONNREFUSED).
        Returns the record as a listener decodes it."""
        task = self.tasks.pop(pid)
        seq = self._exit_seq.get(cpu, 0)
        self._exit_seq[cpu] = seq + 1
        event = ExitRecord(task=task, group=group, pid=pid,
                           tgid=task.ac_tgid if group is None else group.ac_tgid, seq=seq)
        assert self.family is not None
        data = ts.encode_exit(self.family.id, event)
        listeners = self.listeners.get(cpu, [])
        listeners[:] = [s for s in listeners if not s.closed]
        for sock in listeners:
            sock.deliver(data)
        (decoded,) = ts.decode(data, self.family.id)
        assert isinstance(decoded, ExitRecord)
        return decoded

    # ------------------------------------------------ requests
    def receive(self, sock: FakeSocket, data: bytes) -> None:
        """One datagram from ``sock``, walked as netlink_rcv_skb() walks it: each
        message answered (and queued) before the next is read.  An answer the socket
        has no room for fails its handler with EAGAIN, whose error is then dropped
        too (two drops per lost reply, as the live kernel counts).  With ``tamper``
        the replies of the whole datagram pass through it first."""
        self.datagrams.append(data)
        self.check(sock, data)
        held: list[bytes] = []
        for msg in nl.walk(data):
            request = bytes(msg.data[msg.start - nl.HEADER.size:msg.end])
            answer, err, text = self._message(sock, msg, request)
            if self.tamper:
                held += answer + self._ack(sock, msg, request, err, text)
                continue
            if not all([sock.deliver(reply) for reply in answer]):
                err = errno.EAGAIN
            for ack in self._ack(sock, msg, request, err, text):
                sock.deliver(ack)
        for reply in self.tamper(held) if self.tamper else ():
            sock.deliver(reply)
        if self.after:
            self.after()

    def _message(self, sock: FakeSocket, msg: nl.Message, request: bytes
                 ) -> tuple[list[bytes], int, str]:
        """The answer to one message, its handler's errno (0: success; -1: the answer
        is the error already, a policy failure) and the error's text."""
        if not msg.flags & nl.NLM_F_REQUEST or msg.type < nl.NLMSG_MIN_TYPE:
            return [], 0, ""
        try:
            return self._dispatch(sock, msg), 0, ""
        except nl.PolicyError as err:
            return [nl.encode_error(err.errno, request, seq=msg.seq, pid=sock.portid,
                                    capped=sock.cap_ack,
                                    ext_message=str(err) if sock.ext_ack else "",
                                    ext_offset=err.offset if sock.ext_ack else None)], -1, ""
        except KernelError as err:
            return [], err.errno, err.text

    def _ack(self, sock: FakeSocket, msg: nl.Message, request: bytes, err: int,
             text: str = "") -> list[bytes]:
        """netlink_ack(): an error always, success only with NLM_F_ACK."""
        if err < 0 or (not err and not msg.flags & nl.NLM_F_ACK):
            return []
        return [nl.encode_error(err, request, seq=msg.seq, pid=sock.portid,
                                capped=sock.cap_ack, ext_message=text if sock.ext_ack else "")]

    def _dispatch(self, sock: FakeSocket, msg: nl.Message) -> list[bytes]:
        family = self.family
        if msg.type != genl.GENL_ID_CTRL and (family is None or msg.type != family.id):
            raise KernelError(errno.ENOENT)
        if msg.end - msg.start < genl.GENL_HEADER.size:
            raise KernelError(errno.EINVAL)
        cmd, _ = genl.genl_header(msg)
        if msg.type == genl.GENL_ID_CTRL:
            return self._getfamily(sock, msg, cmd)
        assert family is not None
        if cmd not in dict(family.ops) or msg.flags & nl.NLM_F_DUMP == nl.NLM_F_DUMP:
            raise KernelError(errno.EOPNOTSUPP)  # no such op, or no dumpit
        if dict(family.ops)[cmd] & GENL_ADMIN_PERM and not self.privileged:
            raise KernelError(errno.EPERM)
        req = ts.decode_request(msg)
        self.requests.append(req)
        return self._handle(sock, msg, req, family.id)

    def _getfamily(self, sock: FakeSocket, msg: nl.Message, cmd: int) -> list[bytes]:
        if cmd != genl.CTRL_CMD_GETFAMILY:
            raise KernelError(errno.EOPNOTSUPP)
        query, _ = genl.decode_family_query(msg)
        self.requests.append(("getfamily", str(query)))
        if query is None:
            raise KernelError(errno.EINVAL)
        if self.family is None or query not in (self.family.name, self.family.id):
            raise KernelError(errno.ENOENT)
        return [genl.encode_family(self.family, seq=msg.seq, pid=sock.portid)]

    def _handle(self, sock: FakeSocket, msg: nl.Message, req: ts.Request,
                family: int) -> list[bytes]:
        if req.op in ("register", "deregister"):
            self._listen(sock, msg, req.op)
            return []
        if req.op == "cgroup":
            answer = self.cgroups.get(int(req.value))
            if answer is None:
                return []  # fdget() failed: the kernel returns 0, answering nothing
            if isinstance(answer, int):
                raise KernelError(answer)
            reply = ts.CgroupStatsReply(req.seq, answer)
            return [ts.encode_cgroupstats_reply(family, reply, pid=sock.portid)]
        if req.op not in ("pid", "tgid"):
            raise KernelError(errno.EINVAL)
        ident = int(req.value)
        err = self.errors.get((req.op, ident))
        stats = (self.tasks if req.op == "pid" else self.groups).get(ident)
        if err or stats is None:
            raise KernelError(err or errno.ESRCH)
        reply_ = ts.StatsReply(req.seq, req.op, ident, stats)
        return [ts.encode_stats_reply(family, reply_, pid=sock.portid)]

    def _listen(self, sock: FakeSocket, msg: nl.Message, op: str) -> None:
        """add_del_listener(): init namespaces only; the mask parsed by cpulist_parse()
        and a subset of the possible CPUs; a duplicate registration is ignored."""
        if not self.initial_ns:
            raise KernelError(errno.EINVAL)
        wanted = ts.ATTR_REGISTER_CPUMASK if op == "register" else ts.ATTR_DEREGISTER_CPUMASK
        found, _ = nl.parse_attrs(msg, msg.start + genl.GENL_HEADER.size, {})
        a, b = found[wanted]
        if b - a > 100 + 6 * 8192:  # TASKSTATS_CPUMASK_MAXLEN (NR_CPUS 8192)
            raise KernelError(errno.E2BIG)
        try:
            cpus = parse_cpumask(bytes(msg.data[a:b - 1]).split(b"\0")[0],
                                 max(self.possible) + 1)
        except CpulistError as err:
            raise KernelError(err.errno) from err
        if not set(cpus) <= set(self.possible):
            raise KernelError(errno.EINVAL)
        for cpu in cpus:
            here = self.listeners.setdefault(cpu, [])
            if op == "register" and sock not in here:
                here.append(sock)
            elif op == "deregister" and sock in here:
                here.remove(sock)

    # ------------------------------------------------ the strict check
    def check(self, sock: FakeSocket, data: bytes) -> None:
        """Record in ``problems`` whatever in this request datagram a careful client
        would not send (the kernel itself is more lenient)."""
        messages = nl.walk(data)
        if sum(nl.align4(m.end - m.start + nl.HEADER.size) for m in messages) != len(data):
            self.problems.append(f"datagram of {len(data)} bytes is not whole messages")
        for msg in messages:
            for problem in self._problems(sock, msg):
                self.problems.append(f"seq {msg.seq}: {problem}")
            if msg.seq:
                sock.last_seq = msg.seq


    def _problems(self, sock: FakeSocket, msg: nl.Message) -> list[str]:
        """What is wrong with one request message (see :meth:`check`)."""
        out = []
        if msg.flags & ~(nl.NLM_F_REQUEST | nl.NLM_F_ACK) or not msg.flags & nl.NLM_F_REQUEST:
            out.append(f"flags {msg.flags:#x}: want NLM_F_REQUEST, optionally NLM_F_ACK")
        if not msg.seq or (msg.seq <= sock.last_seq and sock.last_seq < 0xFFFF0000):
            out.append(f"sequence number not fresh (last {sock.last_seq})")
        if msg.pid not in (0, sock.portid):
            out.append(f"nlmsg_pid {msg.pid} is neither 0 nor the port {sock.portid}")
        if msg.end - msg.start < genl.GENL_HEADER.size:
            return [*out, "no genlmsghdr"]
        cmd, version = genl.genl_header(msg)
        reserved = struct.unpack_from("=H", msg.data, msg.start + 2)[0]
        rules = self._rules(msg.type, cmd)
        if rules is None:
            return [*out, f"message type {msg.type} is no family we have"]
        cmds, expect = rules
        if cmd not in cmds or version != ts.GENL_VERSION or reserved:
            out.append(f"genlmsghdr cmd {cmd} version {version} reserved {reserved}")
        return out + _attr_problems(msg, expect)

    def _rules(self, mtype: int, cmd: int) -> tuple[tuple[int, ...], dict[int, str]] | None:
        """The commands of family ``mtype`` and the attributes a request of ``cmd``
        carries (exactly one of them: type -> "u32", "string" or "json")."""
        if mtype == genl.GENL_ID_CTRL:
            return (genl.CTRL_CMD_GETFAMILY,), {genl.CTRL_ATTR_FAMILY_NAME: "string"}
        if self.family is None or mtype != self.family.id:
            return None
        if cmd == ts.CGROUPSTATS_CMD_GET:
            return _TASKSTATS_CMDS, {ts.CGROUPSTATS_ATTR_FD: "u32"}
        return _TASKSTATS_CMDS, {ts.ATTR_PID: "u32", ts.ATTR_TGID: "u32",
                                 ts.ATTR_REGISTER_CPUMASK: "string",
                                 ts.ATTR_DEREGISTER_CPUMASK: "string"}


class KernelError(Exception):
    """A handler's negative return: the errno the kernel answers with, and (from
    taskstatsd, to a client that set ext_ack) a text."""

    def __init__(self, err: int, text: str = "") -> None:
        super().__init__(text or os.strerror(err))
        self.errno, self.text = err, text


def _attr_problems(msg: nl.Message, expect: dict[int, str]) -> list[str]:
    try:
        attrs = nl.iter_attrs(msg.data, msg.start + genl.GENL_HEADER.size, msg.end)
    except RemoteProtocolError as err:
        return [f"attributes malformed: {err}"]
    if len(attrs) != 1 or attrs[0][0] not in expect:
        return [f"want exactly one of attributes {sorted(expect)}, got "
                f"{[a[0] for a in attrs]}"]
    atype, a, b = attrs[0]
    payload = bytes(msg.data[a:b])
    if expect[atype] == "json":
        try:
            json.loads(payload)
        except ValueError:
            return [f"attribute {atype}: {payload[:40]!r} is not JSON"]
    if expect[atype] == "u32" and len(payload) != 4:
        return [f"attribute {atype}: a u32 of {len(payload)} bytes"]
    if expect[atype] == "string" and (len(payload) < 2 or b"\0" in payload[:-1]
                                      or payload[-1:] != b"\0"):
        return [f"attribute {atype}: {payload!r} is not one NUL-terminated string"]
    return []


# ---------------------------------------------------------------- records

def record(ident: int, *, version: int = 16, tgid: int | None = None, comm: str = "fake",
           scope: Scope = "pid", **fields: Any) -> TaskStats:
    """A record of struct ``version`` whose every field has a value derived from its
    table position and ``ident`` (so a mix-up shows), overridden by ``fields``.  TGID
    records carry only the fields the kernel sums for a thread group."""
    values: dict[str, Any] = {}
    for f in FIELDS:
        if scope == "tgid" and not f.tgid:
            continue
        values[f.name] = {
            "u8": f.position & 0x7F, "i8": -(f.position % 20), "u16": version,
            "u32": (ident * 7 + f.position) & 0xFFFFFFFF,
            "u64": ident * 1_000_003 + f.position,
            "comm": comm, "timespec": Timespec(1_700_000_000 + f.position, f.position),
        }[f.ctype]
    if scope == "pid":
        values.update(ac_pid=ident, ac_tgid=ident if tgid is None else tgid, ac_ppid=1)
    values.update(version=version, **fields)
    return TaskStats(**values, scope=scope)


def expected(stats: TaskStats, scope: Scope) -> TaskStats:
    """``stats`` as a client decodes it from the kernel's bytes."""
    data = ts.encode_stats(stats)
    return ts.decode_stats(data, 0, len(data), scope=scope)


def stats_size(version: int) -> int:
    """sizeof(struct taskstats) of ``version``: the STATS payload the kernel sends."""
    return layout(version).size


def with_seq(datagram: bytes, seq: int) -> bytes:
    """``datagram`` (one message) with its sequence number replaced."""
    return datagram[:8] + struct.pack("=I", seq) + datagram[12:]


def big_datagram(size: int) -> bytes:
    """One NLMSG_NOOP of ``size`` bytes (for truncation: the client's buffer is 64 KiB)."""
    return nl.encode_message(nl.NLMSG_NOOP, 0, 0, 0, b"\0" * (size - nl.HEADER.size))
