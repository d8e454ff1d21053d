"""The `taskstats` command line against the real kernel, plus its pure formatting."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytaskstats import ExitRecord, delayacct, taskstats
from pytaskstats.cli import listen, run
from pytaskstats.summary import process_tree, summarize, totals
from pytaskstats.textfmt import format_record, human_duration, unmeasured, wait_status

from .conftest import fixture_bytes, unique_command

CLI = [sys.executable, "-m", "pytaskstats"]


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          check=check)


# ------------------------------------------------------------------ pure formatting

def test_wait_status_and_durations() -> None:
    assert (wait_status(3 << 8), wait_status(9), wait_status(None)) == ("3", "SIGKILL", "-")
    assert [human_duration(x) for x in (0, 2e-5, 0.25, 3.5, 150)] == [
        "0", "20.0us", "250.00ms", "3.500s", "2m30.0s"]


def test_tgid_record_says_which_fields_it_lacks() -> None:
    exit_rec = taskstats.decode(fixture_bytes("exit_v16_dual.bin"), 27)[0]
    assert isinstance(exit_rec, ExitRecord) and exit_rec.group is not None
    text = format_record(exit_rec.group, "tgid 4242", True)
    assert "absent (not carried by thread group records)" in text
    assert "ac_comm" in text.split("absent")[1] and "\n  ac_comm" not in text
    off = format_record(exit_rec.task, "pid 4243", False)
    assert "blkio_delay_total          n/a (delay accounting off)" in off
    assert "cpu_delay_total            n/a" not in off
    assert unmeasured("swapin_count", False) and not unmeasured("cpu_count", False)


def test_procacct_line_matches_the_kernel_tool() -> None:
    rec = taskstats.decode(fixture_bytes("exit_v16_dual.bin"), 27)[0]
    assert isinstance(rec, ExitRecord)
    line = listen.procacct_line(rec.task)
    t = rec.task
    assert t.ac_utime is not None and t.ac_stime is not None
    assert line == (f"P pid={t.ac_pid} tgid={t.ac_tgid} uid={t.ac_uid} wall={t.ac_etime} "
                    f"gwall={t.ac_tgetime} cpu={t.ac_utime + t.ac_stime} "
                    f"vmpeak={t.hiwater_vm} rsspeak={t.hiwater_rss} dev=259:300 "
                    f"inode={t.ac_exe_inode} comm=fixture-v16")
    old = taskstats.decode(fixture_bytes("reply_v08.bin"), 27)[0]
    assert isinstance(old, taskstats.StatsReply)
    assert listen.procacct_line(old.stats).startswith("? pid=")
    assert "tgid=- " in listen.procacct_line(old.stats)  # absent, not 0


def test_process_tree_follows_parents_and_orphans() -> None:
    base = taskstats.decode(fixture_bytes("exit_v16_dual.bin"), 27)[0]
    assert isinstance(base, ExitRecord)

    def rec(pid: int, ppid: int, comm: str = "x") -> ExitRecord:
        task = base.task._replace(ac_pid=pid, ac_tgid=pid, ac_ppid=ppid, ac_comm=comm)
        return ExitRecord(task=task, pid=pid, tgid=pid)

    records = [rec(12, 11), rec(11, 10), rec(13, 99), rec(14, 1), rec(10, 5), rec(15, 13)]
    # 10 is the command (started by us, 5); 13 is an orphan re-parented to us (99)
    tree = process_tree(records, root=10, reaper=99)
    assert sorted(r.pid for r in tree) == [10, 11, 12, 13, 15]
    procs = summarize(tree)
    assert {p.tgid for p in procs} == {10, 11, 12, 13, 15}
    total = totals(procs)
    assert total["processes"] == 5 and total["threads"] == 5
    assert total["ac_utime"] == 5 * (base.task.ac_utime or 0)
    assert total["hiwater_rss"] == base.task.hiwater_rss


def _timed(pid: int, ppid: int, comm: str, begin: int, life_s: float) -> ExitRecord:
    base = taskstats.decode(fixture_bytes("exit_v16_dual.bin"), 27)[0]
    assert isinstance(base, ExitRecord)
    task = base.task._replace(ac_pid=pid, ac_tgid=pid, ac_ppid=ppid, ac_comm=comm,
                              ac_btime=begin, ac_btime64=begin, ac_etime=int(life_s * 1e6))
    return ExitRecord(task=task, pid=pid, tgid=pid)


def test_process_tree_is_not_fooled_by_a_reused_pid() -> None:
    # our command 10 (started by us, 5) ran child 11, which exited; pid 11 was then
    # reused by another user's process (parent 7), which forked 12 and both exited
    records = [_timed(11, 10, "ours", 100, 0.5), _timed(12, 11, "theirs", 106, 0.5),
               _timed(11, 7, "theirs", 105, 2), _timed(10, 5, "ours", 100, 9)]
    tree = process_tree(records, root=10, reaper=5)
    assert [r.task.ac_comm for r in tree] == ["ours", "ours"]
    # the same within one second: the order of arrival decides (a parent outlives
    # the child whose exit record names it)
    same = [dataclasses.replace(r, task=r.task._replace(ac_btime=100, ac_btime64=100))
            for r in records]
    assert [r.task.ac_comm for r in process_tree(same, root=10, reaper=5)] == ["ours"] * 2


def test_process_tree_across_cpus_and_reused_pids_within_the_run() -> None:
    # per-CPU sockets: a parent's record (on another CPU) may be read before its
    # child's; and our own run reused pid 11 for a second child of 10
    records = [_timed(11, 10, "first", 100, 1), _timed(20, 11, "late-read", 100, 0.5),
               _timed(11, 10, "second", 140, 1), _timed(21, 11, "kid2", 140, 0.2),
               _timed(10, 5, "root", 100, 60)]
    tree = process_tree(records, root=10, reaper=5)
    assert len(tree) == 5
    procs = summarize(tree)
    assert sorted(p.comm for p in procs) == ["first", "kid2", "late-read", "root", "second"]
    assert [p.tgid for p in procs].count(11) == 2  # two processes, not one of 2 threads
    assert all(p.threads == 1 for p in procs)


class _LateDaemon:
    """A listener as taskstatsd is when exits come fast: it forwards the command's exit
    record well after the command exited (it holds exits back to batch them)."""

    source = "daemon"

    def __init__(self) -> None:
        self._read, self._write = os.pipe()  # never readable: nothing comes early
        self.fds = [self._read]
        self.pid = 0
        self.sent = False

    def drain(self) -> list[ExitRecord]:
        return []

    def poll(self, timeout: float) -> list[ExitRecord]:
        if self.sent:
            return []
        time.sleep(0.3)  # the lateness being modelled, not a synchronisation
        self.sent = True
        return [_timed(self.pid, os.getpid(), "late", 100, 0.01)]

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


def test_the_commands_exit_is_dated_by_its_waitpid_not_a_late_arrival(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through taskstatsd, `run --critical-path -- sh -c 'ls; false'` dated sh's exit
    25 ms late (the daemon's coalescing window): sh seemed to start after its child ls
    ended, and ls fell off the critical path; TOTAL's wall said 222 ms for a 207 ms run."""
    late = _LateDaemon()
    popen = subprocess.Popen

    def spawn(command: list[str]) -> subprocess.Popen[bytes]:
        proc = popen(command)
        late.pid = proc.pid
        return proc
    monkeypatch.setattr(run, "_subreaper", lambda: None)  # pytest stays no subreaper
    monkeypatch.setattr(subprocess, "Popen", spawn)  # run.py calls subprocess.Popen
    try:
        result = run.execute(["/bin/true"], late, wait_all=False)  # type: ignore[arg-type]
    finally:
        late.close()
    assert [r.pid for r in result.records] == [late.pid]
    assert result.exit_s == [result.wall_s]  # not the 0.3 s more it took to arrive


