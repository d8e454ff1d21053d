"""`taskstats top` beyond the columns of taskstats: the selection and scrolling,
the tree view, /proc's state, RSS and command line on rows, the header's system
totals, and the actions on the selected process (signal, renice) — pure parts
first, then the real screen in tmux on processes this test spawns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytaskstats import Client
from pytaskstats.procfs_parse import ProcfsFormatError
from pytaskstats.procinfo import ProcInfo, command_line, parse_statm, read_proc_info
from pytaskstats.sysstat import SystemSample, parse_cpu, parse_psi, parse_vmstat, read_system
from pytaskstats.top import actions
from pytaskstats.top.cursor import Cursor, move, place
from pytaskstats.top.model import COUNTED, METRICS, Model, Row, Sample
from pytaskstats.top.render import (
    WIDE_AT,
    Info,
    frame_json,
    header_lines,
    last_column_at,
    row_cells,
    system_line,
    table_header,
)
from pytaskstats.top.replayscreen import ReplayScreen
from pytaskstats.top.sampler import Sampler
from pytaskstats.top.screen import Screen
from pytaskstats.top.systotals import system_totals
from pytaskstats.top.view import ViewState, as_tree, view

from .conftest import NOBODY_PYTHON, as_nobody, unique_command, wait_until
from .replay_rows import demo_journal
from .test_top import ROOT, T0, S, Tmux, later, rec, tmux  # noqa: F401  (the fixture)
from .test_top_replay import FakeWin, started

# ------------------------------------------------------------------ the cursor


def test_the_selection_moves_scrolls_and_follows_its_pid() -> None:
    keys = list(range(100, 150))  # 50 rows, 10 on screen
    cur = place(Cursor(), keys, 10)
    assert cur == Cursor(100, 0, 0)
    assert place(cur, [7, *keys], 10).key == 7  # not moved yet: the first row, any
    cur = move(cur, keys, 10, "down")
    assert (cur.key, cur.top, cur.pinned) == (101, 0, True)
    cur = move(cur, keys, 10, "pgdn")
    assert (cur.key, cur.row, cur.top) == (111, 11, 10)  # a page further, row visible
    cur = move(cur, keys, 10, "end")
    assert (cur.key, cur.row, cur.top) == (149, 49, 40)
    cur = move(cur, keys, 10, "down")
    assert cur.row == 49  # nothing past the end
    cur = move(cur, keys, 10, "pgup")
    assert cur.top <= cur.row < cur.top + 10 and cur.key == 139
    # a refresh reorders the rows: the selection follows pid 139 to its new place
    reordered = [139, *(k for k in keys if k != 139)]
    cur = place(cur, reordered, 10)
    assert (cur.key, cur.row, cur.top) == (139, 0, 0)
    # pid 139 is gone: the selection stays where it was, on the row now there
    cur = place(cur._replace(row=5, top=0), [k for k in keys if k != 139], 10)
    assert (cur.row, cur.key) == (5, 105)
    home = move(cur, keys, 10, "home")
    assert home == Cursor(100, 0, 0) and place(home, [7, *keys], 10).key == 7  # unpinned
    assert place(cur, [], 10).key is None and move(Cursor(), [], 10, "end").key is None


# ------------------------------------------------------------------ rows from /proc

def proc(state: str = "S", ppid: int = 1, rss: int | None = 8 << 20, nice: int = 0,
         cmdline: str | None = None) -> ProcInfo:
    return ProcInfo("work", state, ppid, nice, 4242, rss, cmdline)


def frame_with(*records: Any, procs: dict[int, ProcInfo], states: dict[int, str] | None = None,
               exits: tuple[Any, ...] = ()) -> Any:
    model = Model()
    tasks = {r.ac_pid: r for r in records}
    tgids = {r.ac_pid: r.ac_tgid for r in records}
    model.update(Sample(t_ns=T0, span_ns=1000, tasks=tasks, tgids=tgids, procs=procs))
    nxt = {r.ac_pid: later(r, 1) for r in records}
    return model.update(Sample(t_ns=T0 + S, span_ns=1000, tasks=nxt, tgids=tgids, procs=procs,
                               states=states or {}, exits=exits))


def test_rows_carry_state_parent_rss_peak_and_command_line() -> None:
    lead = rec(10, hiwater_rss=4096)  # 4 MiB peak by taskstats
    worker = rec(11, 10, hiwater_rss=4096)
    child = rec(20, hiwater_rss=20_000)
    frame = frame_with(lead, worker, child, procs={
        10: proc("S", 1, 16 << 20, 5, "/usr/bin/work --serve"), 20: proc("R", 10, None)},
        states={11: "D"})
    rows = {r.pid: r for r in frame.rows("process")}
    assert (rows[10].state, rows[10].ppid, rows[10].nice) == ("S", 1, 5)
    assert rows[10].rss == 16 << 20 and rows[10].peak_rss == 16 << 20  # at least the RSS
    assert rows[20].peak_rss == 20_000 * 1024 and rows[20].rss is None
    assert rows[10].cmdline == "/usr/bin/work --serve" and rows[10].start == 4242
    threads = {r.pid: r for r in frame.rows("thread")}
    assert threads[11].state == "D" and threads[10].state == "S"  # each its own
    assert threads[11].nice is None and threads[11].ppid == 1  # per thread: unknown


def test_the_tree_puts_each_child_under_its_parent() -> None:
    def row(pid: int, ppid: int | None, cpu: float, exited: bool = False) -> Row:
        values = (cpu,) + (0.0,) * (len(METRICS) - 1)
        return Row(pid=pid, tgid=pid, uid=0, user="root", command=f"c{pid}", cgroup=None,
                   threads=1, exited=exited, seconds=1.0, totals=(0,) * len(COUNTED),
                   values=values, ppid=ppid)
    # sorted by CPU: the busy grandchild first, yet it comes under its parents
    rows = [row(30, 20, 90), row(20, 10, 50), row(40, 999, 40), row(21, 10, 30),
            row(10, 1, 5), row(50, 10, 1, exited=True)]
    tree = as_tree(rows)
    assert [(r.pid, r.depth) for r in tree] == [(40, 0), (10, 0), (20, 1), (30, 2), (21, 1),
                                               (50, 0)]
    line = row_cells(tree[3], False)
    assert line.endswith("  `- c30")  # indented two levels
    assert as_tree([row(5, 6, 1), row(6, 5, 2)])  # a cycle loses no row
    assert len(as_tree([row(5, 6, 1), row(6, 5, 2)])) == 2


def test_view_tree_only_per_process_and_says_so() -> None:
    frame = frame_with(rec(10), rec(20), rec(21, 20), procs={10: proc(ppid=20),
                                                              20: proc(ppid=1)})
    tree = view(frame, ViewState(tree=True, sort="pid"))
    assert [(r.pid, r.depth) for r in tree] == [(20, 0), (10, 1)]
    assert [r.depth for r in view(frame, ViewState(tree=True, level="thread"))] == [0, 0, 0]
    assert "tree" in header_lines(frame, Info("kernel"), ViewState(tree=True))[4]


def test_wide_columns_state_and_full_command_line() -> None:
    frame = frame_with(rec(10, hiwater_rss=3 << 20), procs={
        10: proc("D", rss=1 << 30, cmdline="/bin/work -x")})
    row = frame.rows("process")[0]
    narrow, wide = row_cells(row, False), row_cells(row, False, wide=True)
    assert narrow.split()[1] == "D" and "1.0G" not in narrow
    assert wide.split()[-4:] == ["1.0G", "3.0G", "1", "work"]
    assert row_cells(row, False, wide=True, full=True).endswith(" /bin/work -x")
    assert "*RSS" in table_header(ViewState(sort="rss"), wide=True)
    assert "*" not in table_header(ViewState(sort="rss"))  # its column is not shown
    assert table_header(ViewState(), wide=True).index("COMMAND") == last_column_at(True)
    assert last_column_at(True) + 12 < WIDE_AT  # a command fits from 100 columns
    got = frame_json(frame, [row], Info("kernel"), ViewState())["rows"][0]
    assert (got["state"], got["rss_bytes"], got["peak_rss_bytes"]) == ("D", 1 << 30, 3 << 30)
    assert got["cmdline"] == "/bin/work -x" and got["ppid"] == 1


@pytest.mark.kernel
def test_the_sampler_reads_proc_and_the_system_for_the_rows(tmp_path: Path) -> None:
    exe = unique_command(tmp_path, "ts", "/bin/sleep")
    with subprocess.Popen([str(exe), "600"]) as child, Client("kernel") as client:
        sampler = Sampler(client, listen=False)
        try:
            first = sampler.sample()
            assert child.pid in first.procs and not first.states  # processes only
            sampler.thread_states = True
            nxt = sampler.sample()
        finally:
            sampler.close()
            child.kill()
    info = nxt.procs[child.pid]
    assert (info.comm, info.ppid, info.cmdline) == (exe.name, os.getpid(), f"{exe} 600")
    assert info.state == nxt.states[child.pid] == "S" and info.rss
    assert set(nxt.states) <= set(nxt.tgids) and len(nxt.states) > len(nxt.procs) / 2
    assert nxt.system is not None and nxt.system.cpu is not None
    model = Model()
    model.update(first)
    frame = model.update(nxt)
    row = next(r for r in frame.rows("process") if r.pid == child.pid)
    assert row.state == "S" and row.peak_rss and row.peak_rss >= (row.rss or 0)


def test_batch_tree_and_full_command_options() -> None:
    done = subprocess.run([sys.executable, "-m", "pytaskstats", "top", "-b", "--json", "-n",
                           "1", "-d", "0.2", "--tree", "--full-command", "-P", "1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["rows"] and doc["system"]["cpu_busy_pct"] is not None
    text = subprocess.run([sys.executable, "-m", "pytaskstats", "top", "-b", "-n", "1", "-d",
                           "0.2", "--tree", "--full-command", "-c", "python"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert text.returncode == 0, text.stderr
    assert "tree" in text.stdout.splitlines()[4] and " -m pytaskstats top -b" in text.stdout


# ------------------------------------------------------------------ /proc parsing

def test_proc_files_parse_and_bad_ones_say_which() -> None:
    assert parse_statm(b"1000 250 100 10 0 300 0\n", "statm") == 250 * os.sysconf(
        "SC_PAGE_SIZE")
    assert parse_statm(b"0 0 0 0 0 0 0\n", "statm") is None  # a kernel thread
    with pytest.raises(ProcfsFormatError, match="statm"):
        parse_statm(b"12\n", "statm")
    assert command_line(b"python3\0-c\0print(1)\nx\0") == "python3 -c print(1) x"
    assert command_line(b"") is None
    assert parse_cpu(b"cpu  10 2 8 70 5 1 1 3 4 0\ncpu0 1 1\n") == (25, 100)
    with pytest.raises(ProcfsFormatError, match="cpu line"):
        parse_cpu(b"intr 5\n")
    assert parse_vmstat(b"nr_free_pages 5\npgpgin 100\npgpgout 7\n") == (100, 7)
    assert parse_vmstat(b"nr_free_pages 5\n") == (None, None)
    assert parse_psi(b"some avg10=1.00 avg60=0 avg300=0 total=500\n"
                     b"full avg10=0 avg60=0 avg300=0 total=20\n", "io") == (500, 20)
    assert parse_psi(b"some avg10=1.00 avg60=0 avg300=0 total=9\n", "cpu") == (9, None)
    with pytest.raises(ProcfsFormatError, match="some"):
        parse_psi(b"", "memory")


def test_read_system_leaves_out_what_the_kernel_lacks(tmp_path: Path) -> None:
    (tmp_path / "stat").write_bytes(b"cpu  1 0 1 8 0 0 0 0 0 0\n")
    (tmp_path / "vmstat").write_bytes(b"pgpgin 4\npgpgout 8\n")
    got = read_system(str(tmp_path))  # no pressure directory: a kernel without PSI
    assert got == SystemSample((2, 10), 4, 8, {})
    real = read_system()
    assert real.cpu is not None and real.cpu[0] <= real.cpu[1]
    assert set(real.psi) <= {"cpu", "io", "memory"}
    assert os.path.exists("/proc/pressure/io") == ("io" in real.psi)
    mine = read_proc_info(os.getpid())
    assert mine is not None and mine.state == "R" and mine.ppid == os.getppid()
    assert mine.rss and mine.cmdline and "pytest" in mine.cmdline


def test_system_totals_over_the_interval() -> None:
    old = SystemSample((100, 1000), 1000, 2000, {"io": (1_000_000, 500_000),
                                                 "cpu": (0, None)})
    new = SystemSample((350, 1500), 1000 + 2048, 2000, {"io": (1_500_000, 600_000),
                                                        "cpu": (200_000, None)})
    got = system_totals(old, new, 2.0)
    assert got.cpu_pct == pytest.approx(50.0)
    assert got.read_bps == pytest.approx(1 << 20) and got.write_bps == 0
    assert got.psi["io"] == pytest.approx((25.0, 5.0))
    assert got.psi["cpu"][0] == pytest.approx(10.0) and got.psi["cpu"][1] is None
    back = system_totals(new, old, 2.0)  # counters going back: unknown, not negative
    assert back.read_bps is None and back.psi == {} and back.cpu_pct is None


def test_the_header_and_json_show_the_system_totals() -> None:
    model = Model()
    a = rec(10, read_bytes=0)
    old = SystemSample((0, 400), 0, 0, {"io": (0, 0)})
    new = SystemSample((100, 800), 4096, 1024, {"io": (100_000, 50_000)})
    model.update(Sample(t_ns=T0, span_ns=1, tasks={10: a}, system=old))
    frame = model.update(Sample(t_ns=T0 + S, span_ns=1, tasks={10: later(
        a, 1, read_bytes=3 << 20)}, system=new))
    line = system_line(frame)
    assert line == "CPU 25.0%  disk R/W/s total 3.0M/0 actual 4.0M/1.0M  PSI% io 10/5"
    doc = frame_json(frame, [], Info("kernel"), ViewState())["system"]
    assert doc["cpu_busy_pct"] == 25.0 and doc["psi"]["io"] == {"some_pct": 10.0,
                                                                 "full_pct": 5.0}
    assert doc["disk_actual"] == {"read_bytes_per_s": 4 << 20, "write_bytes_per_s": 1 << 20}
    assert doc["disk_total"]["read_bytes_per_s"] == 3 << 20
    first = Model().update(Sample(t_ns=T0, span_ns=1, tasks={10: a}, system=old))
    assert system_line(first).startswith("CPU -  ")


# ------------------------------------------------------------------ actions

def test_signal_and_nice_values_parse() -> None:
    assert actions.parse_signal("") == signal.SIGTERM
    assert actions.parse_signal("kill") == actions.parse_signal("9") == signal.SIGKILL
    assert actions.parse_signal("SIGHUP") == signal.SIGHUP
    with pytest.raises(ValueError, match="unknown signal"):
        actions.parse_signal("FOO")
    assert actions.parse_nice(" -5") == -5 and actions.parse_nice("19") == 19
    for bad in ("20", "x", ""):
        with pytest.raises(ValueError, match="-20 to 19"):
            actions.parse_nice(bad)


def _row_of(pid: int) -> Row:
    info = read_proc_info(pid)
    assert info is not None
    return Row(pid=pid, tgid=pid, uid=0, user="root", command="sleep", cgroup=None,
               threads=1, exited=False, seconds=1, totals=(0,) * len(COUNTED),
               values=(None,) * len(METRICS), start=info.start, nice=info.nice)


def test_actions_check_the_target_and_report_in_one_line() -> None:
    with subprocess.Popen(["sleep", "600"]) as child:
        try:
            row = _row_of(child.pid)
            assert actions.refusal(row, "process") is None
            assert "cgroup" in (actions.refusal(row, "cgroup") or "")
            gone = Row(**{**_fields(row), "exited": True})
            assert "exited" in (actions.refusal(gone, "process") or "")
            assert actions.renice(row, "process", 7) == (
                f"reniced 1 thread(s) of {child.pid} (sleep) to 7")
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == 7
            stale = Row(**{**_fields(row), "start": (row.start or 0) + 1})  # pid reused
            assert "nothing done" in actions.send_signal(stale, signal.SIGKILL)
            assert child.poll() is None
            assert actions.send_signal(row, signal.SIGTERM) == (
                f"sent SIGTERM to {child.pid} (sleep)")
            assert child.wait(timeout=10) == -signal.SIGTERM
            assert "exited" in actions.send_signal(row, signal.SIGTERM)
        finally:
            child.kill()


def _fields(row: Row) -> dict[str, Any]:
    return {name: getattr(row, name) for name in Row.__dataclass_fields__}


NOBODY_SIGNALS_ROOTS = """
import signal, sys
from pytaskstats.procinfo import read_proc_info
from pytaskstats.top import actions
from pytaskstats.top.model import COUNTED, METRICS, Row
pid = int(sys.argv[1])
info = read_proc_info(pid)
row = Row(pid=pid, tgid=pid, uid=0, user="root", command="sleep", cgroup=None, threads=1,
          exited=False, seconds=1, totals=(0,) * len(COUNTED), values=(None,) * len(METRICS),
          start=info.start)
