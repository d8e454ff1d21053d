"""Live tests against the real kernel's TASKSTATS family (root; CI runs them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytaskstats import AccessDenied, Client, ExitRecord, Lost, NoSuchTask, TaskStats, delayacct
from pytaskstats.errors import NetlinkError
from pytaskstats.kernel import Connection
from pytaskstats.listener import Listener

from .conftest import as_nobody, known_tasks_in, unique_command, wait_for_state, wait_until

pytestmark = pytest.mark.kernel
TICK_US = 1_000_000 // os.sysconf("SC_CLK_TCK")

def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _proc_io(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return {k: int(v) for k, _, v in (line.partition(":") for line in lines)}


def test_pid_record_agrees_with_proc(client: Client, worker: int) -> None:
    rec = client.pid(worker)
    stat = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()
    status, io = _proc_status(worker), _proc_io(worker)
    assert rec.scope == "pid" and rec.version >= 8
    assert rec.ac_pid == worker and rec.ac_comm == Path(f"/proc/{worker}/comm").read_text()[:-1]
    assert rec.ac_ppid == int(stat[1]) == os.getpid()
    assert rec.ac_uid == int(status["Uid"].split()[0])
    # taskstats gives the raw tick samples (ac_utime + ac_stime, and in ns
    # cpu_run_real_total) and the runtime (cpu_run_virtual_total: /proc's schedstat);
    # /proc's stat scales utime:stime to that runtime (cputime_adjust), each part cut
    # to whole ticks.  The worker is stopped: every figure holds still.
    ticks = (int(stat[11]) + int(stat[12])) * TICK_US
    total = rec.ac_utime + rec.ac_stime  # type: ignore[operator]
    assert abs(total - (rec.cpu_run_real_total or 0) // 1000) <= 1
    runtime_ns = int(Path(f"/proc/{worker}/schedstat").read_text().split()[0])
    assert rec.cpu_run_virtual_total == runtime_ns
    assert 0 <= runtime_ns // 1000 - ticks <= 2 * TICK_US + 1
    assert 0 <= rec.ac_utime <= total and 0 <= rec.ac_stime <= total  # type: ignore[operator]
    assert rec.nvcsw == int(status["voluntary_ctxt_switches"])
    assert rec.nivcsw == int(status["nonvoluntary_ctxt_switches"])
    assert rec.write_char == io["wchar"] & ~1023 and rec.write_char >= 256 * 1024
    assert rec.read_char == io["rchar"] & ~1023
    assert rec.write_bytes == io["write_bytes"] & ~1023 and rec.write_bytes >= 256 * 1024
    assert rec.hiwater_rss is not None and rec.hiwater_rss > 1000


@pytest.mark.parametrize("worker", [3], indirect=True)
def test_tgid_sums_its_threads(client: Client, worker: int) -> None:
    tids = [int(t) for t in os.listdir(f"/proc/{worker}/task")]
    assert len(tids) == 4
    threads = client.pids(tids)
    group = client.tgid(worker)
    assert group.scope == "tgid"
    for name in ("ac_utime", "ac_stime", "nvcsw", "nivcsw", "cpu_run_real_total",
                 "cpu_count", "cpu_delay_total"):
        assert getattr(group, name) == sum(getattr(t, name) for t in threads.values()), name
    # fields a TGID record does not carry are absent, not zero
    assert group.ac_comm is None and group.ac_pid is None and group.read_bytes is None
    assert group.hiwater_rss is None and group.ac_uid is None


def test_bulk_query_leaves_out_vanished_tasks(client: Client) -> None:
    tids = [int(t) for p in os.listdir("/proc") if p.isdigit()
            for t in _listdir(f"/proc/{p}/task")]
    gone = subprocess.Popen(["true"])
    gone.wait()
    out = client.pids([*tids, gone.pid])
    assert gone.pid not in out
    assert os.getpid() in out and out[os.getpid()].ac_pid == os.getpid()
    # any task may exit meanwhile (other work on the machine): those still here now
    # were alive throughout, and each is in the answer
    survivors = [t for t in tids if os.path.exists(f"/proc/{t}/task/{t}")]
    assert set(survivors) <= set(out)
    assert all(rec.ac_pid == tid for tid, rec in out.items())


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def test_errors_name_the_task_and_the_remedy(client: Client) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(NoSuchTask) as info:
        client.pid(proc.pid)
    assert info.value.pid == proc.pid and "no such task" in str(info.value)
    with pytest.raises(NetlinkError, match="cgroup v1"):  # the kernel refuses cgroup2
        fd = os.open("/sys/fs/cgroup/unified", os.O_RDONLY)
        try:
            client.cgroup(fd)
        finally:
            os.close(fd)
    with pytest.raises(ValueError):
        client.pid(0)


def _spawn_threads_and_exit() -> subprocess.Popen[bytes]:
    code = "import threading; [t.start() or t.join() for t in [threading.Thread(target=sum, " \
           "args=(range(1000),)) for _ in range(2)]]; import sys; sys.exit(5)"
    return subprocess.Popen([sys.executable, "-c", code])


def test_listen_sees_both_records_of_a_multithreaded_exit(client: Client) -> None:
    with client.listen(per_cpu=True) as listener:
        proc = _spawn_threads_and_exit()
        proc.wait()
        pid = proc.pid
        events = listener.drain() + listener.poll(0.2)
    mine = [e for e in events if isinstance(e, ExitRecord) and e.tgid == pid]
    threads = [e for e in mine if e.pid != pid]
    leader = [e for e in mine if e.pid == pid]
    assert len(threads) == 2 and len(leader) == 1
    # the thread that exits last carries the group's record: usually the main thread,
    # but Python's join() returns before a joined thread has left the kernel
    enders = [e for e in mine if e.group is not None]
    assert len(enders) == 1 and enders[0].ended_process
    group = enders[0].group
    assert group is not None and group.scope == "tgid" and group.ac_etime is not None
    assert leader[0].task.ac_exitcode == 5 << 8
    assert all(e.cpu in (0, 1) for e in mine)
    assert all(not e.ended_process for e in mine if e is not enders[0])


def test_replies_and_exit_events_on_one_socket_are_told_apart(client: Client) -> None:
    conn = client._source
    assert isinstance(conn, Connection)
    conn.register("0-1")
    try:
        proc = subprocess.Popen(["true"])
        proc.wait()

        def queried_past_it() -> bool:  # the exit event comes before the reply
            rec = conn.query("pid", os.getpid())
            assert rec.ac_pid == os.getpid()
            return any(e.pid == proc.pid for e in conn.pending_exits)
        wait_until(queried_past_it, "the exit event ahead of a reply", 10)
    finally:
        conn.register("0-1", deregister=True)


def test_cgroupstats_counts_sleeping_and_stopped_tasks(client: Client) -> None:
    """3 tasks asleep on a pipe, 1 stopped; 2 in nanosleep, which the kernel counts in
    no state (they sleep TASK_INTERRUPTIBLE|TASK_FREEZABLE, outside its switch)."""
    group = Path(f"/sys/fs/cgroup/cpu/pytaskstats-test-{os.getpid()}")
    with known_tasks_in([group]):
        stats = client.cgroup(str(group))
    assert (stats.nr_sleeping, stats.nr_stopped, stats.nr_running) == (3, 1, 0)
    assert stats.nr_uninterruptible == stats.nr_io_wait == 0


def test_unprivileged_query_says_what_to_do(nobody_env: dict[str, str]) -> None:
    env = {**nobody_env, "TASKSTATS_SOCKET": "/nonexistent/taskstatsd.sock"}
    done = as_nobody(env, "-m", "pytaskstats", "--backend", "kernel", "get", str(os.getpid()))
    assert done.returncode == 1
    assert "CAP_NET_ADMIN" in done.stderr and "taskstatsd" in done.stderr
    assert "Traceback" not in done.stderr
    # auto falls back to /proc, says so, and shows absent delays as null, not 0
    auto = as_nobody(env, "-m", "pytaskstats", "get", str(os.getpid()), "--json")
    assert auto.returncode == 0, auto.stderr
    assert "reading /proc" in auto.stderr
    record = json.loads(auto.stdout)["record"]
    assert record["source"] == "procfs" and record["ac_pid"] == os.getpid()
    assert record["blkio_count"] is None and record["read_bytes"] is None  # root's io
    # cgroupstats needs no privilege
    ok = as_nobody(nobody_env, "-m", "pytaskstats", "cgroup", "/sys/fs/cgroup/cpu", "--json")
    assert ok.returncode == 0, ok.stderr
    assert '"nr_sleeping"' in ok.stdout


def test_access_denied_from_the_api(nobody_env: dict[str, str]) -> None:
    code = ("from pytaskstats import Client, AccessDenied\n"
            "try:\n  Client('kernel').pid(1)\nexcept AccessDenied as e:\n  print('denied', e.pid)")
    done = as_nobody(nobody_env, "-c", code)
    assert done.stdout.strip() == "denied 1", done.stderr
    assert AccessDenied.__module__ == "pytaskstats"


def test_delay_accounting_shows_io_waits_when_on(client: Client, delayacct_on: None,
                                                 tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(1 << 20))
    code = ("import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY|os.O_DIRECT); "
            "buf=bytearray(1<<20); import mmap; m=mmap.mmap(-1, 1<<20); os.readv(fd,[m]); "
            "os.kill(os.getpid(), 19)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(data)])
    try:
        wait_for_state(proc.pid, "T")
        rec: TaskStats = client.pid(proc.pid)
        # if this fails with the switch off, something outside the tests' lock flipped it
        assert delayacct.status() is True, "kernel.task_delayacct was switched off mid-test"
        assert rec.blkio_count is not None and rec.blkio_count > 0
        assert rec.blkio_delay_total is not None and rec.blkio_delay_total > 0
    finally:
        proc.kill()
        proc.wait()


def test_listener_overrun_becomes_counted_loss(tmp_path: Path) -> None:
    """A listener with a tiny buffer that does not read: the kernel drops exits; the
    listener reports them as Lost with the kernel's exact count, and keeps going."""
    built = tmp_path / "storm"
    subprocess.run(["gcc", "-O2", "-o", str(built), str(Path(__file__).parent / "storm.c")],
                   check=True)
    exe = unique_command(tmp_path, "storm", source=str(built))  # its exits, not others'
    with Client() as client, Listener(rcvbuf=4096) as listener:
        subprocess.run([str(exe), "400"], check=True, stdout=subprocess.DEVNULL)
        events = listener.drain()
        assert client.pid(os.getpid()).ac_pid == os.getpid()
    got = sum(isinstance(e, ExitRecord) and e.task.ac_comm == exe.name for e in events)
    lost = [e for e in events if isinstance(e, Lost)]
    assert lost and lost[0].reason == "overrun" and listener.lost == sum(
        e.records for e in lost)
    assert got + listener.lost >= 400 and got < 400
