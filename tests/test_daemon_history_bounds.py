"""History requests are bounded before they run (issue 11, F5): at most
history_max_rows rows, whatever their limit, the cut said; a query past its time
budget is answered ETIME while the daemon keeps serving; SIGTERM ends a query."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytaskstats import Client, extproto
from pytaskstats import netlink as nl
from pytaskstats.daemon.history import Shares
from pytaskstats.daemon.journal_schema import MIGRATIONS, apply

from .conftest import NOBODY_PYTHON, WAITS_FOR_EXITS, as_nobody, wait_until
from .daemon_util import RunningDaemon

pytestmark = [pytest.mark.kernel, WAITS_FOR_EXITS]

NOBODY = 65534
CAP = 50
# the journal's rows (the live exits are newer)
OURS: dict[str, object] = {"until_ns": 10**18 + 4 * CAP * 10**9}


def _journal(state: Path, rows: int) -> None:
    """A journal of ``rows`` exits of nobody (each its own comm and second), all
    visible to their owner, written before the daemon starts."""
    state.mkdir(mode=0o700)
    with sqlite3.connect(state / "journal.sqlite3") as conn:
        for statement in (s for migration in MIGRATIONS for s in migration):
            apply(conn, statement)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.executemany(
            "INSERT INTO exits (time_ns, pid, ac_comm, ac_uid, ac_gid, ac_utime, "
            "owner_sees, pidns) VALUES (?, ?, ?, ?, ?, ?, 1, '')",
            ((10**18 + i * 10**9, 1000 + i, f"c{i}", NOBODY, NOBODY, i)
             for i in range(rows)))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A daemon whose journal holds 4 * CAP rows, answering at most CAP."""
    state = tmp_path_factory.mktemp("small") / "state"
    _journal(state, 4 * CAP)
    d = RunningDaemon(state, "--history-max-rows", str(CAP))
    try:
        yield d
    finally:
        d.close()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A daemon whose journal holds 200,000 rows of nobody; 1 ms for nobody's
    queries, an hour for root's."""
    state = tmp_path_factory.mktemp("big") / "state"
    _journal(state, 200_000)
    d = RunningDaemon(state, "--history-max-ms", "1", "--history-admin-max-ms", "3600000")
    try:
        yield d
    finally:
        d.close()


def _history(daemon: RunningDaemon, params: dict[str, Any]) -> extproto.Rows:
    with Client("daemon", socket_path=daemon.socket) as c:
        rows: extproto.Rows = c.history(**params)
    return rows


@pytest.mark.parametrize("params", [{}, {"limit": 2**63 - 1}, {"group_by": "comm"},
                                    {"bucket_s": 1}, {"sort": "-ac_utime"}])
def test_an_answer_larger_than_the_cap_is_cut_to_it_and_says_so(
        small: RunningDaemon, params: dict[str, object]) -> None:
    rows = _history(small, {**OURS, **params})
    assert len(rows) == CAP
    assert "cut at 50 rows" in rows.note
    if params.get("sort") == "-ac_utime":  # the top rows, not any 50
        assert [r["ac_utime"] for r in rows] == list(range(4 * CAP - 1, 3 * CAP - 1, -1))


@pytest.mark.parametrize(("params", "count"), [
    ({"limit": CAP}, CAP), ({"limit": 3}, 3), ({"totals": True}, 1),
    ({"since_ns": 10**18 + 3 * CAP * 10**9}, CAP)])
def test_an_answer_within_the_cap_is_whole_and_says_nothing(
        small: RunningDaemon, params: dict[str, object], count: int) -> None:
    rows = _history(small, {**OURS, **params})
    assert len(rows) == count
    assert rows.note == ""


def test_the_cli_says_the_answer_was_cut(small: RunningDaemon,
                                         nobody_env: dict[str, str]) -> None:
    """As nobody (the rows are its own): CAP lines, and the cut on stderr."""
    done = as_nobody(nobody_env, "-m", "pytaskstats", "--socket", small.socket, "history",
                     "--json")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == CAP
    assert "answer cut at 50 rows (history_max_rows)" in done.stderr


def test_an_answer_larger_than_its_bytes_is_cut_and_says_so(tmp_path: Path) -> None:
    """history_max_mb bounds an answer's JSON (the rows' work and memory) below the
    row cap; groups and totals are small and whole."""
    state = tmp_path / "state"
    _journal(state, 4 * CAP)
    daemon = RunningDaemon(state, "--history-max-mb", "0.01")
    try:
        rows = _history(daemon, OURS)
        assert 0 < len(rows) < CAP
        assert sum(len(json.dumps(r)) for r in rows) <= 0.01 * (1 << 20)
        assert f"answer cut at {len(rows)} rows (10485 bytes, history_max_mb)" in rows.note
        assert _history(daemon, {**OURS, "totals": True}).note == ""
    finally:
        daemon.close()