print(actions.send_signal(row, signal.SIGTERM))
print(actions.renice(row, "process", 0))
"""


def test_permission_errors_are_one_line_messages(nobody_env: dict[str, str]) -> None:
    """nobody may neither signal nor renice a root sleeper of its own session-less kind
    (a sleeper in a new session: SIGCONT within a session passes any uid check, and
    pid 1 shares the session on some CI machines)."""
    if not NOBODY_PYTHON:
        pytest.skip("no python for nobody")
    with subprocess.Popen(["sleep", "600"], start_new_session=True) as child:
        try:
            done = as_nobody(nobody_env, "-c", NOBODY_SIGNALS_ROOTS, str(child.pid))
            assert child.poll() is None, "nobody's SIGTERM reached root's sleeper"
        finally:
            child.kill()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"not permitted to signal {child.pid} (sleep): run as its owner or root"
    assert lines[1].startswith(f"not permitted to renice {child.pid} (sleep) to 0")


class StubSampler:
    """What the screen asks of the sampler outside a refresh: its /proc root and
    the header's facts."""

    proc = "/proc"
    thread_states = False
    exits_note = scope_note = None

    class client:  # noqa: N801  (stands for the attribute)
        backend = "kernel"


def test_screen_renices_and_signals_the_selected_row_after_confirming() -> None:
    with subprocess.Popen(["sleep", "600"]) as child:
        try:
            info = read_proc_info(child.pid)
            assert info is not None
            frame = frame_with(rec(child.pid, comm="sleep"), procs={child.pid: info})
            win = FakeWin(["\n", "y", *"TERM\n", "n", *"x\n"])
            screen = Screen(win, StubSampler(), Model(), ViewState(), frame)  # type: ignore[arg-type]
            screen.draw()
            screen.on_key("F8")  # Enter takes the proposed nice + 1, y confirms
            assert screen.message == f"reniced 1 thread(s) of {child.pid} (sleep) to 1"
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == 1
            assert any("now 0 [1]" in seen[23] for seen in win.seen)
            screen.on_key("k")  # TERM, then n: nothing sent
            assert child.poll() is None and screen.message == ""
            screen.on_key("k")
            assert screen.message.startswith("unknown signal 'x'") and child.poll() is None
            screen.state = ViewState(level="cgroup")
            screen.draw()
            screen.on_key("N")
            assert screen.message.startswith("select a process")
        finally:
            child.kill()


