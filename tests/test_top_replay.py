"""`taskstats top --replay`: journal rows (synthetic, of the samples contract) shown
as the live view's frames; stepping, jumps and ends; bounded fetches; batch output;
keys through the screen logic and once in a real terminal; the command line."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from pytaskstats import Client
from pytaskstats.cli.main import main
from pytaskstats.cli.top import parse_time, replay_range
from pytaskstats.extproto import Rows
from pytaskstats.top import replay as replay_mod
from pytaskstats.top.batch import run_replay_batch
from pytaskstats.top.counters import METRICS
from pytaskstats.top.frame import Frame
from pytaskstats.top.render import frame_json, header_lines
from pytaskstats.top.replay import MAX_ROWS, Journal, Replay
from pytaskstats.top.replayframe import frame_of
from pytaskstats.top.replayscreen import REPLAY_KEY_LINE, ReplayScreen
from pytaskstats.top.view import Filters, ViewState, group_by_cgroup, view

from .conftest import WAITS_FOR_EXITS, require_kernel, wait_until
from .daemon_util import RunningDaemon
from .replay_rows import STEP, T0, ListSource, S, by_pid, demo_journal, srow, xrow
from .test_top import Tmux, tmux  # noqa: F401  (the fixture)

pytestmark = WAITS_FOR_EXITS

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "pytaskstats"]
SINCE, UNTIL = T0 - 3600 * S, T0 + 3600 * S


def replay_of(rows: list[dict[str, Any]], *, since: int = SINCE, until: int = UNTIL,
              max_rows: int = MAX_ROWS, cap: int | None = None
              ) -> tuple[Replay, ListSource]:
    source = ListSource(rows, cap)
    return Replay(Journal(source, since, until, max_rows), names=names), source


def names(uids: Any) -> dict[int, str]:
    return {u: {0: "root", 1000: "alice"}.get(u, str(u)) for u in uids if u is not None}


def started(rows: list[dict[str, Any]], **kw: Any) -> Replay:
    replay, _ = replay_of(rows, **kw)
    assert replay.start()
    return replay


def frame_on(replay: Replay) -> Frame:
    assert replay.frame is not None
    return replay.frame


def note_of(replay: Replay) -> str:
    replayed = replay.info().replay
    assert replayed is not None
    return replayed.note


def end_of(replay: Replay) -> int:
    assert replay.interval is not None
    return replay.interval.end_ns


# ------------------------------------------------------------------ frames from rows

def test_the_replayed_deltas_are_the_rows_deltas() -> None:
    row = srow(T0, 7, "db", ac_utime=9 * S // 1000, ac_stime=3 * S // 1000,
               cpu_delay_total=6 * S, blkio_delay_total=3 * S, swapin_delay_total=S,
               freepages_delay_total=S, thrashing_delay_total=S, compact_delay_total=S,
               wpcopy_delay_total=S, irq_delay_total=S // 2, read_bytes=600, write_bytes=1200,
               nvcsw=300, nivcsw=60)
    frame = frame_of([row], [], T0 - STEP, T0, names)
    got = by_pid(frame.rows("process"), 7)
    expected = {"cpu_pct": 20.0, "cpu_wait_pct": 10.0, "io_wait_pct": 5.0,
                "mem_wait_pct": 5 / 60 * 100, "irq_pct": 0.5 / 60 * 100,
                "read_bytes_per_s": 10.0, "write_bytes_per_s": 20.0, "ctxsw_per_s": 6.0}
    assert {m.name: got.value(m.name) for m in METRICS} == pytest.approx(expected)
    assert got.total("blkio_delay_total") == 3 * S and got.total("read_bytes") == 600
    assert (got.user, got.command, got.exited, got.seconds) == ("alice", "db", False, 60.0)
    assert frame.seconds == 60 and frame.discarded == 0 and frame.processes == 1


def test_a_process_of_many_threads_may_run_longer_than_the_interval() -> None:
    busy = srow(T0, 1, "java", threads=4, ac_utime=200_000_000)  # 200 s in 60 s
    alone = srow(T0, 2, "liar", threads=1, ac_utime=200_000_000)  # one thread cannot
    frame = frame_of([busy, alone], [], T0 - STEP, T0, names)
    java, liar = (by_pid(frame.rows("process"), p) for p in (1, 2))
    assert java.value("cpu_pct") == pytest.approx(200 / 60 * 100) and java.threads == 4
    assert liar.value("cpu_pct") == 0 and frame.discarded == 1


def test_missing_fields_read_as_unknown_not_zero() -> None:
    row = srow(T0, 7, "old", irq_delay_total=None)
    got = by_pid(frame_of([row], [], T0 - STEP, T0, names).rows("process"), 7)
    assert got.value("irq_pct") is None and got.value("io_wait_pct") == 0


def test_exits_are_rated_by_what_they_did_in_their_interval() -> None:
    short = xrow(T0 - 5 * S, 40, "cc1", age_s=3, cpu_run_virtual_total=3 * S)
    old_no_sample = xrow(T0 - 4 * S, 41, "cron", age_s=9000, cpu_run_virtual_total=900 * S)
    leader = xrow(T0 - 3 * S, 50, "worker", age_s=5000, cpu_run_virtual_total=800 * S,
                  btime=1_779_990_000)
    last = srow(T0, 50, "worker", ac_utime=12_000_000)  # its deltas up to its exit
    alive = srow(T0, 60, "idle-ish", nvcsw=60)
    frame = frame_of([last, alive], [short, old_no_sample, leader], T0 - STEP, T0, names)
    rows = frame.rows("process")
    assert by_pid(rows, 40).exited and by_pid(rows, 40).value("cpu_pct") == pytest.approx(5)
    assert by_pid(rows, 40).lifetime == 3
    assert by_pid(rows, 41).exited and by_pid(rows, 41).value("cpu_pct") is None
    worker = by_pid(rows, 50)  # once, as exited, rated by its last sample's deltas
    assert worker.exited and worker.value("cpu_pct") == pytest.approx(20)
    assert worker.total("cpu_run_virtual_total") == 800 * S
    assert not by_pid(rows, 60).exited and frame.exits == 3
    header = header_lines(frame, Replay(Journal(ListSource([]), 0, 1)).info(), ViewState())
    assert header[3] == "exits in this interval: 3 processes, 3 tasks"
    assert "not journaled" in header[1]


def test_sorts_filters_and_groupings_of_the_live_view_apply() -> None:
    replay = started(demo_journal())
    assert replay.step(1) == ""  # the interval with the backup's IO wait
    frame = replay.frame
    assert frame is not None
    assert [r.command for r in view(frame, ViewState(sort="iowait"))][:1] == ["backup"]
    assert [r.pid for r in view(frame, ViewState(sort="cpu"))] == [100, 200, 300]
    assert [r.pid for r in view(frame, ViewState(sort="cpu", reverse=True))][-1] == 100
    root = ViewState(filters=Filters(user="root"))
    assert [r.command for r in view(frame, root)] == ["postgres"]
    slices = ViewState(filters=Filters(cgroup="/system.slice"))
    assert {r.pid for r in view(frame, slices)} == {100, 200}
    groups = {r.cgroup: r for r in view(frame, ViewState(level="cgroup"))}
    assert set(groups) == {"/system.slice/db.service", "/system.slice/web.service",
                           "/user.slice"}
    assert groups["/user.slice"].value("io_wait_pct") == pytest.approx(75)
    assert groups == {r.cgroup: r for r in group_by_cgroup(frame.rows("process"))}
    assert {r.pid for r in view(frame, ViewState(level="thread"))} == {100, 200, 300}
    assert [r.pid for r in view(frame, ViewState(sort="pid", limit=2))] == [100, 200]


# ------------------------------------------------------------------ moving in the journal

def test_stepping_forward_and_back_and_the_ends() -> None:
    replay = started(demo_journal())
    assert end_of(replay) == T0 and replay.interval is not None
    assert replay.interval.start_ns == T0 - STEP
    assert replay.step(1) == "" and end_of(replay) == T0 + STEP
    assert replay.step(1) == "" and end_of(replay) == T0 + 2 * STEP
    frame = replay.frame
    assert "end of the replayed range" in replay.step(1)
    assert end_of(replay) == T0 + 2 * STEP and replay.frame is frame  # unchanged
    assert replay.step(-1) == "" and replay.step(-1) == "" and end_of(replay) == T0
    assert "start of the replayed range" in replay.step(-1) and end_of(replay) == T0


def test_jumps_land_on_the_interval_holding_the_time() -> None:
    replay = started(demo_journal())
    assert replay.jump(T0 + 30 * S) == "" and end_of(replay) == T0 + STEP
    assert replay.jump(T0 + 2 * STEP) == "" and end_of(replay) == T0 + 2 * STEP
    assert replay.jump(T0 + 3000 * S) == "" and end_of(replay) == T0 + 2 * STEP  # past the end
    assert "outside the replayed range" in replay.jump(UNTIL + S)
    assert end_of(replay) == T0 + 2 * STEP
    at, _ = replay_of(demo_journal())
    assert at.start(T0 + STEP - S) and end_of(at) == T0 + STEP


def test_the_range_bounds_every_move() -> None:
    rows = demo_journal()
    replay = started(rows, since=T0 + 1, until=T0 + STEP + 1)  # the second interval only
    assert end_of(replay) == T0 + STEP
    assert "end" in replay.step(1) and "start" in replay.step(-1)
    empty, _ = replay_of(rows, since=T0 + 3 * STEP, until=T0 + 4 * STEP)
    assert not empty.start() and empty.frame is None and "nothing" in empty.step(1)


def test_every_fetch_is_bounded_and_a_cut_interval_says_so() -> None:
    replay, source = replay_of(demo_journal())
    assert replay.start()
    for move in (1, 1, 1, -1, -1, -1):
        replay.step(move)
    replay.jump(T0 + 30 * S)
    probes = [q for q in source.queries if q.limit == 1]
    loads = [q for q in source.queries if q.limit != 1]
    assert probes and loads and all(q.limit == MAX_ROWS + 1 for q in loads)
    assert all(q.until_ns - q.since_ns <= STEP for q in loads)  # one interval each
    assert all(q.since_ns >= SINCE and q.until_ns <= UNTIL for q in probes)
    assert note_of(replay) == ""
    many = [srow(T0, pid, f"p{pid}") for pid in range(1, 6)]
    assert note_of(started(many, max_rows=5)) == ""  # all of them: not cut
    cut = started(many, max_rows=3)
    assert len(frame_on(cut).rows("process")) == 3
    assert "samples past 3 rows not shown" in note_of(cut)
    capped = started(many, cap=2)  # the daemon cut it (history_max_rows)
    assert "samples past 2 rows" in note_of(capped)
    exits = [srow(T0, 1, "sh"), *(xrow(T0 - S, pid, "true") for pid in range(2, 7))]
    assert note_of(started(exits, max_rows=3)).endswith("exits past 3 rows not shown")
    header = header_lines(frame_on(capped), capped.info(), ViewState())
    assert header[2].startswith("interval cut")


# ------------------------------------------------------------------ batch and JSON

def test_batch_prints_the_replayed_intervals_as_live_batch_does() -> None:
    out = io.StringIO()
    assert run_replay_batch(started(demo_journal()), ViewState(sort="iowait"), iterations=0,
                            json_lines=False, out=out) == 0
    blocks = [b for b in out.getvalue().split("\n\n") if b.strip()]
    assert len(blocks) == 3
    second = blocks[1].splitlines()
    clock = time.strftime("%H:%M:%S", time.localtime((T0 + STEP) / 1e9))
    assert second[0].startswith("taskstats top REPLAY ") and f"-{clock} 60s  3 procs" in second[0]
    assert second[1].startswith("disk R/W/s total ") and "not journaled" in second[1]
    assert "t next interval" in second[2] and second[3].startswith("exits in this interval")
    assert "sort IOW% desc" in second[4] and "*IOW%" in second[5]
    assert "backup" in second[6] and "75.0" in second[6]
    assert "cc1" in blocks[2] and "CPU% running" in blocks[0]  # the legend, first only
    two = io.StringIO()
    run_replay_batch(started(demo_journal()), ViewState(), iterations=2, json_lines=False,
                     out=two)
    assert two.getvalue().count("taskstats top REPLAY") == 2


def test_json_lines_carry_the_interval_and_the_rows_values() -> None:
    out = io.StringIO()
    run_replay_batch(started(demo_journal()), ViewState(), iterations=0, json_lines=True,
                     out=out)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["replay"]["end_ns"] for d in docs] == [T0, T0 + STEP, T0 + 2 * STEP]
    assert [d["time"] for d in docs] == [T0 / 1e9, (T0 + STEP) / 1e9, (T0 + 2 * STEP) / 1e9]
    pg = next(r for r in docs[2]["rows"] if r["ac_tgid"] == 100)
    assert pg["cpu_pct"] == pytest.approx(50 / 60 * 100, abs=1e-3) and pg["threads"] == 4
    assert docs[0]["interval_s"] == 60 and docs[0]["replay"]["note"] is None
    cc1 = next(r for r in docs[2]["rows"] if r["ac_comm"] == "cc1")
    assert cc1["exited"] and cc1["cpu_pct"] == 5.0
    frame = started(demo_journal()).frame
    assert frame is not None
    assert "replay" not in frame_json(frame, [], Replay(Journal(ListSource([]), 0, 1)).info()
                                      ._replace(replay=None), ViewState())


# ------------------------------------------------------------------ keys, through the screen

class FakeWin:
    """A curses window stand-in: keys from a list, each refresh() kept as lines."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = list(keys)
        self.lines: dict[int, str] = {}
        self.shots: list[list[str]] = []  # at each refresh()
        self.seen: list[list[str]] = []  # at each key read (a prompt, the help)

    def get_wch(self) -> str:
        self.seen.append([self.lines.get(y, "") for y in range(24)])
        return self.keys.pop(0)

    def getmaxyx(self) -> tuple[int, int]:
        return 24, 80

    def addnstr(self, y: int, x: int, text: str, n: int, attr: int = 0) -> None:
        self.lines[y] = text[:n]

    def erase(self) -> None:
        self.lines = {}

    def refresh(self) -> None:
        self.shots.append([self.lines.get(y, "") for y in range(24)])

    def timeout(self, ms: int) -> None:
        pass

    def clrtoeol(self) -> None:
        pass


