"""What the command line says: values it accepts, and messages that tell the truth
(issue 12, sections 1 and 2).  Pure where the text is pure; the real kernel and a
real taskstatsd where the message depends on who answers."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pytaskstats import ExitRecord, delayacct, taskstats
from pytaskstats.cli import args as cli_args
from pytaskstats.cli import history, listen, run, status
from pytaskstats.cli.main import build_parser
from pytaskstats.daemon import config
from pytaskstats.errors import AccessDenied, from_errno
from pytaskstats.fields import FIELDS
from pytaskstats.procfs import ProcSource
from pytaskstats.summary import summarize
from pytaskstats.textfmt import format_record, format_value, human_duration
from pytaskstats.top.sampler import Sampler

from .conftest import as_nobody, fixture_bytes
from .daemon_util import RunningDaemon

CLI = [sys.executable, "-m", "pytaskstats"]
NOW_NS = 1_764_944_000 * 10**9  # a fixed "now" for the time parser
S = 10**9


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=60,
                          check=False, env=env)


# ------------------------------------------------------------------ values accepted

@pytest.mark.parametrize(("text", "ago_s"), [("90s", 90), ("30m", 1800), ("1h", 3600),
                                             ("2d", 2 * 86400), ("1w", 7 * 86400),
                                             ("1y", 365 * 86400),
                                             ("1.5h", 5400), ("now", 0), (" 2h ", 7200),
                                             ("3h ago", 3 * 3600)])
def test_ages_count_back_from_now(text: str, ago_s: int) -> None:
    assert cli_args.when_arg(text, NOW_NS) == NOW_NS - ago_s * S


def test_dates_days_and_epoch_seconds() -> None:
    midnight = datetime.datetime.fromtimestamp(NOW_NS / S).replace(
        hour=0, minute=0, second=0, microsecond=0)
    assert cli_args.when_arg("today", NOW_NS) == int(midnight.timestamp()) * S
    assert cli_args.when_arg("yesterday", NOW_NS) == int(
        (midnight - datetime.timedelta(days=1)).timestamp()) * S
    local = datetime.datetime(2026, 12, 5, 14, 30)
    assert cli_args.when_arg("2026-12-05T14:30", NOW_NS) == int(local.timestamp()) * S
    assert cli_args.when_arg("2026-12-05 14:30", NOW_NS) == int(local.timestamp()) * S
    assert cli_args.when_arg("2026-12-05", NOW_NS) == int(
        datetime.datetime(2026, 12, 5).timestamp()) * S
    assert cli_args.when_arg("2026-12-05T00:00:00Z", NOW_NS) == 1_796_428_800 * S
    assert cli_args.when_arg("1764892800.5", NOW_NS) == 1_764_892_800 * S + S // 2


def test_a_time_of_day_is_the_last_such_moment() -> None:
    """`--at 03:14` (atop's -b hh:mm): today's, or yesterday's when today's is to come."""
    now = datetime.datetime.fromtimestamp(NOW_NS / S)
    earlier = now - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(minutes=5)
    assert earlier.date() == now.date() == later.date()  # the fixed now is mid-day
    for moment, back in ((earlier, 0), (later, 1)):
        want = moment.replace(second=0, microsecond=0) - datetime.timedelta(days=back)
        got = cli_args.when_arg(moment.strftime("%H:%M"), NOW_NS)
        assert got == int(want.timestamp()) * S, moment
    assert cli_args.when_arg("3:14:15", NOW_NS) <= NOW_NS
    for bad in ("24:00", "12:60", "12:5", "1:2:3"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli_args.when_arg(bad, NOW_NS)


@pytest.mark.parametrize("text", ["abc", "1mo", "", "1e99", "-5m", "99999999999999", "1h2m",
                                  "2026-13-01", "9999-12-31", "0x10", "1000000000w"])
def test_times_that_are_refused_say_what_is_accepted(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as err:
        cli_args.when_arg(text, NOW_NS)
    message = str(err.value)
    assert "\n" not in message
    assert cli_args.WHEN_FORMS in message or "1970 to 2262" in message


def test_numbers_are_bounded_at_parse_time() -> None:
    assert cli_args.id_arg("1") == 1 and cli_args.id_arg(str(2**32 - 1)) == 2**32 - 1
    assert cli_args.count_arg("0") == 0
    for bad in ("0", "-1", str(2**32), "9" * 30, "1.5", "", "0x10"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli_args.id_arg(bad)
    seconds = cli_args.seconds_arg(0.1, 10)
    assert seconds("0.5") == 0.5
    for bad in ("nan", "inf", "-1", "11", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            seconds(bad)


def test_numbers_are_ascii_and_getdelays_buffers_fit_an_int() -> None:
    for bad in ("\uff11\uff12", "\u0661"):  # fullwidth 12, Arabic-Indic 1
        with pytest.raises(argparse.ArgumentTypeError):
            cli_args.id_arg(bad)
    for size in (str(2**31), str(2**32 - 1)):
        done = _cli("getdelays", "-r", size, "-p", "1")
        assert done.returncode == 2 and "Invalid rcv buf size" in done.stderr, done.stderr


def test_history_names_fit_what_taskstatsd_accepts() -> None:
    for argv in (["history", "--comm", "x" * 256], ["history", "--cgroup", "/" * 4097],
                 ["history", "--comm", os.fsdecode(b"\xff")]):
        done = _cli(*argv)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr


def test_users_by_name_or_uid() -> None:
    assert cli_args.uid_arg("root") == 0 and cli_args.uid_arg("65534") == 65534
    for bad in ("nosuchuser", str(2**32 - 1), "", os.fsdecode(b"\xff")):
        with pytest.raises(argparse.ArgumentTypeError):
            cli_args.uid_arg(bad)
    args = build_parser().parse_args(["history", "--uid", "root"])
    assert args.uid == 0


def test_cgroup_filter_takes_either_form_and_must_exist() -> None:
    own = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()[-1].split(":", 2)[2]
    assert cli_args.cgroup_dir_arg(own) == own
    roots = cli_args._cgroup_roots()
    full = next(root + own for root in roots if os.path.isdir(root + own))
    assert cli_args.cgroup_dir_arg(full) == own
    with pytest.raises(argparse.ArgumentTypeError):
        cli_args.cgroup_dir_arg("/nonexistent-cgroup-for-this-test")


def test_sort_descending_as_help_shows() -> None:
    for argv in (["history", "--sort", "-blkio_delay_total"],
                 ["history", "--sort=-blkio_delay_total"]):
        args = build_parser().parse_args(
            cli_args.join_dash_values(argv, "history", ("--sort",)))
        assert args.sort == "-blkio_delay_total"
    shown = " ".join(_cli("history", "--help").stdout.split())
    assert "--sort -blkio_delay_total" in shown
    with pytest.raises(argparse.ArgumentTypeError):
        history.sort_arg("-nonsense")


def test_global_backend_takes_procfs_and_version_exists() -> None:
    assert build_parser().parse_args(["--backend", "procfs", "status"]).backend == "procfs"
    for command in ("pytaskstats", "pytaskstats.daemon"):
        done = subprocess.run([sys.executable, "-m", command, "--version"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stdout.split()[1][0].isdigit(), done


def test_taskstatsd_help_describes_every_option() -> None:
    text = " ".join(config.build_parser().format_help().split())
    for field in dataclasses.fields(config.Config):
        if field.name == "foreground":  # a flag of its own
            continue
        assert field.name in config.HELP, field.name
        assert " ".join(config.HELP[field.name].split()) in text
    assert "one of NORMAL, FULL" in text and "one of auto, kernel, procfs" in text
    assert "1 to 1048576 (default: 256)" in text  # max_clients: range and default
    bogus = subprocess.run([sys.executable, "-m", "pytaskstats.daemon", "--bogus"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert bogus.returncode == 2 and bogus.stderr.count("\n") == 1
    assert "--bogus (see 'taskstatsd --help')" in bogus.stderr


# ------------------------------------------------------------------ messages

def test_daemon_refusals_name_the_daemon_policy() -> None:
    mine = from_errno(errno.EPERM, "query", pid=1, daemon=True)
    assert isinstance(mine, AccessDenied)
    assert "taskstatsd's policy refused" in str(mine) and "CAP_NET_ADMIN" not in str(mine)
    assert "admin_group" in str(mine)
    assert "CAP_NET_ADMIN" in str(from_errno(errno.EPERM, "query", pid=1))


def test_status_says_an_unreachable_daemon_once(tmp_path: Path) -> None:
    sock = str(tmp_path / "none.sock")
    doc = {"backend": "daemon", "reason": "asked", "delayacct": False, "socket": sock,
           "daemon": None, "daemon_error": f"cannot reach taskstatsd at {sock}: gone"}
    text = status.format_status(doc)
    assert text.count(sock) == 1 and text.count("delay accounting is off") == 1
    done = _cli("--backend", "daemon", "--socket", sock, "status")
    assert done.returncode == 1 and f"cannot reach taskstatsd at {sock}" in done.stderr
    refused = {**doc, "daemon_error": "taskstatsd refused the connection: uid 65534 holds "
               "32 connections (max_clients_per_uid)"}
    text = status.format_status(refused)
    assert f"taskstatsd at {sock}: taskstatsd refused the connection: uid 65534" in text
    assert "not reachable" not in text


def test_delay_note_does_not_claim_zeros() -> None:
    assert "read 0" not in delayacct.OFF_NOTE and "not measured" in delayacct.OFF_NOTE


def test_procfs_record_claims_no_struct() -> None:
    text = format_record(ProcSource().pid(os.getpid()), "pid x", None)
    first = text.splitlines()[0]
    assert "struct taskstats v" not in first and "bytes" not in first and "/proc" in first
    assert "\n  version " not in text and "not available from /proc" in text


def test_begin_time_prints_as_a_date_and_long_durations_in_hours() -> None:
    btime = next(f for f in FIELDS if f.name == "ac_btime")
    shown = format_value(btime, 1_764_892_800)
    assert shown.startswith("1764892800 s since the epoch (2025-12-0")
    assert human_duration(3725) == "1h02m" and human_duration(2580 * 60 + 43.5) == "43h00m"
    assert human_duration(1000 * 3600) == "41d16h" and human_duration(150) == "2m30.0s"


def _records(n: int) -> list[ExitRecord]:
    base = taskstats.decode(fixture_bytes("exit_v16_dual.bin"), 27)[0]
    assert isinstance(base, ExitRecord)
    out = []
    for i in range(n):
        pid = 100 + i
        task = base.task._replace(ac_pid=pid, ac_tgid=pid, ac_ppid=99, ac_etime=1_001_000)
        out.append(ExitRecord(task=task, pid=pid, tgid=pid))
    return out


def test_run_total_row_reads_threads_in_processes_and_spans_every_row() -> None:
    records = _records(4)
    # the command lived 1.2 ms; its orphans (waited for) lived 1.001 s
    result = run.RunResult(["sh"], 0, 0.0012, records, exit_s=[0.001, 1.0, 1.0, 1.001])
    text = run.format_text(result, summarize(records), True)
    total = next(ln.split() for ln in text.splitlines() if ln.lstrip().startswith("TOTAL"))
    assert total[:5] == ["TOTAL", "4", "in", "4", "processes"]
    assert total[5] == "1.001s"  # the rows' span, not the command's 1.20ms
    assert "1 process " in run.format_text(run.RunResult(["x"], 0, 0.1, records[:1],
                                                         exit_s=[0.05]),
                                           summarize(records[:1]), True) + " "


def test_history_group_lines_print_their_key() -> None:
    row = {"exits": 3, "ac_comm": "make", "ac_utime": 10, "ac_stime": 0}
    assert " make " in history.format_row(row, "comm")
    assert "uid 0 (root)" in history.format_row({"exits": 1, "ac_uid": 0}, "uid")
    assert " /system.slice " in history.format_row({"exits": 1, "cgroup": "/system.slice"},
                                                   "cgroup")
    assert " all " in history.format_row({"exits": 9}, None)


@pytest.mark.kernel
def test_run_exits_like_a_shell_when_the_command_cannot_run(tmp_path: Path) -> None:
    plain = tmp_path / "not-executable"
    plain.write_text("data\n")
    cannot = _cli("run", "--", str(plain))
    assert cannot.returncode == 126 and "cannot execute (Permission denied)" in cannot.stderr
    missing = _cli("run", "--", str(tmp_path / "missing"))
    assert missing.returncode == 127 and "command not found" in missing.stderr
    assert "Traceback" not in cannot.stderr + missing.stderr


@pytest.mark.kernel
def test_run_prints_a_legend_under_its_table() -> None:
    done = _cli("run", "--", "/bin/true")
    assert done.returncode == 0
    assert run.LEGEND in done.stderr and "CPUWAIT waiting for a CPU" in done.stderr


def test_getdelays_uses_the_chosen_backend(tmp_path: Path) -> None:
    sock = str(tmp_path / "none.sock")
    done = _cli("--backend", "daemon", "--socket", sock, "getdelays", "-p", "1")
    assert done.returncode == 1 and f"cannot reach taskstatsd at {sock}" in done.stderr
    proc = _cli("--backend", "procfs", "getdelays", "-p", "1")
    assert proc.returncode == 1 and "not /proc" in proc.stderr


# ------------------------------------------------------------------ through taskstatsd

def test_unprivileged_messages_through_taskstatsd(daemon: RunningDaemon,
                                                  nobody_env: dict[str, str]) -> None:
    env = {**nobody_env, "TASKSTATS_SOCKET": daemon.socket}
    get = as_nobody(env, "-m", "pytaskstats", "get", "1")
    assert get.returncode == 1 and "taskstatsd's policy refused" in get.stderr, get.stderr
    assert "start taskstatsd" not in get.stderr
    gd = as_nobody(env, "-m", "pytaskstats", "--backend", "daemon", "getdelays", "-p", "1")
    assert gd.returncode == 1 and "taskstatsd's policy refused" in gd.stderr, gd.stderr
    nowhere = {**env, "TASKSTATS_SOCKET": "/nonexistent/taskstatsd.sock"}
    listen = as_nobody(nowhere, "-m", "pytaskstats", "listen", "-n", "1")
    assert listen.returncode == 1
    assert listen.stderr.count("no taskstatsd at /nonexistent") == 1, listen.stderr


def test_without_a_daemon_an_error_comes_alone(nobody_env: dict[str, str],
                                              tmp_path: Path) -> None:
    """Nobody, no taskstatsd: a failed query says what failed in one line, without the
    note on the fallback to /proc (which comes after an answer, with it)."""
    env = {**nobody_env, "TASKSTATS_SOCKET": str(tmp_path / "none.sock")}
    missing = f"/tmp/no-such-cgroup-{os.urandom(4).hex()}"  # nobody may look in /tmp
    for argv, said in [(["get", "4194305"], "no such task"),
                       (["cgroup", missing], "cannot open cgroup directory"),
                       (["getdelays", "-C", missing], "cannot open cgroup directory"),
                       (["getdelays", "-d", "-p", "1"], "run as root or start taskstatsd")]:
        done = as_nobody(env, "-m", "pytaskstats", *argv)
        assert done.returncode == 1 and said in done.stderr, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and "note" not in done.stderr, (argv, done.stderr)
    ok = as_nobody(env, "-m", "pytaskstats", "get", "1")
    assert ok.returncode == 0 and "note: no CAP_NET_ADMIN and no taskstatsd" in ok.stderr


def test_a_report_nobody_may_write_is_refused_before_the_run(nobody_env: dict[str, str]
                                                             ) -> None:
    done = as_nobody(nobody_env, "-m", "pytaskstats", "run", "--report", "/root/r.html", "--",
                     "true")
    assert done.returncode == 2 and "this user may not write in /root" in done.stderr, (
        done.stderr)


def test_getdelays_through_taskstatsd(daemon: RunningDaemon) -> None:
    done = _cli("--backend", "daemon", "--socket", daemon.socket, "getdelays", "-d", "-p",
                str(os.getpid()))
    assert done.returncode == 0, done.stderr
    assert f"PID\t{os.getpid()}" in done.stdout and "CPU" in done.stdout


def test_history_answers_through_taskstatsd(daemon: RunningDaemon, tmp_path: Path) -> None:
    cli = ["--socket", daemon.socket, "history"]
    empty = _cli(*cli, "--comm", "no-such-comm", "--since", "1h")
    assert empty.returncode == 0 and empty.stdout == ""
    assert "no rows match (--since 1h --comm no-such-comm)" in empty.stderr
    sort = _cli(*cli, "--sort", "-ac_utime", "--limit", "1", "--json")
    assert sort.returncode == 0, sort.stderr
    bad = _cli(*cli, "--sort", "nonsense")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nonsense" in bad.stderr
    since = _cli(*cli, "--since", "1e99")
    assert since.returncode == 2 and "Traceback" not in since.stderr
    json.loads(_cli("--socket", daemon.socket, "status", "--json").stdout)


class _PolicyClient:
    """A daemon-backend client whose policy refuses one of our own tasks."""

    backend = "daemon"

    def __init__(self, refused: int) -> None:
        self.refused = refused
        self.calls: list[bool] = []

    def pids(self, pids: list[int], *, skip_denied: bool = False) -> dict[int, object]:
        self.calls.append(skip_denied)
        if self.refused in pids and not skip_denied:
            raise AccessDenied("refused", pid=self.refused)
        return {p: object() for p in pids if p != self.refused}


def test_top_keeps_going_when_the_policy_refuses_one_own_task() -> None:
    me = os.getpid()
    fake = _PolicyClient(refused=me)
    sampler = Sampler(fake, listen=False)  # type: ignore[arg-type]
    got = sampler._query({me: me, 1: 1})
    assert set(got) == {1} and fake.calls == [False, True]  # ours (root's) but me
    assert sampler.scope_note == "own tasks only (taskstatsd policy)"


@pytest.mark.parametrize(("argv", "said"), [
    (["get", "1", "--backend", "procfs"], "global options (--backend, --socket) go before"),
    (["--json", "get", "1"], "taskstats get: unrecognized arguments: --json; the command's "
     "own options (--json, ...) go after it (see 'taskstats get --help')"),
    (["get", "--bogus", "1"], "taskstats get: unrecognized arguments: --bogus (see "
     "'taskstats get --help')"),
    (["get", "--bogus"], "taskstats get: unrecognized arguments: --bogus (see "
     "'taskstats get --help')"),  # said before "one of the arguments ... is required"
    (["top", "-u"], "taskstats top: argument -u/--user: expected one argument (see "),
    (["history", "--since", "-1h"], "written with '=' (--OPTION=VALUE)"),
    # a mistyped global option: its value was called an invalid command ('daemon')
    (["--backnd", "daemon", "get", "1"], "taskstats: unrecognized arguments: --backnd "
     "(see 'taskstats --help')"),
    (["--sockt", "/run/x.sock", "history"], "taskstats: unrecognized arguments: --sockt "),
])
def test_misplaced_options_say_where_they_go(argv: list[str], said: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A newcomer's slips: an option on the wrong side of the command, a value that
    looks like an option.  One line, exit 2, and what to do."""
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and said in err and err.count("\n") == 1


def test_a_mistyped_listen_address_is_a_usage_error_without_the_exporter_extra() -> None:
    """`exporter --listen abc` is the user's slip (2), not a missing package (1)."""
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from pytaskstats.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "exporter", "--listen", "abc"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "give ADDR:PORT" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(("argv", "said"), [
    (["history", "--totals", "--group-by", "comm"], "drop --group-by, or drop --totals"),
    (["history", "--sort", "exits"], "add --group-by"),
    (["history", "--sort=-exits"], "add --group-by"),
])
def test_history_options_that_do_not_go_together(argv: list[str], said: str,
                                                 tmp_path: Path) -> None:
    """Said by the command line (2), before asking taskstatsd (which is not there)."""
    done = _cli("--socket", str(tmp_path / "none.sock"), *argv)
    assert done.returncode == 2 and said in done.stderr and done.stderr.count("\n") == 1


def test_refused_values_are_quoted_as_typed() -> None:
    """Undecodable argv bytes read back as \\xff, never as Python's '\\udcff'."""
    done = _cli("history", "--since", os.fsdecode(b"\xffx"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "'\\xffx'" in done.stderr and "udc" not in done.stderr


def test_epoch_seconds_past_2262_are_out_of_range_not_unknown() -> None:
    for text in ("99999999999", "99999999999999999", "9" * 20):
        with pytest.raises(argparse.ArgumentTypeError, match="1970 to 2262"):
            cli_args.when_arg(text, NOW_NS)


def test_history_limit_zero_is_refused_not_reported_as_an_empty_journal(
        tmp_path: Path) -> None:
    """--limit 0 used to ask for nothing, then say the journal held no rows."""
    done = _cli("--socket", str(tmp_path / "none.sock"), "history", "--limit", "0")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "from 1 to" in done.stderr


@pytest.mark.parametrize(("term", "said"), [
    ("dumb", "'dumb' (TERM) cannot place the cursor"),
    ("no-such-terminal", "'no-such-terminal' (TERM) is unknown to terminfo"),
    ("", "TERM is not set"),
])
def test_top_on_a_terminal_curses_cannot_drive_says_so(term: str, said: str) -> None:
    """On a terminal (a pty here), TERM=dumb drew a blank screen and an unknown TERM
    was called an internal error (a bug); both are one line and status 2, like no
    terminal at all, before any backend is opened."""
    controller, tty = os.openpty()
    try:
        done = subprocess.run([*CLI, "--socket", "/nonexistent/none.sock", "top"],
                              stdin=tty, stdout=tty, stderr=subprocess.PIPE, text=True,
                              timeout=60, check=False, env={**os.environ, "TERM": term})
    finally:
        os.close(tty)
        os.close(controller)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert said in done.stderr and "use -b" in done.stderr and "bug" not in done.stderr


def test_a_full_output_device_is_said_as_such() -> None:
    """stdout on /dev/full: one line naming the output, status 1 (it was a bare
    'taskstats: No space left on device')."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([*CLI, "--backend", "procfs", "get", "--json",
                               str(os.getpid())], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "cannot write the output: No space left on device" in done.stderr


def test_getdelays_dies_of_a_closed_pipe_like_the_c_tool(daemon: RunningDaemon) -> None:
    """`getdelays ... | head -1` with the reader gone: SIGPIPE as every other command
    (it exited 1 without a word)."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([*CLI, "getdelays", "-d", "-p", str(os.getpid())],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
                              check=False, env={**os.environ, "TASKSTATS_SOCKET": daemon.socket})
    finally:
        os.close(write)
    assert done.returncode == -signal.SIGPIPE, (done.returncode, done.stderr)


def test_root_advice_says_a_namespace_root_does_not_count(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """In `unshare --user --map-root-user` the user is root and was told 'run as root'."""
    def refused(*_: object, **__: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(Path, "write_text", refused)
    with pytest.raises(AccessDenied) as err:
        delayacct.set_enabled(True)
    assert "not in a container or user namespace" in str(err.value)
    denied = from_errno(errno.EPERM, "query pid 1")
    assert "not in a container or user namespace" in str(denied), str(denied)


# ------------------------------------------------------------------ diff, traces (review r2)

def _run_file(path: Path, wall: float, **process: object) -> Path:
    """A `run --json`-shaped file of one process, ``process`` overriding its fields."""
    proc = {"comm": "cc1", "ac_etime": int(wall * 1e6), "ac_utime": 1000, "ac_stime": 0,
            "cpu_delay_total": 1000, "blkio_delay_total": None, "memory_delay_total": None,
            "read_bytes": 0, "write_bytes": 0, **process}
    doc = {"command": ["make"], "exit_status": 0, "wall_s": wall, "processes": [proc]}
    path.write_text(json.dumps(doc))  # json writes NaN and Infinity as Python reads them
    return path


@pytest.mark.parametrize(("field", "value", "said"), [
    ("ac_etime", float("nan"), "NaN is not a number"),
    ("cpu_delay_total", float("inf"), "Infinity is not a number"),
    ("read_bytes", -4096, "read_bytes is -4096"),
    ("ac_utime", 10**400, "ac_utime is huge"),  # too large for a float: OverflowError
], ids=["nan", "inf", "negative", "huge-int"])
def test_diff_refuses_numbers_no_run_measures(tmp_path: Path, field: str, value: object,
                                              said: str) -> None:
    """A damaged file made diff claim `regression: wall went from 0.003s to nans (+nan%)`
    (exit 3) or end in 'internal error (OverflowError ...)': it is an error in the file."""
    good = _run_file(tmp_path / "a.json", 1.0)
    bad = _run_file(tmp_path / "b.json", 1.0, **{field: value})
    for first, second in ((good, bad), (bad, good)):
        done = _cli("diff", str(first), str(second), "--fail-above", "5", "--on",
                    "wall" if field == "ac_etime" else "cpu")
        assert done.returncode == 1, (field, done.returncode, done.stderr)
        assert done.stderr.count("\n") == 1 and "internal error" not in done.stderr
        assert said in done.stderr and "b.json" in done.stderr, done.stderr
    exit_inf = tmp_path / "c.json"
    exit_inf.write_text(json.dumps({**json.loads(good.read_text()),
                                    "exit_status": float("inf")}))
    done = _cli("diff", str(good), str(exit_inf))
    assert done.returncode == 1 and "Infinity" in done.stderr, done.stderr
    assert "internal error" not in done.stderr


def test_diff_regression_from_zero_says_so_not_inf_percent(tmp_path: Path) -> None:
    """A field that was 0 in A (nothing read: cached) and grew in B: 'from nothing', not
    '+inf%'."""
    a = _run_file(tmp_path / "a.json", 1.0, read_bytes=0)
    b = _run_file(tmp_path / "b.json", 1.0, read_bytes=8192)
    done = _cli("diff", str(a), str(b), "--fail-above", "10", "--on", "read")
    assert done.returncode == 3, done.stderr
    assert "read went from 0B to 8192B (from nothing, above 10%)" in done.stderr
    assert "inf" not in done.stderr


def test_trace_file_messages_suggest_a_trace_and_write_errors_say_what_to_do(
        tmp_path: Path) -> None:
    """`--trace DIR` suggested 'report.html'; a report or trace on a full device said
    only 'No space left on device'."""
    for parse in (cli_args.trace_file_arg, cli_args.output_file_arg):
        with pytest.raises(argparse.ArgumentTypeError) as err:
            parse(str(tmp_path))
        wanted = "trace.json" if parse is cli_args.trace_file_arg else "report.html"
        assert f"e.g. {wanted}" in str(err.value)
    parser = build_parser()
    for words in (["run", "--trace"], ["history", "--trace"]):
        subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub = subs.choices[words[0]]
        action = next(a for a in sub._actions if words[1] in a.option_strings)
        assert action.type is cli_args.trace_file_arg, words
    good = _run_file(tmp_path / "a.json", 1.0)
    done = _cli("diff", str(good), str(good), "--report", "/dev/full")
    assert done.returncode == 1
    assert done.stderr.strip() == ("taskstats diff: cannot write /dev/full: No space left on "
                                   "device: free space on its device, or give a file on "
                                   "another one"), done.stderr


def test_diff_names_json_lines_and_an_unknown_exit_status(tmp_path: Path) -> None:
    """`history --json` output given to diff said 'not JSON (Extra data: line 2 column
    1 ...)', though every line is JSON; a trace without an exit status said 'exit None'."""
    good = _run_file(tmp_path / "a.json", 1.0)
    lines = tmp_path / "lines.json"
    lines.write_text('{"comm": "make"}\n{"comm": "cc1"}\n')
    done = _cli("diff", str(good), str(lines))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "one JSON document per line" in done.stderr and "history --json" in done.stderr
    assert "not JSON" not in done.stderr
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)  # was 'internal error (RecursionError ...)'
    done = _cli("diff", str(deep), str(good))
    assert done.returncode == 1 and "nested too deeply" in done.stderr, done.stderr
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"traceEvents": [], "otherData": {"wall_s": 1.0}}))
    page = tmp_path / "d.html"
    done = _cli("diff", str(bare), str(good), "--report", str(page))
    assert done.returncode == 0, done.stderr
    assert f"A: {bare} (?, exit ?)" in done.stdout.splitlines()[0], done.stdout
    assert "None" not in done.stdout and "None" not in page.read_text()
    assert "(exit status ?)" in page.read_text()