def test_replay_moves_the_selection_and_refuses_actions() -> None:
    win = FakeWin(["down", "down", "k", "end", "N", "q"])
    screen = ReplayScreen(win, started(demo_journal()), ViewState(sort="pid"),
                          lambda text: 0)
    assert screen.run() == 0
    shots = [s for s in win.shots if "taskstats top" in s[0]]
    assert screen.cursor.row == len(screen.rows) - 1 > 0  # End: the last row
    assert "only in the live view" in shots[3][23] and "only in the live view" in shots[5][23]


# ------------------------------------------------------------------ the screen in tmux

def _top(term_of: Callable[[str], Tmux], *args: str) -> Tmux:
    env = f"PYTHONPATH={ROOT / 'src'}"
    return term_of(f"env {env} {sys.executable} -m pytaskstats top -d 0.5 {' '.join(args)}")


def _keys(term: Tmux, *keys: str) -> None:
    term.run("send-keys", "-t", "top", *keys)


def _rows(lines: list[str]) -> list[str]:
    return lines[6:-1]


def test_screen_scrolls_to_a_row_below_the_screen(
        tmux: Callable[[str], Tmux], tmp_path: Path) -> None:  # noqa: F811
    """20 sleepers of ours (the filter shows only them, sorted by name) on a screen of
    17 rows: the last ones are reached by End, PgDn and Down, and left by Home."""
    tag = unique_command(tmp_path, "sc", "/bin/sleep").name
    names = [f"{tag}{i:02d}" for i in range(20)]
    for name in names:
        (tmp_path / name).symlink_to(os.path.realpath("/bin/sleep"))
    sleepers = [subprocess.Popen([str(tmp_path / name), "600"]) for name in names]
    try:
        term = _top(tmux, "-s", "command", "-c", tag)

        def shown(s: list[str]) -> list[str]:
            return [n for n in names if any(line.endswith(f" {n}") for line in _rows(s))]
        term.until(lambda s: shown(s) == names[:17], "the first 17 of ours")
        _keys(term, "End")
        term.until(lambda s: shown(s) == names[3:], "the last row after End")
        _keys(term, "Home")
        term.until(lambda s: shown(s) == names[:17], "the first row after Home")
        _keys(term, "NPage")
        term.until(lambda s: shown(s) == names[3:], "the last rows after PgDn")
        _keys(term, "Home", *["Down"] * 18)
        term.until(lambda s: shown(s) == names[2:19], "two rows scrolled by Down")
        _keys(term, "q")
    finally:
        for child in sleepers:
            child.kill()
            child.wait()


