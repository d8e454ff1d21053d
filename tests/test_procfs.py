"""The procfs source: fixture trees (tests/fixtures/proc) and, marked ``kernel``, live
agreement with the kernel's own records."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from pytaskstats import Client, NoSuchTask, RemoteProtocolError, TaskStats, Unsupported, procfs
from pytaskstats.fields import BY_NAME, FIELDS, Scope
from pytaskstats.procfs import MAPPING, STATES, ProcfsFormatError, ProcSource
from pytaskstats.records import CgroupStats

from .conftest import WORKER, as_nobody, known_tasks_in, wait_for_state

FIXTURE = Path(__file__).parent / "fixtures" / "proc"
DOCS = Path(__file__).parent.parent / "docs" / "procfs.md"
NOW_NS = 1000 * 10**9  # the fixtures' clock: 1000 s after boot (start times are in ticks)
TICK_US = 1_000_000 // os.sysconf("SC_CLK_TCK")
TICK_NS = TICK_US * 1000


def fixture_source(root: Path = FIXTURE) -> ProcSource:
    return ProcSource(str(root), clock_ticks=100, clock_ns=lambda: NOW_NS)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private copy of the fixture tree, to change."""
    root = tmp_path / "proc"
    shutil.copytree(FIXTURE, root, symlinks=True)
    return root


def record(scope: Scope = "pid", **values: Any) -> TaskStats:
    return TaskStats(**values, scope=scope, source="procfs", payload_len=0)


def blank(rec: TaskStats, names: Iterable[str]) -> TaskStats:
    """``rec`` with the fields ``names`` absent (None)."""
    values = rec._asdict()
    values.update(dict.fromkeys(names))
    return TaskStats(**values)


# ---------------------------------------------------------------- fixture records

EXPECTED_100 = record(
    version=17, ac_nice=0, cpu_count=1234, cpu_delay_total=150_000,
    blkio_delay_total=70_000_000, cpu_run_real_total=3_700_000_000,
    cpu_run_virtual_total=2_700_000_000, ac_comm="bash", ac_sched=0, ac_uid=1000, ac_gid=1000,
    ac_pid=100, ac_ppid=1, ac_btime=1_700_000_050, ac_etime=950_000_000, ac_utime=2_500_000,
    ac_stime=1_200_000, ac_minflt=1500, ac_majflt=3, hiwater_rss=5000, hiwater_vm=9000,
    read_char=122_880, write_char=7168, read_syscalls=2048, write_syscalls=0,
    read_bytes=409_600, write_bytes=4096, cancelled_write_bytes=0, nvcsw=42, nivcsw=7,
    ac_btime64=1_700_000_050, ac_tgid=100)

EXPECTED_301 = record(
    version=17, ac_nice=0, cpu_count=30, cpu_delay_total=2_000_000,
    blkio_delay_total=90_000_000, cpu_run_real_total=2_000_000_000,
    cpu_run_virtual_total=1_500_000_000, ac_comm="worker-1", ac_sched=0, ac_uid=1000,
    ac_gid=100, ac_pid=301, ac_ppid=100, ac_btime=1_700_000_080, ac_etime=919_500_000,
    ac_utime=1_500_000, ac_stime=500_000, ac_minflt=200, ac_majflt=0, hiwater_rss=20000,
    hiwater_vm=50000, read_char=8192, write_char=0, read_syscalls=0, write_syscalls=0,
    read_bytes=1_048_576, write_bytes=0, cancelled_write_bytes=0, nvcsw=20, nivcsw=3,
    ac_btime64=1_700_000_080, ac_tgid=300)

# the process stat counts an exited thread (500/200 ticks), the live threads 400/150
EXPECTED_TGID_300 = record(
    "tgid", version=17, ac_utime=5_000_000, ac_stime=2_000_000,
    cpu_run_real_total=7_000_000_000, ac_etime=920_000_000 + 919_500_000,
    blkio_delay_total=130_000_000, nvcsw=30, nivcsw=5, cpu_count=80,
    cpu_delay_total=6_000_000, cpu_run_virtual_total=4_500_000_000)


