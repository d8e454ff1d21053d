"""Property: every argument vector gets a clear answer from ``taskstats``, never a
traceback.  Vectors for every subcommand mix valid options with hostile values
(negative, huge, empty, non-numbers, undecodable bytes), unknown options and stray
arguments; each runs in-process through ``main(argv)`` with its output captured.

Nothing here may block, write outside tmp_path, switch a global or run a command:
the loops of listen/top/exporter, the command of run and getdelays -c/-l, the
report writers and the delay accounting switch are stubbed at their seams.  The
answer must be status 0, 1 or 2, a message on stderr for 1 and 2 and, for a usage
error, exactly one line (getdelays keeps its drop-in usage block).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytaskstats import ExitRecord, delayacct, taskstats
from pytaskstats import client as client_mod
from pytaskstats.cli import exporter, getdelays, main, parsewalk, run, top
from pytaskstats.errors import TaskstatsError

from .conftest import fixture_bytes

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

HOSTILE = ["", " ", "-", "--", "0", "-1", "-3", "1", "2", "3.5", "-5", "nan", "inf", "-inf",
           "1e99", "99999999999999999999", str(2**31), str(2**32 - 1), str(2**32), str(2**63),
           "abc", "1w", "1y", "now",
           "yesterday", "2026-12-05", "2026-12-05T14:30", "0x10", "\uff11\uff12",
           "-blkio_delay_total", "--json", "-h", "root", "nosuchuser", "/nonexistent", "/",
           "0-3,5", "0-99999",
           "a=b", "x" * 300]
_undecodable = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b).map(
    os.fsdecode)  # surrogateescape: what Python makes of non-UTF-8 argv
_text = st.text(st.characters(blacklist_characters="\0"), max_size=20)  # no surrogates
VALUE = st.one_of(st.sampled_from(HOSTILE), st.integers().map(str),
                  st.floats().map(str), _text, _undecodable)
# values of options that write a file: relative names only (cwd is tmp_path)
FILE_VALUE = st.one_of(st.sampled_from(["out", "", "-", "d/x", "x" * 300]),
                       _undecodable.map(lambda s: s.replace("/", "_")))

FLAGS: dict[str, list[str]] = {
    "get": ["--json"],
    "listen": ["--per-cpu", "--json"],
    "run": ["--json", "--wait-all", "--critical-path"],
    "cgroup": ["--json"],
    "delayacct": [],
    "status": ["--json"],
    "history": ["--totals", "--json"],
    "top": ["-b", "--json", "-r", "-H", "-g", "-o", "--no-exits", "--tree", "--full-command",
            "--replay"],
    "exporter": [],
    "diff": ["--json"],
    "man": ["--list"],
    "completion": [],
}
OPTIONS: dict[str, list[str]] = {
    "get": ["--tgid"],
    "listen": ["--cpus", "-n", "--format", "--max-wait-ms"],
    "run": [],
    "cgroup": [],
    "delayacct": [],
    "status": [],
    "history": ["--since", "--until", "--comm", "--uid", "--pid", "--cgroup", "--group-by",
                "--sort", "--limit", "--at", "--kind"],
    "top": ["-n", "-d", "-s", "-u", "-c", "--cgroup", "-P", "--retain", "--since", "--until",
            "--at"],
    "exporter": ["--listen", "--interval", "--group", "--cgroup-depth", "--max-series"],
    "diff": ["--fail-above", "--on", "--limit"],
    "man": [],
    "completion": [],
}
FILE_OPTIONS = {"run": ["--report", "--trace"], "history": ["--report", "--trace"],
                "diff": ["--report"]}
GETDELAYS = ["-d", "-i", "-q", "-v", "-l", "-p", "-t", "-C", "-m", "-r", "-w", "-c", "-x"]

# the files diff is given (written in tmp_path): runs and traces, whole or damaged, and
# what a newcomer mistakes for one; a damaged number once made a false regression (exit
# 3 with 'nans') or an 'internal error', deep nesting a RecursionError
_PROC = {"comm": "cc1", "ac_etime": 500_000, "ac_utime": 400_000, "ac_stime": 0,
         "cpu_delay_total": 10**6, "blkio_delay_total": None, "memory_delay_total": None,
         "read_bytes": 0, "write_bytes": 4096}
_RUN = {"command": ["make"], "exit_status": 0, "wall_s": 0.5, "processes": [_PROC]}
_TRACE = {"traceEvents": [{"ph": "X", "cat": "process", "name": "cc1 7", "ts": 0,
                           "dur": 500_000, "pid": 7, "tid": 7,
                           "args": {"comm": "cc1", "cpu_s": 0.4, "cpu_wait_s": 0.001}}],
          "otherData": {"command": ["make"], "exit_status": 0, "wall_s": 0.5}}
DIFF_FILES: dict[str, bytes] = {
    "run.json": json.dumps(_RUN).encode(),
    "slower.json": json.dumps({**_RUN, "wall_s": 0.9}).encode(),
    "trace.json": json.dumps(_TRACE).encode(),
    "nan.json": json.dumps({**_RUN, "wall_s": float("nan")}).encode(),
    "inf.json": json.dumps({**_RUN, "processes": [{**_PROC, "ac_utime": 1e400}]}).encode(),
    "huge.json": json.dumps({**_RUN, "exit_status": 10**400}).encode(),
    "negative.json": json.dumps({**_RUN, "processes": [{**_PROC, "read_bytes": -1}]}).encode(),
    "strings.json": json.dumps({**_RUN, "wall_s": "0.5"}).encode(),
    "lines.json": b'{"comm": "a"}\n{"comm": "b"}\n',
    "empty.json": b"",
    "latin1.json": b"\xff\xfe{}",
    "array.json": b"[]",
    "deep.json": b"[" * 100_000,
    "dir.json": b"",  # made a directory
}
DAMAGED = {"nan.json", "inf.json", "huge.json", "negative.json"}


def _pieces(command: str) -> st.SearchStrategy[list[str]]:
    """One option (with a hostile value), a flag, an unknown option or a stray word."""
    choices = [st.sampled_from(FLAGS[command]).map(lambda f: [f])] if FLAGS[command] else []
    if OPTIONS[command]:
        choices.append(st.tuples(st.sampled_from(OPTIONS[command]), VALUE).map(list))
        choices.append(st.tuples(st.sampled_from(OPTIONS[command]), VALUE).map(
            lambda p: [f"{p[0]}={p[1]}"]))
    for option in FILE_OPTIONS.get(command, []):
        choices.append(st.tuples(st.just(option), FILE_VALUE).map(list))
    choices.append(st.sampled_from(["--bogus", "-Z", "--", "--help"]).map(lambda f: [f]))
    choices.append(VALUE.map(lambda v: [v]))
    return st.one_of(choices)


@st.composite
def argvs(draw: st.DrawFn, command: str) -> list[str]:
    """``[global options] command [pieces]``."""
    head: list[str] = []
    if draw(st.booleans()):
        head += ["--backend", draw(st.sampled_from(["auto", "kernel", "daemon", "procfs",
                                                     "bogus", ""]))]
    if command == "diff" and draw(st.booleans()):  # two files, whole or damaged
        head_files = draw(st.lists(st.sampled_from(sorted(DIFF_FILES)), min_size=2,
                                   max_size=2))
    else:
        head_files = []
    parts = draw(st.lists(_pieces(command), max_size=4))
    return [*head, command, *head_files, *(word for part in parts for word in part)]


@st.composite
def getdelays_argvs(draw: st.DrawFn) -> list[str]:
    """getdelays' own getopt-style options with hostile values."""
    out: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        option = draw(st.sampled_from(GETDELAYS))
        out.append(option)
        if option in ("-p", "-t", "-C", "-m", "-r", "-c"):
            out.append(draw(VALUE))
        elif option == "-w":
            out.append(draw(FILE_VALUE))
    return ["getdelays", *out]