# ------------------------------------------------------------------ live kernel

@pytest.mark.kernel
@pytest.mark.usefixtures("delayacct_steady")  # asserts follow its state
def test_run_accounts_a_pipelines_short_lived_children() -> None:
    script = ("for i in 1 2 3 4 5; do /bin/echo $i | /usr/bin/wc -c > /dev/null; done; "
              "( /bin/sleep 0.05 & ); exit 7")
    done = _cli("run", "--json", "--wait-all", "--", "sh", "-c", script, check=False)
    assert done.returncode == 7, done.stderr
    doc = json.loads(done.stdout)
    comms = [p["comm"] for p in doc["processes"]]
    assert comms.count("echo") == 5 and comms.count("wc") == 5
    assert "sleep" in comms  # an orphan, re-parented to us (subreaper) and waited for
    assert doc["exit_status"] == 7 and doc["lost"] == 0
    sh = next(p for p in doc["processes"] if p["comm"] == "sh" and p["ac_exitcode"] == 7 << 8)
    assert doc["totals"]["processes"] == len(doc["processes"]) >= 12
    assert doc["totals"]["ac_utime"] >= sh["ac_utime"]
    assert all(p["hiwater_rss"] > 0 for p in doc["processes"])
    if delayacct.status() is False:
        assert doc["totals"]["blkio_delay_total"] is None  # not measured, not 0


