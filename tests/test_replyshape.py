"""The GET replies' fast path (pytaskstats.replyshape, used by kernel.Connection)
answers exactly what the strict decoder answers: each odd or malformed reply is
fed to a connection that has learned the reply shape and to one that cannot learn
it (strict decoding only), and the two outcomes (records, skipped ids, exits set
aside, or the exception and its text) must be equal."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytaskstats import AccessDenied, replyshape
from pytaskstats import kernel as kernel_mod
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.errors import LocalProtocolError
from pytaskstats.kernel import Connection

from .fakekernel import FakeKernel, record

PIDS = list(range(5000, 5040))
MIDDLE = 5020
Change = Callable[[bytes], bytes]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    fake = FakeKernel(cpus=range(4)).install(monkeypatch)
    for pid in PIDS:
        fake.add_task(pid, comm=f"w{pid}")
    fake.add_task(1, comm="warm")
    fake.add_group(1)
    fake.add_group(5000)
    yield fake
    fake.close()


def at(ident: int, change: Change) -> Callable[[list[bytes]], list[bytes]]:
    """A tamper changing the reply about task ``ident`` (where there is one)."""
    def tamper(replies: list[bytes]) -> list[bytes]:
        return [change(r) if _ident(r) == ident else r for r in replies]
    return tamper


def _ident(reply: bytes) -> int | None:
    if len(reply) < 36 or struct.unpack_from("=H", reply, 4)[0] == nl.NLMSG_ERROR:
        return None
    return int(struct.unpack_from("=I", reply, 28)[0])


def poke(offset: int, fmt: str, value: int) -> Change:
    return lambda r: r[:offset] + struct.pack(fmt, value) + r[offset + struct.calcsize(fmt):]


def stats_first(reply: bytes) -> bytes:
    """The AGGR nest with STATS before the PID attribute (same size)."""
    return reply[:24] + reply[32:] + reply[24:32]


def padded(reply: bytes) -> bytes:
    """Eight more bytes of STATS payload (zeros), every length grown to match."""
    n = len(reply) + 8
    out = bytearray(reply + b"\0" * 8)
    struct.pack_into("=I", out, 0, n)
    struct.pack_into("=H", out, 20, n - 20)
    struct.pack_into("=H", out, 32, n - 32)
    return bytes(out)


def comm_bytes(raw: bytes) -> Change:
    """ac_comm (offset 36 + its offset in v16) replaced by ``raw`` (32 bytes)."""
    offset = 36 + 32  # version..ac_pad, then ac_comm in the v16/v17 layout
    return lambda r: r[:offset] + raw + r[offset + 32:]


def doubled(reply: bytes) -> bytes:
    """Two copies of the reply in one datagram (the second a stale duplicate)."""
    return reply + reply


def as_exit(reply: bytes) -> bytes:
    return poke(12, "=I", 0)(reply)


CHANGES: dict[str, Change] = {
    "nlmsg_len short": poke(0, "=I", 1 << 10),
    "nlmsg_len past the datagram": lambda r: poke(0, "=I", len(r) + 4)(r),
    "another message type": poke(4, "=H", 77),
    "NLM_F_MULTI set": poke(6, "=H", nl.NLM_F_MULTI),
    "another genl command": poke(16, "=B", ts.CMD_GET),
    "genl version 2": poke(17, "=B", 2),
    "genl reserved set": poke(18, "=H", 1),
    "nest length short": lambda r: poke(20, "=H", len(r) - 28)(r),
    "TGID nest around a PID": poke(22, "=H", ts.TYPE_AGGR_TGID),
    "id attribute of 12 bytes": poke(24, "=H", 12),
    "STATS length short": lambda r: poke(32, "=H", len(r) - 40)(r),
    "STATS type 9": poke(34, "=H", 9),
    "version 0": poke(36, "=H", 0),
    "version 1": poke(36, "=H", 1),
    "version 15 in a v16 payload": poke(36, "=H", 15),
    "version 8 in a v16 payload": poke(36, "=H", 8),
    "version 99": poke(36, "=H", 99),
    "STATS before PID": stats_first,
    "padding after the struct": padded,
    "comm without NUL": comm_bytes(b"x" * 32),
    "comm not UTF-8": comm_bytes(b"\xff\xfeab" + b"\0" * 28),
    "port id 0 (an exit)": as_exit,
    "two messages in one datagram": doubled,
    "stale sequence number": poke(8, "=I", 999_999),
}


def outcome(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch, *, fast: bool,
            tamper: Callable[[list[bytes]], list[bytes]] | None,
            run: Callable[[Connection], Any]) -> tuple[Any, ...]:
    """What ``run`` answers on a fresh connection, with the fast path or without."""
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(kernel_mod, "learn", lambda *a, **k: None)
            patch.setattr(kernel_mod, "esrch", lambda *a, **k: None)
        with Connection(timeout=0.05) as conn:
            conn.query("pid", 1)
            conn.query("tgid", 1)
            assert bool(conn.shapes) == fast
            kernel.tamper = tamper
            try:
                got = run(conn)
            except Exception as err:
                result: tuple[Any, ...] = ("raised", type(err), str(err))
            else:
                extra = (got.vanished, got.denied) if hasattr(got, "vanished") else ()
                result = ("answered", dict(got) if extra else got, extra)
            kernel.tamper = None
            return (*result, list(conn.pending_exits))


def both(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch, run: Callable[[Connection], Any],
         tamper: Callable[[list[bytes]], list[bytes]] | None = None) -> tuple[Any, ...]:
    strict = outcome(kernel, monkeypatch, fast=False, tamper=tamper, run=run)
    fast = outcome(kernel, monkeypatch, fast=True, tamper=tamper, run=run)
    assert fast == strict
    return fast


def bulk(conn: Connection) -> Any:
    return conn.query_many("pid", PIDS)


@pytest.mark.parametrize("name", CHANGES)
def test_an_odd_reply_in_a_window_is_answered_as_strictly(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    both(kernel, monkeypatch, bulk, at(MIDDLE, CHANGES[name]))


@pytest.mark.parametrize("name", CHANGES)
def test_an_odd_reply_to_one_query_is_answered_as_strictly(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    both(kernel, monkeypatch, lambda conn: conn.query("pid", MIDDLE), at(MIDDLE, CHANGES[name]))


def test_the_fast_path_decodes_nothing_strictly_when_all_is_well(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    answered = both(kernel, monkeypatch, bulk)
    assert answered[1] == {pid: kernel.add_task(pid, comm=f"w{pid}") for pid in PIDS}
    decoded: list[int] = []
    real = ts.decode

    def counting(*args: Any, **kwargs: Any) -> list[ts.Event]:
        decoded.append(1)
        return real(*args, **kwargs)

    with Connection() as conn:
        conn.query("pid", 1)
        monkeypatch.setattr(ts, "decode", counting)
        assert conn.query_many("pid", PIDS) == answered[1]
        assert conn.query("pid", MIDDLE) == answered[1][MIDDLE]
    assert decoded == []


def test_other_versions_in_the_mix(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel.tasks[5001] = record(5001, version=8, comm="old")
    kernel.tasks[5002] = record(5002, version=15, comm="v15")
    kernel.tasks[5003] = record(5003, version=17, comm="v17")
    answered = both(kernel, monkeypatch, bulk)
    assert [answered[1][p].version for p in (5000, 5001, 5002, 5003)] == [16, 8, 15, 17]
    both(kernel, monkeypatch, lambda conn: [conn.query("pid", p) for p in (5001, 5002, 5003)])


def test_errors_in_the_middle_of_a_window(kernel: FakeKernel,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    del kernel.tasks[5010]
    answered = both(kernel, monkeypatch, bulk)
    assert answered[2] == ((5010,), ())
    kernel.errors["pid", MIDDLE] = errno.EPERM
    assert both(kernel, monkeypatch, bulk)[:2] == ("raised", AccessDenied)
    both(kernel, monkeypatch, lambda conn: conn.query_many("pid", PIDS, skip_denied=True))
    kernel.errors["pid", MIDDLE] = errno.EBUSY
    assert both(kernel, monkeypatch, bulk)[0] == "raised"


def test_thread_groups_take_the_fast_path_too(kernel: FakeKernel,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    answered = both(kernel, monkeypatch, lambda conn: conn.query_many("tgid", [1, 5000, 7]))
    assert answered[1][5000].scope == "tgid" and answered[1][5000].ac_comm is None
    assert answered[2] == ((7,), ())
    both(kernel, monkeypatch, lambda conn: conn.query("tgid", 5000),
         at(5000, CHANGES["version 15 in a v16 payload"]))


def test_learn_takes_only_what_it_rebuilds_exactly(kernel: FakeKernel) -> None:
    reply = ts.encode_stats_reply(kernel.family.id if kernel.family else 0, ts.StatsReply(
        3, "pid", 9, kernel.add_task(9)), pid=77)
    family = kernel.family.id if kernel.family else 0
    strict = ts.decode(reply, family)[0]
    assert isinstance(strict, ts.StatsReply)
    shape = replyshape.learn(reply, len(reply), family, scope="pid", source="kernel",
                             expected=strict.stats)
    assert shape is not None and shape.size == len(reply)
    t = shape.struct.unpack_from(reply)
    assert shape.match(t) and shape.record(t) == strict.stats and t[1] == 3 and t[4] == 9
    assert replyshape.learn(reply, len(reply), family, scope="pid", source="kernel",
                            expected=strict.stats._replace(ac_comm="other")) is None
    assert not shape.match(shape.struct.unpack_from(as_exit(reply)))


@pytest.mark.parametrize("scope", ["pid", "tgid"])
def test_bulk_requests_are_the_single_ones_end_to_end(scope: str) -> None:
    ids = [1, 77, 2**32 - 1, 4242]
    single = ts.encode_get_pid if scope == "pid" else ts.encode_get_tgid
    assert ts.encode_gets(31, scope, ids, 9) == b"".join(  # type: ignore[arg-type]
        single(31, ident, seq=9 + k) for k, ident in enumerate(ids))
    for bad in (-1, 2**32, 1.5):
        with pytest.raises(LocalProtocolError, match=f"id {bad} does not fit"):
            ts.encode_gets(31, "pid", [3, bad], 1)  # type: ignore[list-item]


def at_errors(change: Change) -> Callable[[list[bytes]], list[bytes]]:
    """A tamper changing every NLMSG_ERROR reply."""
    def tamper(replies: list[bytes]) -> list[bytes]:
        return [change(r) if struct.unpack_from("=H", r, 4)[0] == nl.NLMSG_ERROR else r
                for r in replies]
    return tamper


ERROR_CHANGES: dict[str, Change] = {
    "as sent": lambda r: r,
    "NLM_F_CAPPED set": poke(6, "=H", 0x100),
    "EPERM": poke(16, "=i", -errno.EPERM),
    "EBUSY": poke(16, "=i", -errno.EBUSY),
    "a positive error": poke(16, "=i", errno.ESRCH),
    "echo of another id": poke(44, "=I", 5001),
    "echo of another seq": poke(28, "=I", 1),
    "echo with a port id": poke(32, "=I", 77),
    "echo of a TGID query": poke(42, "=H", ts.ATTR_TGID),
    "nlmsg_len short": poke(0, "=I", 44),
    "stale sequence number": poke(8, "=I", 999_999),
    "another message type": poke(4, "=H", 77),
}


@pytest.mark.parametrize("name", ERROR_CHANGES)
def test_an_odd_error_in_a_window_is_answered_as_strictly(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    for pid in (5003, 5010, 5031):
        del kernel.tasks[pid]
    both(kernel, monkeypatch, bulk, at_errors(ERROR_CHANGES[name]))
    both(kernel, monkeypatch, lambda conn: conn.query_many("pid", PIDS, skip_denied=True),
         at_errors(ERROR_CHANGES[name]))
    both(kernel, monkeypatch, lambda conn: sorted(conn.query_replies("pid", PIDS)),
         at_errors(ERROR_CHANGES[name]))


def test_the_plain_esrch_is_taken_without_decoding(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    del kernel.tasks[5010]
    with Connection() as conn:
        conn.query("pid", 1)
        decoded: list[int] = []
        real = ts.decode

        def counting(*args: Any, **kwargs: Any) -> list[ts.Event]:
            decoded.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(ts, "decode", counting)
        got = conn.query_many("pid", PIDS)
    assert got.vanished == (5010,) and 5010 not in got and decoded == []