# nobody asks a query that scans its 200,000 rows, again and again
SCAN = textwrap.dedent("""
    import errno, json, sys
    from pytaskstats import Client
    from pytaskstats import extproto
    from pytaskstats.errors import NetlinkError
    answers = []
    with Client("daemon", socket_path=sys.argv[1]) as c:
        for _ in range(int(sys.argv[2])):
            try:
                rows = c.history(comm="nomatch", totals=True)
                answers.append(["rows", len(rows)])
            except NetlinkError as err:
                answers.append([errno.errorcode[err.errno], err.ext_message])
    print(json.dumps(answers))
""")


def test_a_query_past_its_budget_is_answered_etime_while_gets_are_served(
        big: RunningDaemon, nobody_env: dict[str, str]) -> None:
    """nobody's full scans end at its budget with ETIME and a clear message; root's
    GETs are answered meanwhile; root's own budget lets the same query finish."""
    scans = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         NOBODY_PYTHON, "-c", SCAN, big.socket, "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=nobody_env, cwd="/")
    gets = 0
    with Client("daemon", socket_path=big.socket) as c:
        while scans.poll() is None or gets == 0:
            assert c.pid(os.getpid()).ac_pid == os.getpid()
            gets += 1
    out, err = scans.communicate(timeout=60)
    assert scans.returncode == 0, err
    answers = json.loads(out)
    timeout = ["ETIME", "query took too long: narrow it with --since / --until or a filter "
               "(--comm, --uid, --pid, --cgroup): sums read every row of the range, whatever "
               "--limit"]  # not "--limit", which a sum does not heed
    assert answers[0] == timeout
    for answer in answers:  # the later ones may find nobody's share of the loop spent
        assert answer == timeout or (answer[0] == "EAGAIN" and answer[1].startswith(
            f"history queries of uid {NOBODY} used their share of taskstatsd"))
    root = _history(big, {"comm": "nomatch", "totals": True})
    assert root[0]["exits"] == 0 and root.note == ""


def test_sigterm_ends_a_running_query(tmp_path: Path) -> None:
    """SIGTERM while root's query (an hour's budget; ~10 s of grouping 200,000
    comms) runs: the daemon answers it ETIME and exits, without running it to its
    end."""
    state = tmp_path / "state"
    _journal(state, 200_000)
    daemon = RunningDaemon(state, "--history-admin-max-ms", "3600000")
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(daemon.socket)
        with sock:
            sock.send(extproto.encode_request(
                extproto.CMD_HISTORY, {"group_by": "comm", "sort": "-exits"}, seq=1))
            _wait_for_query(daemon.pid, state / "journal.sqlite3")
            os.kill(daemon.pid, signal.SIGTERM)
            assert daemon.proc is not None
            _, err = daemon.proc.communicate(timeout=60)
            assert daemon.proc.returncode == 0, err
            assert _answer(sock) == errno.ETIME
    finally:
        daemon.close()


def _wait_for_query(pid: int, journal: Path, timeout: float = 60.0) -> None:
    """Until the daemon ``pid`` (not its writer) has ``journal`` open: a history
    query's read-only connection, open while the query runs."""
    fds = Path(f"/proc/{pid}/fd")

    def open_now() -> bool:
        with contextlib.suppress(OSError):
            return any(os.readlink(fd) == str(journal) for fd in fds.iterdir())
        return False
    wait_until(open_now, "the query to start", timeout, poll_max=0.001)


def _answer(sock: socket.socket) -> str | int:
    """What the daemon said first: "rows", an errno, or "closed"."""
    try:
        data = sock.recv(1 << 20)
    except ConnectionResetError:
        return "closed"
    if not data:
        return "closed"
    for msg in nl.split_messages(memoryview(data), len(data)):
        if msg.type == nl.NLMSG_ERROR:
            return nl.decode_error(msg).error
        return "rows"
    return "closed"


def test_one_uid_gets_at_most_its_share_of_query_time() -> None:
    """Shares: a uid that spent its bucket waits for it to refill at the share's rate,
    whatever its connections; other uids are not held; full buckets are forgotten."""
    now = [100.0]
    shares = Shares(0.25, 0.2, clock=lambda: now[0])
    assert shares.take(7) == 0.2
    shares.spend(7, 0.3)  # a query overran its budget by 0.1 s
    assert shares.take(7) == pytest.approx(-0.1)
    assert shares.wait_ms(7) == pytest.approx(401)  # 0.1 s at 0.25 s/s, and 1 ms
    assert shares.take(8) == 0.2
    now[0] += 0.4
    assert shares.take(7) == pytest.approx(0.0)
    now[0] += 0.8
    assert shares.take(7) == 0.2
    assert shares.spent == {}
