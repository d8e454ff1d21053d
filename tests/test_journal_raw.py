"""Every journaled exit comes back exactly as the kernel sent it, though the journal
stores no message bytes: the columns rebuild it, and a stored difference covers
the rest (daemon/journal_raw.py); the migration from schema 5, which stored them."""

from __future__ import annotations

import dataclasses
import random
import shutil
import sqlite3
import struct
from pathlib import Path

import pytest

from pytaskstats import taskstats
from pytaskstats.daemon.journal import Store
from pytaskstats.daemon.journal_raw import diff, rebuild, restore
from pytaskstats.daemon.journal_rows import Item, Tags
from pytaskstats.daemon.journal_schema import MIGRATIONS
from pytaskstats.fields import FIELDS, layout
from pytaskstats.records import ExitRecord
from tests.conftest import FIXTURES
from tests.test_journal import EXIT_FIXTURES, FAMILY, SINGLE_EXITS, exit_bytes

CANONICAL = [name for name in SINGLE_EXITS if "padded" not in name]
V17 = "reply_v17.bin"


def item(raw: bytes, i: int = 0) -> Item:
    return (2 * 10**12 + i, i % 4 or None, None if i % 2 else "/a", raw, Tags(True, "", None))


def journaled(journal: Store, raws: list[bytes]) -> list[bytes]:
    """Insert each of ``raws`` alone; the messages that the writer took."""
    return [raw for i, raw in enumerate(raws) if journal.insert([item(raw, i)]) == 1]


def messages(journal: Store) -> list[bytes]:
    return [row["raw"] for row in journal.queries.query(raw=True)]


def extras(path: Path) -> list[bytes | None]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT extra FROM exits ORDER BY id")]


def record(name: str = V17) -> ExitRecord:
    event = taskstats.decode(exit_bytes(name), FAMILY)[0]
    assert isinstance(event, ExitRecord)
    return event


def odd_records() -> list[bytes]:
    """A /proc record (presence bits), a u64 past int64, a TGID nest of another size."""
    base = record()
    procfs = base.task._replace(source="procfs", cpu_delay_total=None, hiwater_rss=None)
    huge = base.task._replace(cpu_count=2**64 - 1, ac_comm="")
    group = record("exit_v16_dual.bin").group
    return [taskstats.encode_exit(FAMILY, dataclasses.replace(base, task=procfs, seq=9)),
            taskstats.encode_exit(FAMILY, dataclasses.replace(base, task=huge, seq=2**32 - 1)),
            taskstats.encode_exit(FAMILY, dataclasses.replace(base, group=group, tgid=77))]


