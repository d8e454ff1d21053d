"""A fake taskstatsd behind the Unix sockets :mod:`pytaskstats.transport` opens: the
fake kernel's TASKSTATS answers over SOCK_SEQPACKET, plus what taskstatsd adds
(daemon/server.py): its TASKSTATSD extension family (SET_OPTIONS, STATUS, HISTORY,
CGROUP with a passed fd), errors with texts for clients that set ext_ack, the
refusal of a connection (EUSERS, then it hangs up) and hanging up."""

from __future__ import annotations

import errno
import importlib
import json
from typing import Any

from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl

from .fakekernel import FakeKernel, FakeSocket, KernelError

# the daemon's extension protocol (moving out of the daemon package: either home)
try:
    protocol: Any = importlib.import_module("pytaskstats.extproto")
except ImportError:
    protocol = importlib.import_module("pytaskstats.daemon.protocol")


class FakePeer(FakeSocket):
    """A client's connection to the fake taskstatsd."""

    hung_up = False

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def connect(self, path: str) -> None:
        assert isinstance(self.kernel, FakeDaemon)
        self.kernel.connect(self, path)

    def send(self, data: bytes, flags: int = 0) -> int:
        if self.hung_up:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return super().send(data, flags)

    def recv_into(self, buffer: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        """As :meth:`FakeSocket.recv_into`; once the daemon hung up and the queue is
        read, end of file (0)."""
        if self.hung_up and not self.queue and not self.error:
            return 0
        return super().recv_into(buffer, nbytes, flags)


class FakeDaemon(FakeKernel):
    """taskstatsd at ``path``: answers as the fake kernel does (as if for root: GET
    needs no privilege of its client; a test refuses tasks with ``errors``), and
    its extension commands from ``status``, ``rows``/``note`` and ``cgroup2`` (the
    counts by passed fd).  ``refusal``: refuse every connection with that text."""

    def __init__(self, path: str = "/run/fake/taskstatsd.sock", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.status: dict[str, Any] = {"version": "fake", "listeners": 0}
        self.rows: list[dict[str, Any]] = []
        self.note = ""
        self.cgroup2: dict[int, dict[str, Any]] = {}
        self.refusal = ""
        self.refusal_closes = True  # False: the client may still send (a race)
        self._ids = iter(range(1, 1 << 30))

    def open_unix(self) -> FakeSocket:
        return self.track(FakePeer(self))

    def connect(self, peer: FakePeer, path: str) -> None:
        """Accept ``peer`` at ``path`` (or refuse it: EUSERS, sequence 0, hang up)."""
        if path != self.path:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        peer.portid = next(self._ids)
        if self.refusal:
            peer.deliver(nl.encode_error(errno.EUSERS, b"", seq=0, pid=0,
                                         ext_message=self.refusal))
            peer.hung_up = self.refusal_closes

    def hang_up(self) -> None:
        """taskstatsd stops: every connection ends."""
        for sock in self.sockets:
            if isinstance(sock, FakePeer):
                sock.hung_up = True

    def _dispatch(self, sock: FakeSocket, msg: nl.Message) -> list[bytes]:
        if msg.type != protocol.FAMILY_ID:
            return super()._dispatch(sock, msg)
        cmd, _ = genl.genl_header(msg)
        params = protocol.decode_json(msg)
        self.requests.append((f"extension {cmd}", json.dumps(params, sort_keys=True)))
        if cmd == protocol.CMD_SET_OPTIONS:
            sock.cap_ack = params.get("cap_ack", sock.cap_ack)
            sock.ext_ack = params.get("ext_ack", sock.ext_ack)
            return []
        if cmd == protocol.CMD_STATUS:
            return [protocol.encode_reply(self.status, seq=msg.seq, pid=sock.portid)]
        if cmd == protocol.CMD_HISTORY:
            if "bad" in params:
                raise KernelError(errno.EINVAL, "history: unknown parameter 'bad'")
            rows: list[bytes] = protocol.encode_rows(self.rows, seq=msg.seq, pid=sock.portid,
                                                     note=self.note, notes=sock.ext_ack)
            return rows
        if cmd == protocol.CMD_CGROUP:
            counts = self.cgroup2.get(sock.fds_in[0]) if sock.fds_in else None
            if counts is None:
                raise KernelError(errno.EBADF, "pass one open cgroup2 directory")
            return [protocol.encode_reply(counts, seq=msg.seq, pid=sock.portid)]
        raise KernelError(errno.EOPNOTSUPP, f"unknown command {cmd}")

    def _rules(self, mtype: int, cmd: int) -> tuple[tuple[int, ...], dict[int, str]] | None:
        if mtype == protocol.FAMILY_ID:
            return tuple(op for op, _ in protocol.OPS), {protocol.ATTR_JSON: "json"}
        return super()._rules(mtype, cmd)