def test_tree_view_shows_the_child_under_its_parent(
        tmux: Callable[[str], Tmux], tmp_path: Path) -> None:  # noqa: F811
    parent = unique_command(tmp_path, "tp", "/bin/sh")
    tag = parent.name[2:]
    child = tmp_path / f"tc{tag}"
    child.symlink_to(os.path.realpath("/bin/sleep"))
    with subprocess.Popen([str(parent), "-c", f"{child} 600; :"]) as sh:
        try:
            term = _top(tmux, "-c", tag)
            term.until(lambda s: sum(tag in line for line in _rows(s)) == 2,
                       "the parent and the child")
            _keys(term, "V")
            lines = term.until(lambda s: "tree" in s[4] and any(
                f"`- tc{tag}" in line for line in s), "the tree view")
            ours = [line for line in _rows(lines) if tag in line]
            assert ours[0].endswith(f" tp{tag}") and str(sh.pid) in ours[0]
            assert ours[1].endswith(f" `- tc{tag}")
            _keys(term, "q")
        finally:
            kids = Path(f"/proc/{sh.pid}/task/{sh.pid}/children")
            for pid in (kids.read_text().split() if kids.exists() else ()):
                os.kill(int(pid), signal.SIGKILL)  # the sleep we spawned, by its pid
            sh.kill()


