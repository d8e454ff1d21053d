"""``taskstats getdelays``: byte-compatible output, option parsing, and the live kernel.

Expected text is derived from the printf formats of tools/accounting/getdelays.c
(kernel-taskstats.md section 7) and from the fixtures' value rule, not from the
code under test.
"""

from __future__ import annotations

import argparse
import calendar
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytaskstats import delayacct
from pytaskstats import taskstats as ts
from pytaskstats.cli import getdelays
from pytaskstats.cli.getdelays_format import (
    TGID_IO_NOTE,
    Sections,
    cgroup_line,
    ctxsw_block,
    delay_table,
    format_exit,
    format_stats,
    format_timestamp,
    io_line,
    message_size,
)
from pytaskstats.fields import Timespec, layout
from pytaskstats.records import AGROUP, ExitRecord, TaskStats
from tests.conftest import fixture_bytes, wait_until
from tests.fixtures.expected import expected_value, fnv1a32

FAMILY = 27  # the fixtures' family id
KINDS = (("CPU", "cpu"), ("IO", "blkio"), ("SWAP", "swapin"), ("RECLAIM", "freepages"),
         ("THRASHING", "thrashing"), ("COMPACT", "compact"), ("WPCOPY", "wpcopy"),
         ("IRQ", "irq"))
FIRST_VERSION = {"cpu": 1, "blkio": 1, "swapin": 1, "freepages": 7, "thrashing": 9,
                 "compact": 11, "wpcopy": 13, "irq": 14}

# The C formats, verbatim from getdelays.c (per struct version).
CPU_HEAD = {15: "%-10s%15s%15s%15s%15s%15s\n",
            16: "%-10s%15s%15s%15s%15s%15s%15s%15s\n",
            17: "%-10s%15s%15s%15s%15s%15s%15s%15s%25s\n"}
CPU_DATA = {15: "          %15llu%15llu%15llu%15llu%15.3fms\n",
            16: "          %15llu%15llu%15llu%15llu%15.3fms%13.6fms%13.6fms\n",
            17: "          %15llu%15llu%15llu%15llu%15.3fms%13.6fms%13.6fms%23s\n"}
ROW_HEAD = {15: "%-10s%15s%15s%15s\n",
            16: "%-10s%15s%15s%15s%15s%15s\n",
            17: "%-10s%15s%15s%15s%15s%15s%25s\n"}
ROW_DATA = {15: "          %15llu%15llu%15.3fms\n",
            16: "          %15llu%15llu%15.3fms%13.6fms%13.6fms\n",
            17: "          %15llu%15llu%15.3fms%13.6fms%13.6fms%23s\n"}
CPU_HEADS = ("count", "real total", "virtual total", "delay total", "delay average")
ROW_HEADS = ("count", "delay total", "delay average")
MAXMIN = ("delay max", "delay min")


def printf(fmt: str, *args: object) -> str:
    """C printf for the conversions getdelays uses (%llu is %d for Python ints)."""
    return fmt.replace("llu", "d") % args


def reply_stats(version: int) -> TaskStats:
    """The record of the golden query reply of struct version ``version``."""
    event = ts.decode(fixture_bytes(f"reply_v{version:02d}.bin"), FAMILY)[0]
    assert isinstance(event, ts.StatsReply)
    return event.stats


def exit_record(name: str) -> ExitRecord:
    """The golden exit event ``name``."""
    event = ts.decode(fixture_bytes(name), FAMILY)[0]
    assert isinstance(event, ExitRecord)
    return event


def u64(name: str) -> int:
    """A u64 field's value in the fixtures."""
    return expected_value(name, "u64")