def test_golden_exits_round_trip_and_the_kernel_shape_stores_no_bytes(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    raws = [exit_bytes(name) for name in EXIT_FIXTURES + SINGLE_EXITS] + odd_records()
    with Store(path) as journal:
        assert journaled(journal, raws) == raws
        assert messages(journal) == raws
    stored = dict(zip(EXIT_FIXTURES + SINGLE_EXITS + ["procfs", "huge", "dual"],
                      extras(path), strict=True))
    # the kernel's single exits, the /proc record and the u64 past int64 rebuild whole
    assert [name for name, extra in stored.items() if extra is None] == [
        *CANONICAL, "procfs", "huge"]
    # dual messages keep their TGID nest as a difference well under its size
    for name in EXIT_FIXTURES:
        assert 0 < len(stored[name] or b"") < len(exit_bytes(name)) // 4


def mutations(raw: bytes) -> list[bytes]:
    """``raw`` with each byte changed three ways (low bit, high bit, all ones)."""
    out = []
    for i in range(len(raw)):
        for value in {raw[i] ^ 0x01, raw[i] ^ 0x80, 0xFF} - {raw[i]}:
            out.append(raw[:i] + bytes((value,)) + raw[i + 1:])
    return out


@pytest.mark.parametrize("name", [V17, "reply_v15.bin", "exit_v16_dual.bin"])
def test_every_mutated_message_the_writer_takes_comes_back_exactly(name: str) -> None:
    """A change of any byte: in the header, a length, a padding hole, the comm, a
    timespec, the version; the writer journals what still holds an exit record and
    gives back those bytes, never the bytes its columns suggest."""
    raws = mutations(exit_bytes(name))
    with Store(":memory:") as journal:
        taken = journaled(journal, raws)
        assert messages(journal) == taken
    # every byte of the STATS payload and the seq decodes still
    payload = len(exit_bytes(name)) - 36
    assert len(taken) >= 2 * payload


def test_messages_changed_in_several_places_come_back_exactly() -> None:
    """Several bytes at once (u64 extremes, random words, a header flag): what one
    change cannot reach, e.g. a timespec's seconds and nanoseconds both out of range."""
    rnd = random.Random(6)
    bases = [exit_bytes(name) for name in (V17, "reply_v15.bin", "exit_v16_dual.bin")]
    extremes = [2**64 - 1, 2**63, 2**63 - 1, 10**18, 999_999_999, 1_000_000_000]
    raws = []
    for _ in range(1500):
        raw = bytearray(rnd.choice(bases))
        for _ in range(rnd.randint(2, 4)):
            at = rnd.randrange(36, len(raw) - 8)
            kind = rnd.randrange(4)
            if kind == 0:
                raw[at:at + 8] = struct.pack("=Q", rnd.choice(extremes))
            elif kind == 1:
                raw[at:at + 8] = rnd.randbytes(8)
            elif kind == 2:
                raw[at] = rnd.randrange(256)
            else:
                raw[4:6] = struct.pack("=H", rnd.randrange(4))  # nlmsg flags
        raws.append(bytes(raw))
    with Store(":memory:") as journal:
        taken = journaled(journal, raws)
        assert messages(journal) == taken
    assert len(taken) > len(raws) * 0.9  # most still hold an exit record


def test_stored_difference_is_small_for_a_small_change_and_checked() -> None:
    raw = exit_bytes(V17)
    lay = layout(17)
    changed = bytearray(raw)
    changed[36 + lay.offsets[1] - 1] = 0x5A  # a padding byte
    rebuilt = raw  # what the columns of ``changed`` rebuild
    extra = diff(bytes(changed), rebuilt)
    assert extra is not None and len(extra) < 24
    assert restore(rebuilt, extra) == changed
    assert diff(raw, rebuilt) is None and restore(rebuilt, None) == raw
    with pytest.raises(ValueError, match=r"damaged|truncated"):
        restore(rebuilt, extra[:-3])
    with pytest.raises(ValueError, match=r"damaged|truncated"):
        restore(rebuilt, b"\xff" + extra)


def test_rebuild_describes_no_message_without_a_version() -> None:
    row = {f.name: None for f in FIELDS}
    assert rebuild(FAMILY, 1, 2, row) == b""
    assert rebuild(FAMILY, 1, 2, {**row, "version": 18, "ac_nice": 300}) == b""  # i8
    raw = exit_bytes(V17)
    assert restore(b"", diff(raw, b"")) == raw


# ---------------------------------------------------------------- schema 5 -> 6

def old_rows(path: Path) -> tuple[list[bytes], list[tuple[object, ...]]]:
    """The messages and every other column of a schema-5 journal, by id."""
    names = ["time_ns", "cpu", "pid", "tgid", "ended_process", "cgroup",
             *(f.name for f in FIELDS), "owner_sees", "pidns", "ns_ids", "sampled"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (5,)
        raws = [bytes(r[0]) for r in conn.execute("SELECT raw FROM exits ORDER BY id")]
        rest = conn.execute(f"SELECT {', '.join(names)} FROM exits ORDER BY id").fetchall()
    return raws, rest


def test_schema5_journal_migrates_every_message_exactly(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    shutil.copy(FIXTURES / "journal_v5.sqlite3", path)
    raws, rest = old_rows(path)
    assert len(raws) == 19
    with Store(path) as journal:
        assert messages(journal) == raws
        assert len(journal.queries.query()) == len(raws)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(exits)")}
        assert "raw" not in columns
        names = ["time_ns", "cpu", "pid", "tgid", "ended_process", "cgroup",
                 *(f.name for f in FIELDS), "owner_sees", "pidns", "ns_ids", "sampled"]
        assert conn.execute(f"SELECT {', '.join(names)} FROM exits ORDER BY id"
                            ).fetchall() == rest
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # the kernel's single exits and the /proc record rebuild whole; the golden duals,
    # the padded reply and the five mutations (padding, comm, timespec, flags,
    # version 18 with a tail) keep a difference
    assert sum(extra is None for extra in extras(path)) == 19 - 3 - 1 - 5


def test_migrated_journal_keeps_taking_exits(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    shutil.copy(FIXTURES / "journal_v5.sqlite3", path)
    raws, _ = old_rows(path)
    new = exit_bytes(V17)
    changed = bytearray(new)
    struct.pack_into("=I", changed, 8, 12345)  # another seq: still no difference stored
    with Store(path) as journal:
        assert journal.insert([item(new), item(bytes(changed))]) == 2
    with Store(path) as journal:  # reopened: no migration left to run
        assert messages(journal) == [*raws, new, bytes(changed)]
    assert extras(path)[-2:] == [None, None]