def test_keys_step_jump_change_the_view_and_say_the_ends() -> None:
    keys = ["t", "i", "t", "t", "T", "j", *str((T0 - 30 * S) // S), "\n", "T", "H",
            " ", "j", "x", "y", "\n", "h", "z", "q"]
    win = FakeWin(keys)
    screen = ReplayScreen(win, started(demo_journal()), ViewState(), parse_time)
    assert screen.run() == 0 and not win.keys
    shots = [s for s in win.shots if "taskstats top" in s[0]]  # not prompts, not help

    def clock(t_ns: int) -> str:
        return time.strftime("%H:%M:%S", time.localtime(t_ns / 1e9))
    first, nxt, by_io, third, at_end, back, jumped, start, threads, live_only, bad = shots[:11]
    assert f"-{clock(T0)} " in first[0] and first[23] == REPLAY_KEY_LINE[:79]
    assert f"-{clock(T0 + STEP)} " in nxt[0] and "postgres" in nxt[6]
    assert "sort IOW% desc" in by_io[4] and "backup" in by_io[6]
    assert f"-{clock(T0 + 2 * STEP)} " in third[0] and "cc1" in "".join(third)
    assert "end of the replayed range" in at_end[23] and at_end[0] == third[0]
    assert f"-{clock(T0 + STEP)} " in back[0]
    assert f"-{clock(T0)} " in jumped[0]
    assert "start of the replayed range" in start[23]
    assert "per thread" in threads[4] and "TID" in threads[5]
    assert live_only[23].startswith("space: only in the live view")
    assert "give an age" in bad[23] and f"-{clock(T0)} " in bad[0]
    helps = [s for s in win.seen if "--replay keys" in s[0]]
    assert helps and any(line.strip().startswith("t         next interval")
                         for line in helps[0])
    assert any(line.strip().startswith("j         jump") for line in helps[0])
    assert not any(line.strip().startswith("D ") for line in helps[0])
    assert all(len(line) < 80 for line in helps[0])


def test_screen_replay_in_a_real_terminal(tmux: Callable[[str], Tmux]) -> None:  # noqa: F811
    term = tmux(f"cd {ROOT} && env PYTHONPATH={ROOT / 'src'} LINES=24 COLUMNS=80 "
                f"{sys.executable} -m tests.replay_rows")
    clock = time.strftime("%H:%M:%S", time.localtime(T0 / 1e9))
    lines = term.until(lambda s: any("COMMAND" in line for line in s), "the column header")
    assert lines[0].startswith("taskstats top REPLAY") and f"-{clock} " in lines[0]
    assert "postgres" in lines[6] and lines[23].startswith("q quit h help  t/T")
    term.run("send-keys", "-t", "top", "t")
    later = time.strftime("%H:%M:%S", time.localtime((T0 + STEP) / 1e9))
    term.until(lambda s: f"-{later} " in s[0], "the next interval")
    term.run("send-keys", "-t", "top", "q")
    status = wait_until(lambda: term.status.exists() and term.status.read_text().strip(),
                        "the replay to quit", timeout=10)
    assert status == "0"


# ------------------------------------------------------------------ the command line

def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "says"), [
    (["top", "-b", "--at", "1h"], "--since, --until and --at need --replay"),
    (["top", "-b", "--replay", "--since", "1h", "--until", "2h"],
     "--until must be later than --since"),
    (["top", "-b", "--replay", "--since", "2h", "--at", "3h"],
     "--at must be between --since and --until"),
    (["top", "-b", "--replay", "--at", "half past three"], "give an age"),
    (["top", "--replay"], "not a terminal"),
    (["top", "-b", "--replay", "-d", "5"], "-d: only in the live view"),
    (["top", "-b", "--replay", "--retain", "5", "--no-exits", "-H"],
     "--retain, --no-exits, -H: only in the live view"),
])
def test_bad_replay_options_are_one_line_usage_errors(argv: list[str], says: str,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and not out and says in err and err.count("\n") == 1, err


def test_without_taskstatsd_replay_says_to_start_it(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    sock = str(tmp_path / "none.sock")
    code, out, err = run_cli(["--socket", sock, "--backend", "kernel", "top", "-b",
                              "--replay"], capsys)
    assert code == 1 and not out and err.count("\n") == 1
    assert "taskstatsd" in err and "start it" in err


class FakeDaemonClient:
    """What run_replay needs of a Client: its backend, and being a context manager."""

    backend = "daemon"

    def __enter__(self) -> FakeDaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_cli_batch_replays_the_range(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str | None] = []

    def open_client(args: Any, backend: str | None = None, **_: Any) -> Any:
        seen.append(backend)
        return FakeDaemonClient()
    monkeypatch.setattr("pytaskstats.cli.top.open_client", open_client)
    monkeypatch.setattr("pytaskstats.cli.top.daemon_source",
                        lambda client: ListSource(demo_journal()))
    window = ["--since", str(SINCE // S), "--until", str(UNTIL // S)]
    code, out, err = run_cli(["--backend", "procfs", "top", "--replay", "-b", *window,
                              "-u", "1000", "-s", "iowait"], capsys)
    assert code == 0 and seen == ["daemon"] and not err
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) == 3 and all("postgres" not in b for b in blocks)
    assert "backup" in blocks[1].splitlines()[6]
    code, out, _ = run_cli(["top", "--replay", "--json", "-n", "1", *window, "--at",
                            str((T0 + 30 * S) // S)], capsys)
    assert code == 0 and json.loads(out)["replay"]["end_ns"] == T0 + STEP
    monkeypatch.setattr("pytaskstats.cli.top.daemon_source", lambda client: ListSource([]))
    code, out, err = run_cli(["top", "--replay", "-b", *window], capsys)
    assert code == 1 and not out and "no samples journaled" in err and err.count("\n") == 1


def test_the_production_source_asks_history_for_kinds_and_ranges() -> None:
    asked: list[dict[str, Any]] = []

    class Client:
        def history(self, **params: Any) -> Any:
            asked.append(params)
            answer = Rows([{"time_ns": 5}])
            answer.note = "cut"
            return answer
    source = replay_mod.daemon_source(cast(Any, Client()))
    page = source(replay_mod.Query("sample", 1, 9, 1, True))
    assert page.rows == [{"time_ns": 5}] and page.note == "cut"
    assert asked == [{"kind": "sample", "since_ns": 1, "until_ns": 9, "limit": 1,
                      "sort": "-time_ns"}]
    source(replay_mod.Query("exit", 2, 3, 10))
    assert asked[1] == {"kind": "exit", "since_ns": 2, "until_ns": 3, "limit": 10}


# ------------------------------------------------------------------ end to end (issue 15)

BURN = """
import sys, time
for line in sys.stdin:
    t = time.process_time()
    while time.process_time() - t < float(line): pass
    print("done", flush=True)
"""


def test_a_delta_a_little_over_its_interval_is_kept_not_discarded() -> None:
    """A row's deltas span its thread's reads, which a sliced scan under load can set
    further apart than the interval: 0.6 s of CPU in an interval of 0.3 s is shown
    (200%), not thrown out as impossible; a delay of a day in one minute still is."""
    short = srow(T0, 7, "db", interval_ns=300_000_000, ac_utime=600_000, ac_stime=0)
    frame = frame_of([short], [], T0 - 300_000_000, T0, names)
    got = by_pid(frame.rows("process"), 7)
    assert frame.discarded == 0 and got.value("cpu_pct") == pytest.approx(200)
    absurd = srow(T0, 8, "old", blkio_delay_total=86400 * S)
    frame = frame_of([absurd], [], T0 - STEP, T0, names)
    assert frame.discarded == 1 and by_pid(frame.rows("process"), 8).value("io_wait_pct") == 0


@pytest.mark.kernel
def test_a_long_lived_worker_replays_with_its_cpu_deltas() -> None:
    """A worker burns 0.6 s of CPU while taskstatsd samples every second: the
    replayed intervals' CPU of its row adds up to what the kernel says it burned."""
    require_kernel()
    daemon = RunningDaemon(None, "--sample-interval-s", "1")
    with Client("daemon", socket_path=daemon.socket) as client:  # the first scan only
        wait_until(lambda: client.status()["counters"].get("samples_taken", 0) >= 1,
                   "taskstatsd's first scan (it takes the starting values)")
    worker = subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        since = str(time.time() - 1)
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write("0.6\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "done"
        with Client("kernel") as kernel:  # all it burned, its start-up included
            rec = kernel.pid(worker.pid)
        assert rec.ac_utime is not None and rec.ac_stime is not None
        spent = (rec.ac_utime + rec.ac_stime) / 1e6

        def burned() -> float | None:
            done = subprocess.run(
                [*CLI, "--socket", daemon.socket, "top", "--replay", "--json", "--since",
                 since, "-c", "python"], capture_output=True, text=True, timeout=60,
                check=False)
            assert done.returncode in (0, 1), done.stderr
            total = sum(r["cpu_pct"] * d["interval_s"] / 100
                        for d in map(json.loads, done.stdout.splitlines())
                        for r in d["rows"] if r["ac_tgid"] == worker.pid and r["cpu_pct"])
            return total if total >= spent - 0.02 else None
        # the replay's deltas add up to the kernel's count (and the worker idles since)
        assert wait_until(burned, "the worker's CPU in the replay", timeout=30) == \
            pytest.approx(spent, abs=0.02)
    finally:
        worker.kill()
        worker.communicate()  # reaps it and closes its pipes
        daemon.close()


def test_stepping_goes_scan_to_scan_not_to_the_tails_exits_wrote() -> None:
    """An exit between two scans completes its thread's samples with a tail row stamped
    at the exit: replay steps by scans ("scan" rows), not by those."""
    tail = {**srow(T0 + STEP // 2, 9, "short"), "tail": True}
    rows = [srow(T0, 7, "db"), tail, srow(T0 + STEP, 7, "db")]
    journal = Journal(ListSource(rows), T0 - STEP, T0 + 2 * STEP)
    assert journal.first() == T0 and journal.after(T0) == T0 + STEP
    assert journal.before(T0 + STEP) == T0 and journal.last() == T0 + STEP


def test_at_now_is_the_latest_interval_not_a_usage_error() -> None:
    now = T0
    args = argparse.Namespace(replay=True, since=None, until=None, at="now")
    since, until, at = replay_range(args, now)
    assert at == now and since < at < until
