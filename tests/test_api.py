"""The psutil-style Python API: process_iter, typed time accessors, exit status
decoding, the short repr, and docs/api.md kept in step with the docstrings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import pytaskstats
from pytaskstats import Client, ExitRecord, TaskStats
from pytaskstats.apidoc import markdown
from pytaskstats.backends import ProcBackend
from pytaskstats.fields import BY_NAME, FIELDS, SECONDS_PER_UNIT, TIME_FIELDS, time_views_source
from pytaskstats.processes import ATTRS, iter_processes, named
from pytaskstats.records import Durations, Seconds

from .conftest import as_nobody, require_kernel, unique_command, wait_until
from .daemon_util import RunningDaemon

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "pytaskstats"


def _sample() -> TaskStats:
    """A record with every time field set to a distinct value (its position + 1, scaled)."""
    values: dict[str, Any] = {f.name: (f.position + 1) * 1_234_567 for f in TIME_FIELDS}
    return TaskStats(version=17, **values)


# ------------------------------------------------------------- typed accessors

def test_time_views_have_one_property_per_time_field_of_the_table() -> None:
    table = {f.name for f in FIELDS if f.unit in SECONDS_PER_UNIT}
    for view in (Seconds, Durations):
        props = {n for n in dir(view) if isinstance(getattr(view, n), property)}
        assert props == table, view
    assert (SRC / "timeviews.py").read_text() == time_views_source(), (
        "timeviews.py is stale: regenerate it (see fields.time_views_source)")


def test_seconds_and_durations_convert_each_field_by_its_unit() -> None:
    rec = _sample()
    for f in TIME_FIELDS:
        raw = getattr(rec, f.name)
        secs = getattr(rec.seconds, f.name)
        assert secs == pytest.approx(raw * SECONDS_PER_UNIT[f.unit]), f.name
        assert rec.seconds(f.name) == secs  # the call form for names in variables
        delta = getattr(rec.durations, f.name)
        assert isinstance(delta, timedelta)
        assert abs(delta.total_seconds() - secs) <= 0.5e-6, f.name  # us resolution
    empty = TaskStats(version=17)
    assert all(getattr(empty.seconds, f.name) is None for f in TIME_FIELDS)
    assert all(getattr(empty.durations, f.name) is None for f in TIME_FIELDS)


TYPED_USE = """
from datetime import datetime, timedelta
from pytaskstats import TaskStats
rec = TaskStats(version=17)
a: float | None = rec.seconds.ac_utime
b: timedelta | None = rec.durations.blkio_delay_total
c: datetime | None = rec.start_time
d: int | None = rec.signal
e: float = rec.seconds.ac_utime  # error: may be None
f = rec.seconds.ac_utim  # error: no such field
g: float | None = rec.durations.cpu_delay_total  # error: a timedelta
"""


def test_mypy_checks_the_typed_accessors(tmp_path: Path) -> None:
    snippet = tmp_path / "use.py"
    snippet.write_text(TYPED_USE)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         str(snippet)], capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "MYPYPATH": str(ROOT / "src")}, cwd=tmp_path)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    lines = TYPED_USE.splitlines()
    flagged = sorted(int(e.split(":")[1]) for e in errors)
    assert flagged == [i for i, text in enumerate(lines, 1) if "# error" in text], done.stdout


@pytest.mark.parametrize("name", ["ac_comm", "hiwater_rss", "no_such_field"])
def test_seconds_of_a_non_time_name_says_which_names_are_times(name: str) -> None:
    with pytest.raises(ValueError, match=name) as err:
        _sample().seconds(name)
    assert "ac_utime" in str(err.value) and "blkio_delay_total" in str(err.value)


def test_cpu_time_and_start_time() -> None:
    rec = TaskStats(version=17, ac_utime=2_500_000, ac_stime=750_000, ac_btime=1000,
                    ac_btime64=2**33)
    assert rec.cpu_time == pytest.approx(3.25)
    start = rec.start_time
    assert start is not None and start.tzinfo is timezone.utc
    assert start.timestamp() == 2**33  # the 64-bit field wins over the 32-bit one
    older = rec._replace(ac_btime64=None)
    assert older.start_time is not None and older.start_time.timestamp() == 1000
    assert TaskStats(version=17, scope="tgid").start_time is None
    assert TaskStats(version=17, ac_utime=1).cpu_time is None


def _wait_status(argv: list[str], kill: int | None = None) -> int:
    pid = os.posix_spawnp(argv[0], argv, dict(os.environ))  # its raw wait status is ours
    if kill is not None:
        os.kill(pid, kill)
    _, status = os.waitpid(pid, 0)
    return status


@pytest.mark.parametrize(("argv", "kill"), [
    (["sh", "-c", "exit 0"], None), (["sh", "-c", "exit 3"], None),
    (["sleep", "60"], signal.SIGTERM), (["sleep", "60"], signal.SIGKILL),
    (["sh", "-c", 'cd "$0" && ulimit -c unlimited && kill -QUIT $$'], None),  # core in tmp
])
def test_exit_status_signal_and_core_decode_real_wait_statuses(
        argv: list[str], kill: int | None, tmp_path: Path) -> None:
    status = _wait_status([*argv, str(tmp_path)], kill)
    rec = TaskStats(version=17, ac_exitcode=status)
    if os.WIFEXITED(status):
        assert rec.exit_status == os.WEXITSTATUS(status) and rec.signal is None
        assert rec.core_dumped is False
    else:
        assert rec.exit_status is None and rec.signal == os.WTERMSIG(status)
        assert rec.core_dumped is os.WCOREDUMP(status)
    absent = TaskStats(version=17)
    assert (absent.exit_status, absent.signal, absent.core_dumped) == (None, None, None)


def test_repr_is_short_and_to_dict_is_whole() -> None:
    rec = TaskStats(version=17, ac_comm="worker", ac_utime=0, blkio_delay_total=5)
    text = repr(rec)
    assert "ac_comm='worker'" in text and "blkio_delay_total=5" in text
    assert "ac_utime" not in text and "read_bytes" not in text  # zero, absent
    assert len(text) < 120
    assert set(rec.to_dict()) >= set(BY_NAME)


# ------------------------------------------------------------------ processes

def test_unknown_attr_is_a_value_error_naming_it_and_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="'nope'") as err:
        pytaskstats.process_iter(["name", "nope"])  # raised before iterating
    assert all(name in str(err.value) for name in ("pid", "name", "cpu_time", "ac_utime"))
    with pytest.raises(ValueError, match="list of names"):
        pytaskstats.process_iter("name")  # a str is an Iterable[str]: caught at run time


def test_named_fills_the_identity_a_tgid_record_lacks() -> None:
    group = TaskStats(version=17, scope="tgid", ac_utime=9)
    leader = TaskStats(version=17, ac_comm="lead", ac_pid=5, ac_tgid=5, ac_uid=7,
                       ac_utime=1, read_bytes=4096)
    out = named(group, leader)
    assert (out.ac_comm, out.ac_pid, out.ac_uid, out.scope) == ("lead", 5, 7, "tgid")
    assert out.ac_utime == 9 and out.read_bytes is None  # the group's own, not the leader's


def _spawn(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    exe = unique_command(tmp_path, "api", "/bin/sleep")
    before = time.time()
    proc = subprocess.Popen([str(exe), "60"])
    return proc, exe.name, before


@pytest.mark.parametrize("backend", ["procfs", "kernel"])
def test_process_iter_finds_a_spawned_child_by_name(tmp_path: Path, backend: str) -> None:
    if backend == "kernel":
        require_kernel()
    proc, name, before = _spawn(tmp_path)
    after = time.time()
    try:
        wait_until(lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip() == name,
                   "the child's exec")
        with Client(backend=backend) as client:
            found = [p for p in client.process_iter(["pid", "name", "start_time", "ac_ppid"])
                     if p.pid == proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert len(found) == 1
    info = found[0].info
    assert set(info) == {"pid", "name", "start_time", "ac_ppid"}
    assert info["name"] == name == found[0].name and info["ac_ppid"] == os.getpid()
    assert found[0].record.scope == "tgid"
    # the kernel's ac_btime is now's whole seconds minus the elapsed whole seconds:
    # within a second of the start; /proc's adds the truncation of its boot time
    slack = 1.0 if backend == "kernel" else 2.0
    assert before - slack < info["start_time"].timestamp() < after + slack


def test_processes_that_are_gone_are_skipped() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its pid names no process now (unless reused, then it is alive)
    got = list(iter_processes(ProcBackend(), [proc.pid, os.getpid()], ATTRS))
    pids = [p.pid for p in got]
    assert os.getpid() in pids
    assert proc.pid not in pids or Path(f"/proc/{proc.pid}").exists()


def test_module_process_iter_yields_this_process_named() -> None:
    mine = [p for p in pytaskstats.process_iter(["name"]) if p.pid == os.getpid()]
    assert [p.info["name"] for p in mine] == [Path("/proc/self/comm").read_text().strip()]


@pytest.mark.kernel
def test_self_is_named_from_its_leader(client: Client) -> None:
    me = client.self()
    assert me.scope == "tgid" and me.ac_pid == os.getpid()
    assert me.ac_comm == Path("/proc/self/comm").read_text().strip()
    assert client.tgid(os.getpid()).ac_comm is None  # the kernel's record stays as sent


@pytest.mark.kernel
def test_exit_record_of_a_child_killed_by_a_signal(client: Client, tmp_path: Path) -> None:
    proc, name, before = _spawn(tmp_path)
    after = time.time()
    events: list[ExitRecord] = []
    with client.listen() as listener:
        wait_until(lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip() == name,
                   "the child's exec")
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        def seen() -> bool:
            events.extend(e for e in listener.poll(0.05)
                          if isinstance(e, ExitRecord) and e.pid == proc.pid)
            return bool(events)
        wait_until(seen, "the child's exit record")
    task = events[0].task
    assert task.ac_comm == name
    assert task.signal == signal.SIGKILL and task.exit_status is None
    assert task.core_dumped is False
    assert task.start_time is not None  # within a second (see above)
    assert before - 1 < task.start_time.timestamp() < after + 1


NOBODY_ITER = """
import json, os, sys
from pytaskstats import Client
with Client("daemon", socket_path=sys.argv[1]) as client:
    got = [(p.pid, p.name, p.record.ac_uid) for p in client.process_iter(["pid"])]
print(json.dumps({"me": os.getpid(), "comm": open("/proc/self/comm").read().strip(),
                  "got": got}))
"""


@pytest.mark.kernel
def test_through_taskstatsd_a_user_iterates_its_own_processes(
        daemon: RunningDaemon, nobody_env: dict[str, str]) -> None:
    run = as_nobody(nobody_env, "-c", NOBODY_ITER, daemon.socket)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert [out["me"], out["comm"], 65534] in out["got"]
    assert all(uid == 65534 for _, _, uid in out["got"])  # others' refused: skipped


# ------------------------------------------------------------------------ docs

def test_api_page_is_in_step_with_the_docstrings() -> None:
    assert (ROOT / "docs" / "api.md").read_text() == markdown(), (
        "docs/api.md is stale: python -m pytaskstats.apidoc > docs/api.md")