def test_signal_to_the_selected_process_after_confirmation(
        tmux: Callable[[str], Tmux], tmp_path: Path) -> None:  # noqa: F811
    exe = unique_command(tmp_path, "tk", "/bin/sleep")
    with subprocess.Popen([str(exe), "600"]) as child:
        try:
            term = _top(tmux, "-c", exe.name)
            term.until(lambda s: any(exe.name in line for line in _rows(s)), "its row")
            _keys(term, "k")
            term.until(lambda s: s[23].startswith(f"signal to {child.pid} ({exe.name})"),
                       "the signal prompt")
            _keys(term, "Enter")
            term.until(lambda s: f"send SIGTERM to {child.pid}" in s[23], "the confirmation")
            _keys(term, "n")  # no: nothing sent
            term.until(lambda s: s[23].startswith("q quit"), "the key line again")
            assert child.poll() is None
            _keys(term, "k")
            term.until(lambda s: s[23].startswith("signal to"), "the signal prompt")
            _keys(term, "Enter")
            term.until(lambda s: "send SIGTERM" in s[23], "the confirmation")
            _keys(term, "y")
            wait_until(lambda: child.poll() is not None, "the child's death")
            assert child.returncode == -signal.SIGTERM
            term.until(lambda s: f"sent SIGTERM to {child.pid}" in s[23], "the message")
            _keys(term, "q")
        finally:
            child.kill()