def test_pid_record_of_an_ordinary_task() -> None:
    assert fixture_source().pid(100) == EXPECTED_100


def test_a_thread_record_has_the_threads_own_counters() -> None:
    # ROOT/301 is the thread's hidden directory; ROOT/301/task/301 its own files
    assert fixture_source().pid(301) == EXPECTED_301


def test_tgid_record_fills_only_what_the_kernels_tgid_record_carries() -> None:
    group = fixture_source().tgid(300)
    assert group == EXPECTED_TGID_300
    assert all(BY_NAME[name].tgid for name in group.carried())


def test_comm_with_parenthesis_and_spaces_ends_at_the_last_paren() -> None:
    rec = fixture_source().pid(200)
    assert rec.ac_comm == "x) S 1 (y"
    assert (rec.ac_ppid, rec.ac_nice, rec.ac_sched, rec.ac_utime) == (100, -5, 1, 10_000)


@pytest.mark.parametrize(("tid", "comm"), [
    (700, "rcu_tasks_trace"),  # /proc shows kernel threads' full names
    (701, "kworker/0:1"),  # a workqueue worker's "-events" is not part of its comm
    (702, "kworker/R-rcu_g"),  # a rescuer's name has a "-" of its own
])
def test_kernel_threads_have_the_kernels_comm_and_no_memory_peaks(tid: int, comm: str) -> None:
    rec = fixture_source().pid(tid)
    assert rec.ac_comm == comm and rec.ac_ppid == 2
    assert rec.hiwater_rss is None and rec.hiwater_vm is None  # no mm: no Vm lines
    assert rec.nvcsw == 900 and rec.read_bytes == 0


def test_missing_io_leaves_io_fields_none_not_zero() -> None:
    rec = fixture_source().pid(400)
    assert all(getattr(rec, name) is None for name in procfs.IO_FIELDS)
    assert rec.ac_comm == "worker" and rec.nvcsw == 4 and rec.cpu_count == 12


def test_a_task_with_only_a_stat_file_gives_the_stat_fields() -> None:
    rec = fixture_source().pid(402)
    assert rec.ac_comm == "tracee" and rec.ac_minflt == 1 and rec.ac_utime == 0
    assert rec.ac_pid is None and rec.nvcsw is None and rec.cpu_count is None
    assert rec.read_char is None