@pytest.mark.kernel
def test_run_text_report_and_signal_status() -> None:
    done = _cli("run", "--", "sh", "-c", "kill -9 $$", check=False)
    assert done.returncode == 128 + 9
    assert "exit status 137" in done.stderr and "SIGKILL" in done.stderr
    assert "TOTAL" in done.stderr and "PEAKRSS" in done.stderr
    missing = _cli("run", "--", "/nonexistent/command", check=False)
    assert missing.returncode == 127 and "command not found" in missing.stderr


@pytest.mark.kernel
def test_run_waits_for_orphans_with_wait_all() -> None:
    done = _cli("run", "--json", "--wait-all", "--", "sh", "-c", "(sleep 0.3; true) &",
                check=False)
    doc = json.loads(done.stdout)
    assert doc["still_running"] == []
    assert "sleep" in [p["comm"] for p in doc["processes"]]
    quick = json.loads(_cli("run", "--json", "--", "sh", "-c", "(sleep 0.3) &").stdout)
    assert [p["comm"] for p in quick["still_running"]] in (["sleep"], ["sh"])


@pytest.mark.kernel
@pytest.mark.usefixtures("delayacct_steady")  # asserts follow its state
def test_get_json_and_text() -> None:
    doc = json.loads(_cli("get", str(os.getpid()), "--json").stdout)
    assert doc["record"]["ac_pid"] == os.getpid() and doc["record"]["scope"] == "pid"
    assert doc["delayacct"]["enabled"] == delayacct.status()
    tg = json.loads(_cli("get", "--tgid", str(os.getpid()), "--json").stdout)
    assert tg["record"]["ac_comm"] is None and tg["record"]["ac_utime"] is not None
    text = _cli("get", str(os.getpid())).stdout
    assert f"pid {os.getpid()}" in text and "ac_utime" in text and " us (" in text
    gone = _cli("get", "999999999", check=False)
    assert gone.returncode != 0 and "Traceback" not in gone.stderr


@pytest.mark.kernel
def test_listen_streams_exits_as_json_lines(tmp_path: Path) -> None:
    proc = subprocess.Popen([*CLI, "listen", "--json", "--per-cpu", "-n", "1000000"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    start = json.loads(proc.stdout.readline())
    assert start["event"] == "start"
    marker = unique_command(tmp_path, "marker")  # its exit, not another run's
    subprocess.run([str(marker)], check=True)
    seen = None
    deadline = time.monotonic() + 60
    again = time.monotonic() + 2
    while seen is None and time.monotonic() < deadline:
        line = proc.stdout.readline()  # every exit on the machine, ours among them
        event = json.loads(line)
        if event["event"] == "exit" and event["task"]["ac_comm"] == marker.name:
            seen = event
        elif event["event"] != "exit" or time.monotonic() > again:
            subprocess.run([str(marker)], check=True)  # ours may be in a loss: again
            again = time.monotonic() + 2
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert seen is not None and seen["ended_process"] is True and seen["cpu"] in (0, 1)


@pytest.mark.kernel
def test_delayacct_command_switches_and_reports(delayacct_on: None) -> None:
    assert "delay accounting: on" in _cli("delayacct").stdout
    _cli("delayacct", "off")
    assert delayacct.status() is False
    assert "off" in _cli("delayacct", "status").stdout
    _cli("delayacct", "on")
    assert delayacct.status() is True


@pytest.mark.kernel
def test_cgroup_command_text_and_json() -> None:
    text = _cli("cgroup", "/sys/fs/cgroup/cpu").stdout
    assert text.startswith("/sys/fs/cgroup/cpu: sleeping ")
    v2 = json.loads(_cli("cgroup", "/sys/fs/cgroup/unified", "--json").stdout)
    assert v2["source"] == "procfs" and v2["nr_sleeping"] > 0  # counted from /proc
    bad = _cli("cgroup", "/sys/fs/cgroup/cpu/no-such-group", check=False)
    assert bad.returncode == 1 and "cannot open cgroup directory" in bad.stderr


def test_run_needs_a_command() -> None:
    done = _cli("run", check=False)
    assert done.returncode == 2 and "give a command" in done.stderr
    assert run.exit_status(-15) == 143
