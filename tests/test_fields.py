"""The field table and the per-version layouts derived from it (kernel-taskstats.md §2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytaskstats import fields
from pytaskstats.fields import DELAY_KINDS, FIELDS, Timespec, layout
from pytaskstats.records import TaskStats

DOCS = Path(__file__).parent.parent / "docs" / "fields.md"
RECORD_ATTRS = ("scope", "source", "payload_len", "extra")
UNITS = {"", "count", "ns", "us", "s", "KB", "bytes", "MB*us", "flags", "dev_t", "timespec"}
CTYPES = {"u8", "i8", "u16", "u32", "u64", "comm", "timespec"}

# §2.2: sizeof(struct taskstats) by version (x86_64)
SIZES = {3: 272, 6: 312, 7: 328, 8: 328, 9: 344, 10: 352, 11: 368, 12: 400, 13: 416,
         14: 432, 15: 560, 16: 560, 17: 688}

# §2.1 (v16 and the v17 extension) and §2.3 (the interleaved v15)
OFFSETS = {
    16: {"version": 0, "ac_exitcode": 4, "ac_flag": 8, "ac_nice": 9, "cpu_count": 16,
         "ac_comm": 80, "ac_sched": 112, "ac_uid": 120, "ac_btime": 136, "ac_etime": 144,
         "read_bytes": 248, "nvcsw": 272, "freepages_count": 312, "ac_btime64": 344,
         "ac_tgid": 368, "ac_tgetime": 376, "ac_exe_dev": 384, "irq_delay_total": 424,
         "cpu_delay_max": 432, "irq_delay_min": 552},
    15: {"cpu_count": 16, "cpu_delay_max": 32, "blkio_count": 48, "swapin_count": 80,
         "cpu_run_real_total": 112, "ac_comm": 128, "ac_sched": 160, "ac_uid": 168,
         "ac_pid": 176, "ac_btime": 184, "ac_etime": 192, "coremem": 232, "read_char": 264,
         "nvcsw": 320, "freepages_count": 360, "thrashing_count": 392, "ac_btime64": 424,
         "compact_count": 432, "ac_tgid": 464, "ac_tgetime": 472, "ac_exe_dev": 480,
         "wpcopy_count": 496, "irq_count": 528, "irq_delay_min": 552},
    17: {"irq_delay_min": 552, "cpu_delay_max_ts": 560, "blkio_delay_max_ts": 576,
         "freepages_delay_max_ts": 608, "irq_delay_max_ts": 672},
    8: {"freepages_delay_total": 320},
    12: {"ac_tgid": 368, "ac_exe_inode": 392},
}


@pytest.mark.parametrize(("version", "size"), sorted(SIZES.items()))
def test_layout_size(version: int, size: int) -> None:
    assert layout(version).size == size


@pytest.mark.parametrize("version", sorted(OFFSETS))
def test_layout_offsets(version: int) -> None:
    lay = layout(version)
    offsets = {f.name: off for f, off in zip(lay.fields, lay.offsets, strict=True)}
    assert {name: offsets.get(name) for name in OFFSETS[version]} == OFFSETS[version]


def test_layouts_past_the_newest_use_the_newest() -> None:
    assert layout(18).fields == layout(17).fields
    assert layout(18).size == 688


def test_v16_order_is_the_table_order_and_v15_holds_the_same_fields() -> None:
    assert [f.name for f in layout(16).fields] == [f.name for f in FIELDS if f.version <= 16]
    assert sorted(f.name for f in layout(15).fields) == sorted(
        f.name for f in layout(16).fields)
    assert layout(15).fields != layout(16).fields


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_field_metadata(field: fields.Field) -> None:
    assert field.unit in UNITS
    assert field.ctype in CTYPES
    assert 1 <= field.version <= 17
    assert field.help.strip()


def test_field_names_unique_and_indices_match_record() -> None:
    names = [f.name for f in FIELDS]
    assert len(names) == len(set(names))
    assert all(TaskStats._fields[f.position] == f.name for f in FIELDS)


def test_delay_kinds() -> None:
    assert DELAY_KINDS == ("cpu", "blkio", "swapin", "freepages", "thrashing", "compact",
                           "wpcopy", "irq")
    names = {f.name for f in FIELDS}
    for kind in DELAY_KINDS:
        assert {f"{kind}_count", f"{kind}_delay_total", f"{kind}_delay_max",
                f"{kind}_delay_min", f"{kind}_delay_max_ts"} <= names


def test_record_type_covers_the_table_plus_record_attributes() -> None:
    assert TaskStats._fields == tuple(f.name for f in FIELDS) + RECORD_ATTRS


@pytest.mark.parametrize("extra", [b"", b"\x01\x02"])
def test_to_dict_keys(extra: bytes) -> None:
    rec = TaskStats(version=17, ac_exe_dev=0, cpu_delay_max_ts=Timespec(5, 6), extra=extra)
    documented = {"scope", "source", "payload_len", "exe_major", "exe_minor"}
    if extra:
        documented.add("extra")
    out = rec.to_dict()
    assert set(out) == {f.name for f in FIELDS} | documented
    assert out["cpu_delay_max_ts"] == {"tv_sec": 5, "tv_nsec": 6}


def test_docs_fields_md_is_generated_from_the_table() -> None:
    # generated from fields.markdown() (see the command in its header)
    assert DOCS.is_file(), "docs/fields.md is missing"
    assert DOCS.read_text(encoding="utf-8") == fields.markdown()
