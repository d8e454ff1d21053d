"""The framing between taskstatsd and its journal writer, without a process: every
exit shape round-trips whole, split at every byte and before trailing garbage;
health snapshots round-trip."""

from __future__ import annotations

import dataclasses

import pytest

from pytaskstats.daemon.journal_frames import (
    CALL,
    EXIT,
    HEALTH,
    NOTE,
    JournalHealth,
    Unframer,
    decode_exit,
    decode_health,
    encode_exit,
    encode_health,
    encode_json,
    json_of,
    split,
)
from pytaskstats.daemon.journal_rows import JournalEntry, Tags
from tests.test_journal_process import variety


def entries() -> list[JournalEntry]:
    tags = [Tags(), Tags(True, "", None), Tags(False, "900", "5/5/1"),
            Tags(None, "900/901", "6 2/6 2/")]
    return [dataclasses.replace(e, tags=tags[i % len(tags)]) for i, e in enumerate(variety())]


def stream() -> bytes:
    out = [encode_json(NOTE, ["lost_overrun", 3])]
    out += [b"".join(encode_exit(e)) for e in entries()]
    out.append(encode_json(CALL, [7, "flush"]))
    return b"".join(out)


def decoded(data: bytes, frames: list[tuple[int, int, int]]) -> list[object]:
    return [decode_exit(data, f) if f[0] == EXIT else json_of(data, f) for f in frames]


EXPECTED = [["lost_overrun", 3], *(e.item for e in entries()), [7, "flush"]]


def test_exits_and_calls_round_trip_whole() -> None:
    data = stream()
    frames, pos = split(data)
    assert pos == len(data)
    assert [f[0] for f in frames] == [NOTE, *[EXIT] * len(entries()), CALL]
    assert decoded(data, frames) == EXPECTED


def test_a_stream_split_anywhere_gives_the_same_frames() -> None:
    data = stream()
    for step in (1, 7, 100, 4096):
        unframer, out = Unframer(), []
        for at in range(0, len(data), step):
            out += decoded(*unframer.feed(data[at:at + step]))
        assert out == EXPECTED, step


def test_an_incomplete_tail_waits() -> None:
    data = stream()
    frames, pos = split(data + b"E\x10\x00")
    assert pos == len(data) and decoded(data, frames) == EXPECTED


def test_an_exit_frame_whose_lengths_disagree_is_refused() -> None:
    head, path, ns, raw = encode_exit(entries()[1])
    data = head + path + ns + raw + b"x"
    bad = bytearray(data)
    bad[1:5] = (len(data) - 5).to_bytes(4, "little")  # one byte more than declared raw
    with pytest.raises(ValueError, match="declares"):
        decode_exit(bytes(bad), (EXIT, 0, len(bad)))


def test_health_round_trips() -> None:
    health = JournalHealth({"journaled": 5, "lost_overrun": 2}, True, 3, 8, False)
    frame = encode_health(health)
    frames, _ = split(frame)
    assert frames == [(HEALTH, 0, len(frame))]
    assert decode_health(json_of(frame, frames[0])) == health
    assert JournalHealth() == JournalHealth({}, False, 0, 0, True)