def expected_row(kind: str, label: str, version: int, *, ts_text: str | None = None) -> str:
    """One header+data pair as getdelays.c prints it for a fixture record."""
    branch = min(max(version, 15), 17)
    count, total = u64(f"{kind}_count"), u64(f"{kind}_delay_total")
    avg = float(total) / 1000000.0 / float(count or 1)
    heads: tuple[str, ...] = CPU_HEADS if kind == "cpu" else ROW_HEADS
    ints = [count, total]
    if kind == "cpu":
        ints[1:1] = [u64("cpu_run_real_total"), u64("cpu_run_virtual_total")]
    tail: list[object] = []
    if branch >= 16:
        heads += MAXMIN
        tail = [u64(f"{kind}_delay_max") / 1e6, u64(f"{kind}_delay_min") / 1e6]
    if branch >= 17:
        heads += ("delay max timestamp",)
        sec = fnv1a32(f"{kind}_delay_max_ts")
        tail.append(ts_text or time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    head_fmt, data_fmt = (CPU_HEAD, CPU_DATA) if kind == "cpu" else (ROW_HEAD, ROW_DATA)
    return printf(head_fmt[branch], label, *heads) + printf(data_fmt[branch], *ints, avg, *tail)


def expected_table(version: int) -> str:
    """print_delayacct() of a fixture record, with rows only where the version has them."""
    rows = [expected_row(kind, label, version) for label, kind in KINDS
            if FIRST_VERSION[kind] <= version]
    return "\n\n" + "".join(rows)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the test (the v17 timestamp column is local time)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# ---------------------------------------------------------------- pure formatting

@pytest.mark.parametrize("version", [8, 9, 10, 13, 14, 15, 16])
def test_delay_table_matches_the_c_formats(version: int) -> None:
    assert delay_table(reply_stats(version)) == expected_table(version)


def test_v8_has_no_thrashing_compact_wpcopy_irq_rows() -> None:
    labels = [line.split()[0] for line in delay_table(reply_stats(8)).splitlines()[2::2]]
    assert labels == ["CPU", "IO", "SWAP", "RECLAIM"]


def test_v14_uses_the_pre16_format_with_all_eight_rows() -> None:
    lines = delay_table(reply_stats(14)).splitlines()
    assert [line.split()[0] for line in lines[2::2]] == [label for label, _ in KINDS]
    assert lines[2].endswith("delay total  delay average")
    assert "delay max" not in delay_table(reply_stats(14))


def test_v17_timestamp_column(utc: None) -> None:
    assert delay_table(reply_stats(17)) == expected_table(17)


def test_v17_unset_timestamps_print_na(utc: None) -> None:
    group = exit_record("exit_v17_dual.bin").group
    assert group is not None and group.cpu_delay_max_ts is None
    lines = delay_table(group).splitlines()
    assert lines[2].endswith("      delay max timestamp")  # %25s
    assert all(line.endswith(" " * 20 + "N/A") for line in lines[3::2])  # %23s


def test_format_timestamp(utc: None) -> None:
    sec = calendar.timegm((2026, 1, 15, 15, 6, 58, 0, 0, 0))
    assert format_timestamp(Timespec(sec, 123)) == "2026-01-15T15:06:58"
    assert format_timestamp(Timespec(0, 0)) == "N/A"
    assert format_timestamp(None) == "N/A"
    assert format_timestamp(Timespec(2**62, 0)) == "N/A"  # does not fit the C library's tm


def test_v16_sample_from_the_reference_byte_for_byte() -> None:
    t = reply_stats(16)._replace(cpu_count=550, cpu_run_real_total=175934971,
                                 cpu_run_virtual_total=174908035, cpu_delay_total=23133732,
                                 cpu_delay_max=3984725, cpu_delay_min=541, blkio_count=0,
                                 blkio_delay_total=0, blkio_delay_max=0, blkio_delay_min=0)
    lines = delay_table(t).splitlines()
    assert lines[:6] == [
        "", "",
        "CPU                 count     real total  virtual total    delay total  delay average"
        "      delay max      delay min",
        "                      550      175934971      174908035       23133732          0.042ms"
        "     3.984725ms     0.000541ms",
        "IO                  count    delay total  delay average      delay max      delay min",
        "                        0              0          0.000ms     0.000000ms     0.000000ms",
    ]


def test_v17_sample_from_the_reference_byte_for_byte(utc: None) -> None:
    when = Timespec(calendar.timegm((2026, 1, 15, 15, 6, 58, 0, 0, 0)), 1)
    t = reply_stats(17)._replace(
        cpu_count=46, cpu_run_real_total=188000000, cpu_run_virtual_total=192348334,
        cpu_delay_total=4098012, cpu_delay_max=429260, cpu_delay_min=51205,
        cpu_delay_max_ts=when, blkio_count=0, blkio_delay_total=0, blkio_delay_max=0,
        blkio_delay_min=0, blkio_delay_max_ts=None)
    assert delay_table(t).splitlines()[2:6] == [
        "CPU                 count     real total  virtual total    delay total  delay average"
        "      delay max      delay min      delay max timestamp",
        "                       46      188000000      192348334        4098012          0.089ms"
        "     0.429260ms     0.051205ms    2026-01-15T15:06:58",
        "IO                  count    delay total  delay average      delay max      delay min"
        "      delay max timestamp",
        "                        0              0          0.000ms     0.000000ms     0.000000ms"
        "                    N/A",
    ]


def test_column_widths_and_the_17_character_average_cell() -> None:
    small = reply_stats(16)._replace(cpu_count=2, cpu_run_real_total=5, cpu_run_virtual_total=6,
                                     cpu_delay_total=3_000_000, cpu_delay_max=7, cpu_delay_min=8)
    head, data = delay_table(small).splitlines()[2:4]
    assert head[:10] == "CPU       "
    cells = [head[10 + 15 * i: 25 + 15 * i] for i in range(7)]
    assert [c.strip() for c in cells] == [*CPU_HEADS, *MAXMIN]
    assert all(len(c) == 15 and c == c.strip().rjust(15) for c in cells)
    avg_end = 10 + 4 * 15 + 17
    assert data[10 + 4 * 15: avg_end] == "1.500ms".rjust(17)  # %15.3fms: 17 characters
    assert len(head) == 10 + 7 * 15 and len(data) == avg_end + 2 * 15  # the drift: +2
    assert data[avg_end:].endswith("ms") and len(data[avg_end:]) == 30  # %13.6fms twice


def test_io_line_ctxsw_block_and_cgroup_line() -> None:
    t = reply_stats(16)
    assert io_line(t) == printf("%s: read=%llu, write=%llu, cancelled_write=%llu\n",
                                "fixture-v16", u64("read_bytes"), u64("write_bytes"),
                                u64("cancelled_write_bytes"))
    assert ctxsw_block(t) == printf("\n\nTask   %15s%15s\n       %15llu%15llu\n", "voluntary",
                                    "nonvoluntary", u64("nvcsw"), u64("nivcsw"))
    event = ts.decode(fixture_bytes("cgroupstats.bin"), FAMILY)[0]
    assert isinstance(event, ts.CgroupStatsReply)
    assert cgroup_line(event.stats) == (
        "sleeping 3, blocked 5, running 1, stopped 2, uninterruptible 4\n")


def test_absent_fields_never_print_as_zero() -> None:
    group = exit_record("exit_v16_dual.bin").group
    assert group is not None
    assert io_line(group) == TGID_IO_NOTE + "\n"
    old = reply_stats(8)._replace(nvcsw=None, nivcsw=12, read_bytes=None)
    assert ctxsw_block(old).splitlines()[-1] == " " * 7 + "n/a".rjust(15) + "12".rjust(15)
    assert "read=" not in io_line(old)
    assert "RECLAIM" not in delay_table(old._replace(freepages_count=None))


def test_dual_exit_prints_pid_then_tgid_record() -> None:
    record = exit_record("exit_v16_dual.bin")
    text = format_exit(record, Sections(delays=True, io=True))
    pid_part, tgid_part = text.split("TGID\t4242\n")
    assert pid_part.startswith("PID\t4243\n\n\nCPU ")
    assert pid_part.endswith("fixture-v16: read=%d, write=%d, cancelled_write=%d\n" % (  # noqa: UP031
        u64("read_bytes"), u64("write_bytes"), u64("cancelled_write_bytes")))
    assert tgid_part == expected_table(16) + TGID_IO_NOTE + "\n"


def test_version0_tgid_exit_record_takes_the_pid_records_layout() -> None:
    text = format_exit(exit_record("exit_v8_tgid_version0.bin"), Sections(delays=True))
    assert text == "PID\t4243\n" + expected_table(8) + "TGID\t4242\n" + expected_table(8)
    assert "THRASHING" not in text


def test_sections_and_id_lines() -> None:
    t = reply_stats(16)
    assert format_stats(t, 4242, Sections()) == ""
    assert format_stats(t, 4242, Sections(io=True)) == io_line(t)  # no PID line without -d
    assert format_stats(t, 7, Sections(True, True, True)) == (
        "PID\t7\n" + delay_table(t) + io_line(t) + ctxsw_block(t))


def test_message_size_matches_the_datagrams() -> None:
    assert message_size([reply_stats(16)]) == len(fixture_bytes("reply_v16.bin")) == 596
    record = exit_record("exit_v17_dual.bin")
    assert record.group is not None
    assert message_size([record.task, record.group]) == len(fixture_bytes("exit_v17_dual.bin"))


# ---------------------------------------------------------------- option parsing

def test_echo_lines_in_option_order() -> None:
    opts = getdelays.parse_args(["-v", "-d", "-q", "-w", "f.bin", "-r", "4096", "-i",
                                 "-m", "0-1", "-l", "-p", "12"])
    assert opts.echo == ["debug on", "print delayacct stats ON",
                         "printing task/process context switch rates", "write to file f.bin",
                         "receive buf size 4096", "printing IO accounting",
                         "cpumask 0-1 maskset 1", "listen forever"]
    assert (opts.scope, opts.ident, opts.rcvbuf, opts.mask) == ("pid", 12, 4096, "0-1")


def test_grouped_options_and_attached_arguments() -> None:
    opts = getdelays.parse_args(["-dit42"])
    assert (opts.delays, opts.io, opts.scope, opts.ident) == (True, True, "tgid", 42)


@pytest.mark.parametrize("argv, command", [
    (["-d", "-c", "sh", "-c", "exit 3"], ["sh", "-c", "exit 3"]),
    (["-csleep", "-p", "1"], ["sleep", "-p", "1"]),
    (["-p", "5", "-c", "true"], ["true"]),
])
def test_c_takes_the_rest_of_the_command_line(argv: list[str], command: list[str]) -> None:
    opts = getdelays.parse_args(argv)
    assert opts.command == command and opts.ident == 0


@pytest.mark.parametrize("argv, message", [
    ([], "nothing to do"),
    (["-x"], "invalid option -- 'x'"),
    (["-p"], "option requires an argument -- 'p'"),
    (["-p", "abc"], "Invalid pid"),
    (["-p", "0"], "Invalid pid"),
    (["-p", "12abc"], "Invalid pid"),
    (["-t", "-3"], "Invalid tgid"),
    (["-r", "-1", "-p", "1"], "Invalid rcv buf size"),
    (["-m", "garbage"], "Invalid cpumask"),
    (["-t", "1", "-C", "/sys/fs/cgroup/cpu"], "Select either -t or -C, not both"),
    (["-C", "/sys/fs/cgroup/cpu", "-p", "1"], "Select either -t or -C, not both"),
    (["-d", "1234"], "unexpected argument '1234'"),
])
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
                      ) -> None:
    assert getdelays.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"getdelays: {message}")
    assert "usage: taskstats getdelays" in err