# ------------------------------------------------------------------ seams

def _exit_events() -> list[Any]:
    rec = taskstats.decode(fixture_bytes("exit_v16_dual.bin"), 27)[0]
    assert isinstance(rec, ExitRecord)
    return [rec, rec]


class _FakeListener:
    """Two fixture exits, then the end (a real listener waits forever)."""

    fds: tuple[int, ...] = ()
    lost = 0
    source = "kernel"

    def __enter__(self) -> _FakeListener:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __iter__(self) -> Iterator[Any]:
        return iter(_exit_events())

    def batches(self) -> Iterator[list[Any]]:
        return iter([_exit_events()])

    def close(self) -> None:
        return None


def _fake_listen(self: Any, cpus: Any = None, **_: Any) -> _FakeListener:
    if self.backend == "procfs":
        raise TaskstatsError("exit records need the kernel or taskstatsd")
    return _FakeListener()


def _fake_execute(command: list[str], listener: Any, *, wait_all: bool) -> run.RunResult:
    if command[0].startswith("/nonexistent"):
        raise run.CannotRun(command[0], FileNotFoundError(2, "No such file or directory"))
    return run.RunResult(command, 0, 0.01, _exit_events()[:1], exit_s=[0.005])


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Stub every seam that blocks, runs a command, writes outside tmp_path or switches
    a global; no taskstatsd answers (its socket does not exist)."""
    monkeypatch.chdir(tmp_path)
    for name, content in DIFF_FILES.items():
        if name == "dir.json":
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_bytes(content)
    monkeypatch.setenv("TASKSTATS_SOCKET", str(tmp_path / "no-daemon.sock"))
    monkeypatch.setattr(client_mod.Client, "listen", _fake_listen)
    monkeypatch.setattr(run, "execute", _fake_execute)
    monkeypatch.setattr(run, "_save", lambda *a: True)
    monkeypatch.setattr(top, "Sampler", lambda *a, **k: _Closing())
    monkeypatch.setattr(top, "run_batch", lambda *a, **k: 0)
    monkeypatch.setattr(top, "run_screen", lambda *a, **k: 0)
    monkeypatch.setattr(exporter, "_serve", lambda *a: None)
    monkeypatch.setattr(getdelays, "run_command", _no_command)
    monkeypatch.setattr(getdelays, "listen", lambda *a, **k: None)
    monkeypatch.setattr(delayacct, "set_enabled", lambda on: None)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGPIPE, signal.SIGINT,
                                                        signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Closing:
    def close(self) -> None:
        return None


def _no_command(argv: list[str], rcvbuf: int, via: str | None = None) -> ExitRecord:
    raise TaskstatsError(f"cannot run {argv[0]!r}: stubbed in this test")


def _run_main(argv: list[str]) -> tuple[object, str, str]:
    """``main(argv)``: stdout strict UTF-8 (as in a UTF-8 locale), stderr as Python's;
    the status, or what escaped main instead (the property forbids that)."""
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="backslashreplace")
    code: object
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main.main(argv)
        except BaseException as exc:  # reported by the assertions
            code = f"raised {exc!r}"
        out.flush()
        err.flush()
    return (code, out_bytes.getvalue().decode("utf-8", "replace"),
            err_bytes.getvalue().decode("utf-8", "replace"))


def _check(argv: list[str]) -> None:
    code, _out, err = _run_main(argv)
    regression = "diff" in argv and code == 3 and "taskstats diff: regression: " in err
    assert code in (0, 1, 2) or regression, (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert not (regression and DAMAGED & set(argv)), (argv, err)  # damage is an error
    if code:
        assert err.strip(), (argv, code)
    if code == 2 and "getdelays" not in argv:  # getdelays: its drop-in usage block
        assert err.strip().count("\n") == 0, (argv, err)


# ------------------------------------------------------------------ properties

@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_any_argument_vector_gets_an_answer(command: str, stubbed: None) -> None:
    @SETTINGS
    @given(argvs(command))
    def check(argv: list[str]) -> None:
        _check(argv)

    check()


def test_any_getdelays_vector_gets_an_answer(stubbed: None) -> None:
    @SETTINGS
    @given(getdelays_argvs())
    def check(argv: list[str]) -> None:
        _check(argv)

    check()


@pytest.mark.parametrize("argv", [["get", "0"], ["get", "-1"], ["get", "9" * 20],
                                  ["get", "--tgid", "-5"], ["listen", "--cpus", "abc"],
                                  ["listen", "--cpus", ""], ["history", "--since", "abc"],
                                  ["history", "--since", "1mo"], ["history", "--since", "1e99"],
                                  ["top", "-u", "nosuchuser"], ["top", "--cgroup", "/nonexistent"],
                                  ["top", "-P", "-3"], ["top", "--retain", "-5"],
                                  ["top", "-n", "-1"], ["top", "-d", "inf"],
                                  ["history", "--uid", "nosuchuser"]])
def test_issue_inputs_are_one_line_usage_errors(argv: list[str], stubbed: None) -> None:
    code, out, err = _run_main(argv)
    assert code == 2 and out == "" and err.count("\n") == 1, (code, err)
    assert err.startswith(f"taskstats {argv[0]}: argument ") and "--help" in err


def test_usage_errors_name_what_is_accepted(stubbed: None) -> None:
    _, _, err = _run_main(["history", "--since", "abc"])
    assert "90s, 30m, 1h, 2d, 1w" in err and "yesterday" in err and "ISO date" in err
    _, _, err = _run_main(["get", "0"])
    assert "from 1 to 4294967295" in err
    _, _, err = _run_main(["top", "-u", "nosuchuser"])
    assert "no such user; give a user name or a uid" in err


def test_main_reports_unexpected_errors_as_bugs(stubbed: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> int:
        raise KeyError("boom")

    monkeypatch.setattr(run, "execute", broken)
    monkeypatch.delenv("TASKSTATS_DEBUG", raising=False)
    code, _, err = _run_main(["run", "--", "true"])
    assert code == 1 and "internal error (KeyError: 'boom')" in err and "bug" in err
    assert err.count("\n") == 1


def test_version(stubbed: None) -> None:
    code, out, _ = _run_main(["--version"])
    assert code == 0 and out.startswith("taskstats ")


def test_stdout_is_clean_of_undecodable_bytes_even_with_them_in_argv(stubbed: None) -> None:
    name = os.fsdecode(b"\xff\xfe")
    for argv in (["cgroup", name], ["history", "--comm", name], ["get", name]):
        code, _, err = _run_main(argv)
        assert code in (1, 2) and "Traceback" not in err, (argv, err)
    assert sys.getfilesystemencoding() == "utf-8"


def test_the_vectors_cover_every_subcommand_and_option() -> None:
    """Each option the parsers define is drawn by the property (a new one cannot hide):
    the parsers as the man pages and completions see them (parsewalk)."""
    taskstats, _ = parsewalk.commands(main.build_parser())
    subs = {c.path[-1]: c for c in taskstats.commands if c.path[-1] != "getdelays"}
    assert set(subs) == set(OPTIONS)
    for name, command in subs.items():
        drawn = {*FLAGS[name], *OPTIONS[name], *FILE_OPTIONS.get(name, [])}
        # one spelling per option is enough (-n / --iterations); --help is not drawn
        missing = [o.flags for o in command.options
                   if "--help" not in o.flags and not drawn.intersection(o.flags)]
        assert not missing, f"{name}: options the property never draws: {missing}"