def test_taskstatsd_out_of_range_settings_say_where_they_were_given(tmp_path: Path) -> None:
    """`max_wait_ms = -1` in a config file said 'max_wait_ms = -1.0: want 0 .. 60000',
    without the file (the same line as for --max-wait-ms), with a float for an integer."""
    conf = tmp_path / "taskstatsd.conf"
    conf.write_text("[taskstatsd]\nmax_wait_ms = -1\nsynchronous = fast\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(["--config", str(conf)])
    assert str(err.value) == f"config file {conf}: max_wait_ms = -1: want 0 .. 60000"
    with pytest.raises(config.ConfigError) as err:
        config.load(["--config", os.devnull, "--max-wait-ms", "1e9"])
    assert str(err.value) == "--max-wait-ms: max_wait_ms = 1000000000: want 0 .. 60000"
    conf.write_text("[taskstatsd]\nsynchronous = fast\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(["--config", str(conf), "--procfs-interval-s", "0.001"])
    assert str(err.value).startswith("--procfs-interval-s: procfs_interval_s = 0.001: want 0.01")
    with pytest.raises(config.ConfigError) as err:
        config.load(["--config", str(conf)])
    assert str(err.value).startswith(f"config file {conf}: synchronous = 'FAST': want one of")


def test_undecodable_file_names_are_shown_as_bytes(tmp_path: Path) -> None:
    """A file name of non-UTF-8 bytes was said as 'trace written to t\\udcff.json' (or
    'cannot read \\udcfe.json'): Python's surrogate, not the byte; man said '\\\\xff'."""
    good = _run_file(tmp_path / "a.json", 1.0)
    odd = os.fsdecode(bytes(tmp_path) + b"/\xff.json")
    Path(odd).write_bytes(good.read_bytes())
    done = _cli("diff", odd, str(good), "--report", os.fsdecode(bytes(tmp_path) + b"/\xfe.html"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"A: {tmp_path}/\\xff.json ("), done.stdout
    assert done.stderr == f"taskstats diff: report written to {tmp_path}/\\xfe.html\n"
    missing = _cli("diff", os.fsdecode(bytes(tmp_path) + b"/\xfd.json"), str(good))
    assert missing.stderr.startswith(f"taskstats diff: cannot read {tmp_path}/\\xfd.json:")
    assert "udc" not in done.stderr + missing.stderr + done.stdout
    page = _cli("man", os.fsdecode(b"\xff"))
    assert page.returncode == 2 and page.stderr.startswith("taskstats man: no page '\\xff';")


class _StatusOnly:
    """A client whose taskstatsd answers STATUS with ``doc``."""

    def __init__(self, backend: str, doc: dict[str, object]) -> None:
        self.backend, self.doc = backend, doc

    def status(self) -> dict[str, object]:
        return self.doc


def test_listen_says_when_taskstatsd_sends_only_your_own_exits() -> None:
    """As nobody, `taskstats listen` through taskstatsd waited in silence: its policy
    sends a non-admin only the exits of its own processes (`status` says so; listen
    did not)."""
    def note(backend: str, admin: bool, policy: str, why: str = "") -> str | None:
        doc = {"client": {"uid": 65534, "admin": admin},
               "exit_policy": {"non_admin_exits": policy, "why": why}}
        return listen.scope_note(_StatusOnly(backend, doc))  # type: ignore[arg-type]
    own = note("daemon", False, "own")
    assert own is not None and "your own processes only (uid 65534" in own
    off = note("daemon", False, "none", "no proc connector")
    assert off is not None and "no exits" in off and "(no proc connector)" in off
    assert note("daemon", True, "own") is None  # an admin sees every exit
    assert note("kernel", False, "own") is None  # the kernel sends every exit


def test_an_output_file_never_overwrites_an_input_or_the_other_output(tmp_path: Path) -> None:
    """`diff j1.json j2.json --report j2.json` replaced the run j2.json with the HTML
    page; `run --trace x --report x` wrote both and said both were written (the trace
    had overwritten the report)."""
    good = _run_file(tmp_path / "a.json", 1.0)
    other = _run_file(tmp_path / "b.json", 2.0)
    kept = other.read_bytes()
    link = tmp_path / "link.json"
    link.symlink_to(other)
    for report in (str(other), str(link), f"{tmp_path}/./b.json"):
        done = _cli("diff", str(good), str(other), "--report", report)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "is a run compared: it would be overwritten" in done.stderr
        assert other.read_bytes() == kept
    marker = tmp_path / "ran"
    same = _cli("run", "--trace", str(tmp_path / "x"), "--report", f"{tmp_path}/./x", "--",
                "touch", str(marker))
    assert same.returncode == 2 and same.stderr.count("\n") == 1, same.stderr
    assert "both name" in same.stderr and not marker.exists()  # refused before running


def test_an_output_file_that_is_stdouts_file_is_refused(tmp_path: Path) -> None:
    """`run --json --trace j.json -- make > j.json`: the trace replaced the file stdout
    was writing, and the run's JSON went to the unlinked inode (lost, without a word)."""
    good = _run_file(tmp_path / "a.json", 1.0)
    out = tmp_path / "out.json"
    marker = tmp_path / "ran"
    for argv in (["diff", str(good), str(good), "--report", str(out)],
                 ["run", "--json", "--trace", str(out), "--", "touch", str(marker)],
                 ["run", "--report", str(out), "--", "touch", str(marker)]):
        with out.open("w") as stdout:
            done = subprocess.run([*CLI, *argv], stdout=stdout, stderr=subprocess.PIPE,
                                  text=True, timeout=60, check=False)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (argv, done.stderr)
        assert "is the file stdout is redirected to" in done.stderr, done.stderr
        assert not marker.exists()
    with out.open("w") as stdout:  # stdout asked for by name: written there, as before
        done = subprocess.run([*CLI, "diff", str(good), str(good), "--report", "/dev/stdout"],
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60,
                              check=False)
    assert done.returncode == 0, done.stderr
    assert cli_args.stdout_clash("--trace", str(good)) is None  # stdout is not that file
    assert cli_args.stdout_clash("--trace", None) is None