def test_help_goes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert getdelays.main(["-h"]) == 0
    out, err = capsys.readouterr()
    assert out == getdelays.USAGE and err == ""
    assert all(f"-{o}" in out for o in "dilqvwrmtpCc")


def test_argparse_hands_every_argument_through() -> None:
    parser = argparse.ArgumentParser(prog="taskstats")
    parser.add_argument("--backend")
    getdelays.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--backend", "kernel", "getdelays", "-d", "-c", "ls", "-l"])
    assert args.args == ["-d", "-c", "ls", "-l"]
    assert "getdelays" in parser.format_help()


# ---------------------------------------------------------------- live kernel

def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """getdelays.main in-process: status, stdout, stderr."""
    status = getdelays.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def row_after(out: str, label: str) -> list[str]:
    """The data cells under the header row starting with ``label``."""
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if line.split()[:1] == [label])
    return lines[index + 1].split()


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    """The real command line: python -m pytaskstats getdelays ARGV."""
    return subprocess.Popen([sys.executable, "-m", "pytaskstats", "getdelays", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.kernel
def test_live_delays_of_this_task(capsys: pytest.CaptureFixture[str]) -> None:
    pid = os.getpid()
    status, out, err = run_main(["-d", "-p", str(pid)], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["print delayacct stats ON", f"PID\t{pid}"]
    cpu = row_after(out, "CPU")
    assert int(cpu[0]) > 0 and cpu[4].endswith("ms")
    assert [line.split()[0] for line in lines[4::2]] == [label for label, _ in KINDS]


@pytest.mark.kernel
def test_live_tgid(capsys: pytest.CaptureFixture[str]) -> None:
    pid = os.getpid()
    status, out, _ = run_main(["-d", "-i", "-t", str(pid)], capsys)
    assert status == 0
    assert out.splitlines()[2] == f"TGID\t{pid}"
    assert int(row_after(out, "CPU")[0]) > 0
    assert out.endswith(TGID_IO_NOTE + "\n")


@pytest.mark.kernel
def test_live_io_and_context_switches(capsys: pytest.CaptureFixture[str]) -> None:
    comm = Path("/proc/self/comm").read_text().strip()
    status, out, _ = run_main(["-i", "-q", "-p", str(os.getpid())], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[:2] == ["printing IO accounting", "printing task/process context switch rates"]
    assert re.fullmatch(rf"{re.escape(comm)}: read=\d+, write=\d+, cancelled_write=\d+",
                        lines[2])
    assert lines[3:5] == ["", ""]
    assert lines[5] == "Task         voluntary   nonvoluntary"
    assert re.fullmatch(r" {7}[ \d]{15}[ \d]{15}", lines[6])


@pytest.mark.kernel
def test_live_w_writes_exactly_sizeof_struct(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "records.bin"
    status, out, _ = run_main(["-w", str(path), "-p", str(os.getpid())], capsys)
    assert status == 0 and out == f"write to file {path}\n"
    data = path.read_bytes()
    stats = ts.decode_stats(data, 0, len(data))
    assert len(data) == layout(stats.version).size
    assert stats.ac_pid == os.getpid()


@pytest.mark.kernel
def test_live_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    status, _, err = run_main(["-p", str(gone.pid)], capsys)
    assert status == 1 and "no such task" in err
    status, _, err = run_main(["-c", "/nonexistent/command"], capsys)
    assert status == 1 and "cannot run '/nonexistent/command'" in err
    status, _, err = run_main(["-w", "/dev/full", "-p", str(os.getpid())], capsys)
    assert status == 1 and "write error on '/dev/full'" in err


@pytest.mark.kernel
def test_live_c_true(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_main(["-d", "-c", "true"], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "print delayacct stats ON"
    assert re.fullmatch(r"PID\t\d+", lines[1])
    assert int(row_after(out, "CPU")[0]) >= 1


@pytest.mark.kernel
def test_live_c_reports_a_failing_command_and_exits_0(tmp_path: Path) -> None:
    """The command's status is not passed through (as in the original): its record is."""
    path = tmp_path / "c.bin"
    proc = spawn("-d", "-w", str(path), "-c", "sh", "-c", "exit 3")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    pid = int(re.findall(rb"^PID\t(\d+)$", out, re.M)[0])
    data = path.read_bytes()
    stats = ts.decode_stats(data, 0, len(data))
    assert len(data) == layout(stats.version).size
    assert (stats.ac_pid, stats.ac_comm, stats.ac_exitcode) == (pid, "sh", 3 << 8)


@pytest.mark.kernel
def test_live_cgroup_v1_and_v2(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(["-C", "/sys/fs/cgroup/cpu"], capsys)
    assert status == 0
    assert re.fullmatch(r"sleeping \d+, blocked \d+, running \d+, stopped \d+, "
                        r"uninterruptible \d+\n", out)
    status, out, err = run_main(["-C", "/sys/fs/cgroup/unified"], capsys)
    assert status == 1 and out == ""
    assert "EINVAL" in err and "cgroup v1" in err


@pytest.mark.kernel
def test_live_delayacct_off_note_goes_to_stderr_once(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    monkeypatch.setattr(delayacct, "status", lambda: False)
    status, out, err = run_main(["-d", "-p", str(os.getpid())], capsys)
    assert status == 0
    assert err == f"getdelays: note: {delayacct.OFF_NOTE}\n"
    assert "note" not in out


@pytest.mark.kernel
@pytest.mark.usefixtures("delayacct_on")
def test_live_io_row_with_delay_accounting_on(capsys: pytest.CaptureFixture[str]) -> None:
    child = subprocess.Popen(["sleep", "5"])  # forked while on: all delays are measured
    try:
        status, out, err = run_main(["-d", "-p", str(child.pid)], capsys)
    finally:
        child.kill()
        child.wait()
    assert status == 0 and err == ""
    io = row_after(out, "IO")
    assert len(io) >= 3 and io[2].endswith("ms") and int(io[0]) >= 0 and int(io[1]) >= 0


def _wait_for(path: Path, needle: str, what: str, poke: bool = False) -> str:
    """Wait (bounded) until ``path`` contains ``needle``; ``poke`` spawns exits meanwhile."""
    def printed() -> str | None:
        text = path.read_text()
        if needle in text:
            return text
        if poke:
            subprocess.run(["true"], check=True)
        return None
    return wait_until(printed, f"getdelays to print {what}", 15)


THREADED = ("import os, threading, time\n"
            "os.sched_setaffinity(0, {0, 1})\n"
            "ts = [threading.Thread(target=time.sleep, args=(0.05,)) for _ in range(2)]\n"
            "[t.start() for t in ts]\n[t.join() for t in ts]\n")


@pytest.mark.kernel
def test_live_listen_prints_and_writes_both_records(tmp_path: Path) -> None:
    log, out_path = tmp_path / "exits.bin", tmp_path / "out.txt"
    with out_path.open("w") as out:
        gd = subprocess.Popen([sys.executable, "-m", "pytaskstats", "getdelays", "-d", "-m",
                               "0-1", "-l", "-w", str(log)], stdout=out,
                              stderr=subprocess.PIPE)
    try:
        _wait_for(out_path, "PID\t", "any exit record", poke=True)
        child = subprocess.Popen([sys.executable, "-c", THREADED])
        assert child.wait() == 0
        _wait_for(out_path, f"TGID\t{child.pid}\n", "the thread group record")
        gd.send_signal(signal.SIGINT)
        _, err = gd.communicate(timeout=15)
    finally:
        gd.kill()
    assert gd.returncode == 0, err
    text = out_path.read_text()
    assert text.startswith("print delayacct stats ON\ncpumask 0-1 maskset 1\nlisten forever\n")
    assert text.endswith("Sent deregister mask, retval 0\n")
    data = log.read_bytes()
    size = layout(ts.decode_stats(data, 0, len(data)).version).size
    assert len(data) % size == 0
    records = [ts.decode_stats(data, off, off + size) for off in range(0, len(data), size)]
    mine = [i for i, r in enumerate(records) if r.ac_tgid == child.pid]
    assert len(mine) == 3  # the main thread and two threads
    last = next(i for i in mine if (records[i].ac_flag or 0) & AGROUP)
    group = records[last + 1]  # the TGID record follows in the same message
    assert (group.ac_pid, group.ac_comm) == (0, "") and (group.cpu_count or 0) > 0


@pytest.mark.kernel
def test_live_mask_without_l_prints_one_exit_and_deregisters() -> None:
    gd = spawn("-d", "-m", "0-1")
    deadline = time.monotonic() + 15
    try:
        while gd.poll() is None and time.monotonic() < deadline:
            subprocess.run(["true"], check=True)
        out, err = gd.communicate(timeout=15)
    finally:
        gd.kill()
    assert gd.returncode == 0, err
    text = out.decode()
    assert len(re.findall(r"^PID\t\d+$", text, re.M)) == 1
    assert text.endswith("Sent deregister mask, retval 0\n")