def test_unreadable_io_leaves_io_fields_none(monkeypatch: pytest.MonkeyPatch) -> None:
    real = procfs.read_file

    def denied_io(path: str) -> bytes:
        if path.endswith("/io"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(procfs, "read_file", denied_io)
    rec = fixture_source().pid(100)
    assert rec == blank(EXPECTED_100, procfs.IO_FIELDS)


@pytest.mark.parametrize(("tid", "file", "message"), [
    (500, "500/task/500/stat", "6 fields, expected 22 or more"),
    (501, "501/task/501/status", "no line for Uid; keys found: ['Name', 'Umask', 'State', 'Tgid'"),
    (502, "502/task/502/io", "malformed io value"),
])
def test_malformed_files_raise_an_error_naming_the_file(tid: int, file: str,
                                                         message: str) -> None:
    with pytest.raises(ProcfsFormatError) as info:
        fixture_source().pid(tid)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.path == f"{FIXTURE}/{file}"
    assert str(info.value).startswith(f"{FIXTURE}/{file}: ") and message in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert again.path == info.value.path and str(again) == str(info.value)


@pytest.mark.parametrize("tid", [600, 999])  # a directory without stat; no directory
def test_a_vanished_task_is_no_such_task(tid: int) -> None:
    with pytest.raises(NoSuchTask) as info:
        fixture_source().pid(tid)
    assert info.value.pid == tid
    if tid == 999:
        with pytest.raises(NoSuchTask) as group:
            fixture_source().tgid(tid)
        assert group.value.tgid == tid and group.value.pid is None
        assert str(group.value).startswith("thread group 999: no such task")


def test_bulk_read_leaves_out_vanished_tasks() -> None:
    out = fixture_source().pids([100, 600, 301, 999, 200])
    assert list(out) == [100, 301, 200]
    assert out[100] == EXPECTED_100 and out[301] == EXPECTED_301


def _after_stat_of_100(monkeypatch: pytest.MonkeyPatch, change: Callable[[Path], None]) -> None:
    """Run ``change`` on task 100's stat right after it was read (a race)."""
    real = procfs.read_file

    def racing(path: str) -> bytes:
        data = real(path)
        if path.endswith("/100/task/100/stat"):
            change(Path(path))
        return data

    monkeypatch.setattr(procfs, "read_file", racing)


def test_task_vanishing_mid_read_is_no_such_task(tree: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / "100/task/100/status").unlink()
    _after_stat_of_100(monkeypatch, Path.unlink)
    with pytest.raises(NoSuchTask, match=r"exited while .*status was read"):
        fixture_source(tree).pid(100)
    assert fixture_source(tree).pids([100, 200]).keys() == {200}


def test_pid_reused_mid_read_is_no_such_task(tree: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / "100/task/100/status").unlink()

    def new_task(stat: Path) -> None:  # the same pid, another start time
        stat.write_bytes(stat.read_bytes().replace(b" 1 0 5000 1", b" 1 0 7777 1"))

    _after_stat_of_100(monkeypatch, new_task)
    with pytest.raises(NoSuchTask):
        fixture_source(tree).pid(100)


def test_a_file_missing_from_a_live_task_leaves_its_fields_none(tree: Path) -> None:
    (tree / "100/task/100/status").unlink()  # the task's stat stays: no race
    rec = fixture_source(tree).pid(100)
    status_fields = ("ac_pid", "ac_tgid", "ac_uid", "ac_gid", "nvcsw", "nivcsw",
                     "hiwater_rss", "hiwater_vm")
    assert rec == blank(EXPECTED_100, status_fields)


@pytest.mark.parametrize("sysctl", ["0\n", None])
def test_blkio_delay_is_none_without_delay_accounting(tree: Path, sysctl: str | None) -> None:
    path = tree / "sys/kernel/task_delayacct"
    if sysctl is None:
        path.unlink()
    else:
        path.write_text(sysctl)
    assert fixture_source(tree).pid(100).blkio_delay_total is None
    assert fixture_source(tree).tgid(300).blkio_delay_total is None


def test_all_tasks_lists_every_thread_of_every_process() -> None:
    # ROOT/301 is a symlink (a thread's hidden directory): not a process
    assert fixture_source().all_tasks() == [
        (100, 100), (200, 200), (300, 300), (300, 301), (400, 400), (402, 402), (500, 500),
        (501, 501), (502, 502), (600, 600), (700, 700), (701, 701), (702, 702)]


def test_boot_time_and_clock_ticks_are_read_when_not_given(tmp_path: Path) -> None:
    src = ProcSource(str(FIXTURE))
    assert src.boot_time_s == 1_700_000_000 and src.clock_ticks == os.sysconf("SC_CLK_TCK")
    assert ProcSource(str(FIXTURE), boot_time_s=5.0).boot_time_s == 5.0
    with pytest.raises(Unsupported, match="procfs"):
        _ = ProcSource(str(tmp_path)).boot_time_s
    (tmp_path / "stat").write_text("cpu 1 2 3\n")
    with pytest.raises(ProcfsFormatError, match=r"no line for btime; keys found: \['cpu"):
        _ = ProcSource(str(tmp_path)).boot_time_s


@pytest.mark.parametrize("bad", [0, -1, 2**32, True])
def test_ids_are_positive_32_bit_integers(bad: int) -> None:
    with pytest.raises(ValueError, match="positive 32-bit"):
        fixture_source().pid(bad)
    with pytest.raises(ValueError, match="positive 32-bit"):
        fixture_source().tgid(bad)


# ---------------------------------------------------------------- parsing

def _stat(comm: bytes, flags: int = 0x400000) -> bytes:
    fields = [b"7", b"(" + comm + b")", b"S", b"1", *(b"0" for _ in range(4)), str(flags).encode(),
              *(b"0" for _ in range(43))]
    return b" ".join(fields) + b"\n"


@pytest.mark.parametrize(("raw", "comm"), [
    (b") (", ") ("),
    (b"a) R (b", "a) R (b"),
    (b"", ""),
    (b"new\nline", "new\nline"),
    (b"\xff\xfeok", "\ufffd\ufffdok"),
    (b"sixteen-chars-xy", "sixteen-chars-x"),
])
def test_stat_comm_is_whatever_lies_before_the_last_paren(raw: bytes, comm: str) -> None:
    stat = procfs.parse_stat(_stat(raw), "stat")
    assert stat.comm == comm and stat.state == "S" and stat.ppid == 1


@pytest.mark.parametrize(("raw", "flags", "comm"), [
    (b"kworker/u8:2+flush-8:0", 0x4208060, "kworker/u8:2"),
    (b"kworker/1:1H-kblockd", 0x4208060, "kworker/1:1H"),
    (b"kworker/R-ext4-rsv-conversion", 0x4208060, "kworker/R-ext4-"),
    (b"my-prog+x", 0x400000, "my-prog+x"),  # not a workqueue worker: nothing to drop
])
def test_kernel_comm_drops_the_workqueue_suffix(raw: bytes, flags: int, comm: str) -> None:
    assert procfs.kernel_comm(raw, flags) == comm


@pytest.mark.parametrize("data", [b"", b"7 (x S 1\n", b"7 (x) S one" + b" 0" * 50])
def test_malformed_stat_lines(data: bytes) -> None:
    with pytest.raises(ProcfsFormatError, match=r"^here: malformed stat line"):
        procfs.parse_stat(data, "here")


def test_io_in_another_order_and_schedstat_errors() -> None:
    io = b"wchar: 2048\nrchar: 1025\nsyscr: 1\nsyscw: 2\nread_bytes: 0\nwrite_bytes: 0\n" \
         b"cancelled_write_bytes: 4095\n"
    assert procfs.parse_io(io, "io") == (1024, 2048, 0, 0, 0, 0, 3072)
    missing = "syscw, read_bytes, write_bytes, cancelled_write_bytes"
    with pytest.raises(ProcfsFormatError, match=rf"no line for {missing}; keys found: \['rchar'"):
        procfs.parse_io(b"rchar: 1\nwchar: 2\nsyscr: 3\n", "io")
    with pytest.raises(ProcfsFormatError, match="malformed schedstat"):
        procfs.parse_schedstat(b"1 2\n", "schedstat")


# ---------------------------------------------------------------- cgroups

THREADS = "100\n200\n300\n301\n400\n402\n600\n700\n701\n999\n"


@pytest.mark.parametrize("name", ["cgroup.threads", "tasks"])  # cgroup2, v1
def test_cgroup_counts_task_states(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text(THREADS)
    # S: 100 300; R: 200; T: 400, t: 402; D: 301; I: 700 701 (nowhere); gone: 600 999
    assert fixture_source().cgroup(str(tmp_path)) == CgroupStats(
        nr_sleeping=2, nr_running=1, nr_stopped=2, nr_uninterruptible=1, nr_io_wait=0,
        source="procfs")


def test_cgroup_errors(tmp_path: Path) -> None:
    with pytest.raises(Unsupported, match="not a cgroup directory"):
        fixture_source().cgroup(str(tmp_path))
    with pytest.raises(Unsupported, match="not a cgroup directory"):
        fixture_source().cgroup(str(tmp_path / "missing"))
    (tmp_path / "cgroup.threads").write_text("12 abc\n")
    with pytest.raises(ProcfsFormatError, match="not a list of thread ids"):
        fixture_source().cgroup(str(tmp_path))


# ---------------------------------------------------------------- the mapping and its docs

def test_mapping_rows_are_exactly_the_fields_filled() -> None:
    rows = [row.field for row in MAPPING]
    assert rows == [f.name for f in FIELDS if f.name in rows]  # one row each, table order
    assert set(fixture_source().pid(100).carried()) == set(rows)
    tgid_rows = {row.field for row in MAPPING if row.tgid}
    assert set(fixture_source().tgid(300).carried()) == tgid_rows
    assert all(BY_NAME[name].tgid for name in tgid_rows)


def test_states_table_is_consistent() -> None:
    letters = [s.letter for s in STATES]
    assert len(set(letters)) == len(letters)
    assert {s.counted_as for s in STATES} <= {*CgroupStats._fields, None}


def test_docs_procfs_md_is_generated_from_the_mapping() -> None:
    # regenerate with the command in the file's header
    assert DOCS.read_text(encoding="utf-8") == procfs.mapping_markdown()


# ---------------------------------------------------------------- live, against the kernel

EXACT = ("ac_pid", "ac_tgid", "ac_ppid", "ac_uid", "ac_gid", "ac_comm", "ac_nice", "ac_sched",
         "ac_minflt", "ac_majflt", "nvcsw", "nivcsw", "hiwater_vm", *procfs.IO_FIELDS,
         "cpu_count", "cpu_delay_total", "cpu_run_virtual_total")


def _agree(first: TaskStats, mine: TaskStats, last: TaskStats, names: tuple[str, ...],
           threads: int = 1) -> None:
    """``mine`` (procfs), read between two kernel records of a stopped task, agrees."""
    for name in names:
        assert getattr(mine, name) == getattr(first, name) == getattr(last, name), name
    virtual, real = first.cpu_run_virtual_total, first.cpu_run_real_total
    assert virtual is not None and real is not None and mine.cpu_run_real_total is not None
    # /proc: the precise run time split by the tick samples, each rounded down to a tick
    assert virtual - 2 * TICK_NS < mine.cpu_run_real_total <= virtual
    assert mine.ac_utime is not None and mine.ac_stime is not None
    assert first.ac_utime is not None and first.ac_stime is not None
    assert (mine.ac_utime + mine.ac_stime) * 1000 == mine.cpu_run_real_total
    # the kernel reports its raw tick samples: they differ from the run time by its
    # sampling error; the utime:stime split in /proc can shift further (never decreasing
    # from one read to the next, it keeps the share an early read saw)
    bound_us = 2 * TICK_US + abs(real - virtual) // 1000
    ours, kernels = mine.ac_utime + mine.ac_stime, first.ac_utime + first.ac_stime
    assert abs(ours - kernels) <= bound_us, (ours, kernels)
    for name in ("ac_utime", "ac_stime"):
        ours, kernels = getattr(mine, name), getattr(first, name)
        assert abs(ours - kernels) <= bound_us + TICK_US, (name, ours, kernels)
    # start times are in ticks: procfs' etime is up to one tick (per thread) too large
    assert first.ac_etime is not None and last.ac_etime is not None
    assert first.ac_etime - 1000 * threads <= mine.ac_etime <= last.ac_etime + TICK_US * threads  # type: ignore[operator]


@pytest.mark.kernel
def test_live_pid_record_agrees_with_the_kernel(client: Client, worker: int) -> None:
    first = client.pid(worker)
    mine = ProcSource().pid(worker)
    last = client.pid(worker)
    assert mine.scope == "pid" and mine.source == "procfs" and first.source == "kernel"
    assert set(mine.carried()) >= {row.field for row in MAPPING} - {"blkio_delay_total"}
    _agree(first, mine, last, EXACT)
    assert mine.read_bytes is not None and mine.read_bytes >= 256 * 1024  # O_DIRECT read
    assert abs(mine.ac_btime - first.ac_btime) <= 2  # type: ignore[operator]
    assert abs(mine.ac_btime64 - first.ac_btime64) <= 2  # type: ignore[operator]
    # VmHWM sums the per-CPU RSS counters, the kernel's record reads their approximation
    cpus = os.cpu_count() or 1
    slop_kb = 3 * cpus * max(32, 2 * cpus) * os.sysconf("SC_PAGE_SIZE") // 1024
    assert abs(mine.hiwater_rss - first.hiwater_rss) <= slop_kb  # type: ignore[operator]


@pytest.mark.kernel
@pytest.mark.parametrize("worker", [3], indirect=True)
def test_live_thread_and_tgid_records_agree_with_the_kernel(client: Client,
                                                            worker: int) -> None:
    src = ProcSource()
    tids = sorted(int(t) for t in os.listdir(f"/proc/{worker}/task"))
    assert len(tids) == 4
    for tid in tids:
        _agree(client.pid(tid), src.pid(tid), client.pid(tid), EXACT)
    first, mine, last = client.tgid(worker), src.tgid(worker), client.tgid(worker)
    assert mine.scope == "tgid"
    assert set(mine.carried()) | {"blkio_delay_total"} == {r.field for r in MAPPING if r.tgid}
    _agree(first, mine, last, ("nvcsw", "nivcsw", "cpu_count", "cpu_delay_total",
                               "cpu_run_virtual_total"), threads=4)


@pytest.mark.kernel
def test_live_blkio_delay_with_delay_accounting_on(client: Client, delayacct_on: None,
                                                   tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "f"), "0"])
    try:  # forked after delay accounting was switched on
        wait_for_state(proc.pid, "T")
        kernel, mine = client.pid(proc.pid).blkio_delay_total, ProcSource().pid(proc.pid)
        assert kernel is not None and mine.blkio_delay_total is not None
        assert kernel - TICK_NS < mine.blkio_delay_total <= kernel  # ticks, rounded down
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.kernel
def test_live_scan_of_every_thread() -> None:
    src = ProcSource()
    pairs = src.all_tasks()
    gone = subprocess.Popen(["true"])
    gone.wait()
    out = src.pids([*(tid for _, tid in pairs), gone.pid])
    assert gone.pid not in out and os.getpid() in out
    assert len(out) >= len(pairs) - 10  # a few may exit while we scan
    tgid_of = dict((tid, tgid) for tgid, tid in pairs)
    assert all(rec.ac_pid == tid and rec.ac_tgid == tgid_of[tid] and rec.source == "procfs"
               for tid, rec in out.items())
    assert (src.tgid(os.getpid()).ac_utime or 0) > 0


