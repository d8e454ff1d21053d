"""Property tests: encode/decode round trips, junk never escapes RemoteProtocolError,
and the codec modules stay free of I/O imports (STYLE.md conventions 1 and 11)."""

from __future__ import annotations

import ast
import contextlib
import importlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytaskstats import genetlink as genl
from pytaskstats import netlink as nl
from pytaskstats import taskstats as ts
from pytaskstats.errors import RemoteProtocolError
from pytaskstats.fields import FIELDS, Field, Timespec, layout
from pytaskstats.records import ExitRecord, TaskStats
from tests.conftest import FIXTURES

FAMILY = 27
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
RANGES = {"u8": (0, 2**8 - 1), "i8": (-(2**7), 2**7 - 1), "u16": (0, 2**16 - 1),
          "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1)}
COMM = st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=15)
TIMESPEC = st.none() | st.builds(Timespec, st.integers(1, 2**63 - 1),
                                 st.integers(0, 999_999_999))
U32 = st.integers(0, 2**32 - 1)
GOLDEN = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.bin"))}


def _value(f: Field) -> st.SearchStrategy[object]:
    if f.ctype == "comm":
        return COMM
    if f.ctype == "timespec":
        return TIMESPEC
    return st.integers(*RANGES[f.ctype])


@st.composite
def records(draw: st.DrawFn, scope: str = "pid", version: int | None = None) -> TaskStats:
    """A record as the decoder would build it: newer (or non-TGID) fields None."""
    v = draw(st.integers(2, 17)) if version is None else version
    values: list[object] = []
    for f in FIELDS:
        if f.name == "version":
            values.append(v)
        elif f.version > v or (scope == "tgid" and not f.tgid):
            values.append(None)
        else:
            values.append(draw(_value(f)))
    return TaskStats._make([*values, scope, "kernel", layout(v).size, b""])


@st.composite
def exit_records(draw: st.DrawFn) -> ExitRecord:
    task = draw(records())
    group = draw(st.none() | records("tgid", task.version))
    tgid = draw(U32) if group is not None else task.ac_tgid
    return ExitRecord(task=task, group=group, pid=draw(U32), tgid=tgid, seq=draw(U32))


@SETTINGS
@given(records())
def test_stats_round_trip(rec: TaskStats) -> None:
    data = ts.encode_stats(rec)
    assert len(data) == layout(rec.version).size
    assert ts.decode_stats(data, 0, len(data)) == rec


@SETTINGS
@given(records("tgid"))
def test_tgid_stats_round_trip(rec: TaskStats) -> None:
    data = ts.encode_stats(rec)
    assert ts.decode_stats(data, 0, len(data), scope="tgid") == rec


@SETTINGS
@given(st.sampled_from(["pid", "tgid"]).flatmap(
    lambda scope: st.builds(ts.StatsReply, U32, st.just(scope), U32, records(scope))),
       st.integers(1, 2**32 - 1))
def test_stats_reply_round_trip(reply: ts.StatsReply, port: int) -> None:
    assert ts.decode(ts.encode_stats_reply(FAMILY, reply, pid=port), FAMILY) == [reply]


@SETTINGS
@given(exit_records())
def test_exit_round_trip(record: ExitRecord) -> None:
    assert ts.decode(ts.encode_exit(FAMILY, record), FAMILY) == [record]


def _full_record(version: int) -> TaskStats:
    """Every field of ``version`` set to a distinct non-zero value."""
    sample = {"u8": 3, "i8": -5, "comm": "comm", "timespec": Timespec(7, 9)}
    return TaskStats._make([
        version if f.name == "version" else None if f.version > version
        else sample.get(f.ctype, f.position + 1) for f in FIELDS] + ["pid", "kernel", 0, b""])


@pytest.mark.parametrize("version", range(2, 18))
def test_every_short_stats_payload_decodes_a_prefix(version: int) -> None:
    """Exhaustive over the cut: the fields that fit, in layout order, and None after."""
    rec = _full_record(version)
    raw = ts.encode_stats(rec)
    order = [f.position for f in layout(version).fields]
    for cut in range(2, len(raw) + 1):
        short = ts.decode_stats(raw[:cut], 0, cut)
        have = [short[i] is not None for i in order]
        assert have == sorted(have, reverse=True), f"cut {cut}: not a prefix"
        assert all(short[i] in (None, rec[i]) for i in order), f"cut {cut}"
        assert short.payload_len == cut


def _decodes_or_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        ts.decode(data, FAMILY)


@SETTINGS
@given(st.binary(max_size=1500))
def test_junk_decodes_or_raises_protocol_error(data: bytes) -> None:
    _decodes_or_protocol_error(data)


@SETTINGS
@given(st.sampled_from(sorted(GOLDEN)), st.data())
def test_mutated_fixture_decodes_or_raises_protocol_error(name: str, data: st.DataObject) -> None:
    raw = bytearray(GOLDEN[name])
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _decodes_or_protocol_error(bytes(raw))


@SETTINGS
@given(st.sampled_from(sorted(GOLDEN)), st.data())
def test_truncated_fixture_decodes_or_raises_protocol_error(name: str,
                                                            data: st.DataObject) -> None:
    raw = GOLDEN[name]
    _decodes_or_protocol_error(raw[:data.draw(st.integers(0, len(raw) - 1))])


def _message(mtype: int, cmd: int, attrs: bytes) -> nl.Message:
    payload = bytes([cmd, 1, 0, 0]) + attrs
    (msg,) = nl.split_messages(struct.pack("=IHHII", 16 + len(payload), mtype, 0, 1, 0)
                               + payload + b"\0" * (-len(payload) % 4))
    return msg


@SETTINGS
@given(st.sampled_from([
    (genl.GENL_ID_CTRL, genl.decode_family),
    (genl.GENL_ID_CTRL, genl.decode_get_family),
    (FAMILY, ts.decode_request),
]), st.integers(0, 6), st.binary(max_size=200))
def test_request_and_nlctrl_decoders_raise_protocol_error_only(
        target: tuple[int, Callable[[nl.Message], object]], cmd: int, attrs: bytes) -> None:
    """taskstatsd decodes requests from unprivileged peers: junk is RemoteProtocolError."""
    mtype, decoder = target
    with contextlib.suppress(RemoteProtocolError):
        decoder(_message(mtype, cmd, attrs))


CODEC = ["netlink", "genetlink", "taskstats", "fields", "records", "timeviews"]
IO_MODULES = {"socket", "os", "select", "selectors", "subprocess"}
CODEC_IMPORTS = {"errors", *CODEC}


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(absolute top-level modules, sibling modules) imported anywhere in ``module``."""
    path = importlib.import_module(f"pytaskstats.{module}").__file__
    assert path is not None
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    absolute, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            absolute.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            names = [node.module] if node.module else [a.name for a in node.names]
            relative |= {n.split(".")[0] for n in names}
    return absolute, relative


@pytest.mark.parametrize("module", CODEC)
def test_codec_module_imports_no_io(module: str) -> None:
    absolute, relative = _imports(module)
    assert absolute & IO_MODULES == set()
    assert "pytaskstats" not in absolute
    assert relative <= CODEC_IMPORTS