@pytest.mark.kernel
def test_live_unprivileged_read_of_a_root_process(nobody_env: dict[str, str],
                                                  worker: int) -> None:
    code = textwrap.dedent(f"""
        from pytaskstats.procfs import ProcSource
        src = ProcSource()
        rec = src.pid({worker})
        print(rec.read_bytes, rec.write_char, rec.ac_uid, rec.ac_utime is not None,
              rec.nvcsw is not None, rec.cpu_count is not None)
        recs = src.pids(tid for _, tid in src.all_tasks())
        print(len(recs), sum(r.read_bytes is None for r in recs.values()))
    """)
    done = as_nobody(nobody_env, "-c", code)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "None None 0 True True True"  # io denied (EACCES): None, not 0
    scanned, without_io = map(int, second.split())
    assert scanned > 10 and without_io > 0


@pytest.mark.kernel
def test_live_cgroup2_counts(client: Client) -> None:
    """3 tasks asleep on a pipe, 1 stopped, 2 in nanosleep: this source counts the
    nanosleepers as sleeping; the kernel's v1 cgroupstats counts them nowhere."""
    unified = Path("/sys/fs/cgroup/unified")
    if not (unified / "cgroup.threads").exists():
        pytest.skip("no cgroup2 hierarchy at /sys/fs/cgroup/unified")
    v2 = unified / f"pytaskstats-procfs-{os.getpid()}"
    v1 = Path(f"/sys/fs/cgroup/cpu/pytaskstats-procfs-{os.getpid()}")
    groups = [v2, v1] if v1.parent.is_dir() else [v2]
    with known_tasks_in(groups):
        expected = CgroupStats(nr_sleeping=5, nr_running=0, nr_stopped=1,
                               nr_uninterruptible=0, nr_io_wait=0, source="procfs")
        for group in groups:
            assert ProcSource().cgroup(str(group)) == expected, group
        if v1 in groups:
            kernel = client.cgroup(str(v1))
            assert (kernel.nr_sleeping, kernel.nr_running, kernel.nr_stopped) == (3, 0, 1)
