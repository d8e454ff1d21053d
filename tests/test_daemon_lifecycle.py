"""taskstatsd's start, stop and files (issue 11 findings 1, 10, 11, 12): a private
journal, one daemon per socket, settings checked before anything is touched, a full
disk that never stops it, and a systemd unit that verifies and works when hardened."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytaskstats import Client, ExitRecord, TaskstatsError, extproto
from pytaskstats.daemon import main as daemon_main
from pytaskstats.daemon import socketfile as daemon_socket
from pytaskstats.daemon.config import Config
from pytaskstats.daemon.trustedpath import check_chain

from .conftest import NOBODY_PYTHON, WAITS_FOR_EXITS, as_nobody, wait_until
from .daemon_util import RunningDaemon

pytestmark = WAITS_FOR_EXITS

DAEMON = [sys.executable, "-m", "pytaskstats.daemon", "--config", os.devnull]


def _status(sock: str) -> extproto.Status:
    with Client("daemon", socket_path=sock) as c:
        doc = c.status()
        return doc


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DAEMON, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("taskstatsd: "), done.stderr
    return lines[0]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- finding 1


@pytest.mark.kernel
def test_journal_is_private_even_over_a_state_dir_made_by_old_versions(
        tmp_path: Path, nobody_env: dict[str, str]) -> None:
    base = tmp_path / "world"
    base.mkdir()
    base.chmod(0o755)
    tmp_path.chmod(0o755)
    state = base / "state"
    state.mkdir()
    state.chmod(0o755)  # as older taskstatsd made it
    old = os.umask(0o022)
    try:
        with sqlite3.connect(state / "journal.sqlite3") as db:
            db.execute("CREATE TABLE leak (secret TEXT)")
        (state / "taskstatsd.lock").touch()
        (state / "listener-drops.json").write_text("{}")
    finally:
        os.umask(old)
    assert _mode(state / "journal.sqlite3") == 0o644
    d = RunningDaemon(state)
    try:
        subprocess.run(["true"], check=True)
        assert _status(d.socket)["counters"]["received"] >= 0
        with Client("daemon", socket_path=d.socket) as c:
            c.history(limit=1)  # the writer committed
        assert _mode(state) == 0o700
        for name in ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm",
                     "taskstatsd.lock", "listener-drops.json"):
            assert _mode(state / name) == 0o600, name
        peek = ("import sqlite3, sys; sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', "
                "uri=True).execute('SELECT count(*) FROM sqlite_master').fetchall()")
        done = as_nobody(nobody_env, "-c", peek, str(state / "journal.sqlite3"))
        assert done.returncode != 0 and "unable to open" in done.stderr
    finally:
        assert d.stop() == 0
        d.close()


@pytest.mark.kernel
def test_state_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    done = _run("--foreground", "--socket", str(tmp_path / "s.sock"), "--state-dir",
                str(state))
    assert done.returncode == 1 and "owned by uid 65534" in _one_line_error(done)
    assert not (tmp_path / "s.sock").exists() and list(state.iterdir()) == []


# ------------------------------------------- paths others could redirect (review F3, F4)


@pytest.fixture
def world() -> Iterator[Path]:
    """A root-owned 0755 directory under /tmp that nobody can reach (tmp_path is
    private to root), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="taskstatsd-paths-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _nobody_does(env: dict[str, str], code: str, *args: str) -> None:
    done = as_nobody(env, "-c", f"import os, socket, sys; {code}", *args)
    assert done.returncode == 0, done.stderr


def _start_refused(sock: str, state: str) -> str:
    """Start taskstatsd in the background and return its one-line refusal; one that
    starts (the old code) is stopped before the test fails."""
    done = _run("--socket", sock, "--state-dir", state)
    if done.returncode == 0:
        pid = _status(sock)["daemon"]["pid"]
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not os.path.exists(sock), "the socket removed at its exit")
    assert done.returncode == 1, done.stderr
    return _one_line_error(done)


def _nobodys_dir(parent: Path, name: str, mode: int = 0o755) -> Path:
    """``parent/name`` made by root and given to nobody (as if nobody had made it)."""
    path = parent / name
    path.mkdir()
    path.chmod(mode)
    os.chown(path, 65534, 65534)
    return path


@pytest.mark.kernel
@pytest.mark.parametrize(("parent_mode", "parent_uid", "said"), [
    pytest.param(0o755, 65534, "owned by uid 65534", id="in nobody's dir"),
    pytest.param(0o1777, 0, "is a symlink", id="in a sticky dir like /tmp"),
])
def test_a_state_dir_symlinked_by_another_user_is_refused(
        world: Path, nobody_env: dict[str, str], parent_mode: int, parent_uid: int,
        said: str) -> None:
    """F3: nobody links the state directory's name to a root-owned directory; the old
    daemon narrowed that directory to 0700 and put its journal in it."""
    parent = world / "evil"
    parent.mkdir()
    parent.chmod(parent_mode)
    os.chown(parent, parent_uid, parent_uid)
    target = world / "precious"
    target.mkdir()
    target.chmod(0o755)
    (target / "keep").write_text("x")
    _nobody_does(nobody_env, "os.symlink(sys.argv[1], sys.argv[2])", str(target),
                 str(parent / "st"))
    assert said in _start_refused(str(world / "run" / "s.sock"), str(parent / "st"))
    assert _mode(target) == 0o755 and [p.name for p in target.iterdir()] == ["keep"]
    assert not (world / "run").exists()


def _ancestors_others_can_write(world: Path) -> dict[str, tuple[Path, str]]:
    """State directories (not yet made) under an ancestor another user could
    rewrite, and what the refusal says."""
    evil = _nobodys_dir(world, "evil")
    open_dir = world / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (evil / "sub").mkdir()  # root's, 0755, inside nobody's
    (world / "safe").mkdir()
    (evil / "link").symlink_to(world / "safe")
    return {"parent is nobody's": (evil / "state", "owned by uid 65534"),
            "parent is 0777": (open_dir / "state", "writable by other users"),
            "grandparent is nobody's": (evil / "sub" / "state", "owned by uid 65534"),
            "symlink in nobody's dir": (evil / "link" / "state", "owned by uid 65534")}


@pytest.mark.kernel
@pytest.mark.parametrize("case", ["parent is nobody's", "parent is 0777",
                                  "grandparent is nobody's", "symlink in nobody's dir"])
def test_a_state_dir_under_a_directory_others_can_write_is_refused(
        world: Path, case: str) -> None:
    """F3: whoever can write an ancestor (without the sticky bit) can swap the state
    directory for a symlink between two starts: refused before it is made."""
    state, said = _ancestors_others_can_write(world)[case]
    assert said in _start_refused(str(world / "run" / "s.sock"), str(state))
    assert not state.exists() and not (world / "run").exists()


def test_the_walk_resolves_like_the_kernel_and_is_bounded(world: Path) -> None:
    """Relative links and '..' are resolved from where the link lies, every
    directory passed through is checked, and a symlink loop ends the walk."""
    evil = _nobodys_dir(world, "evil")
    (world / "safe").mkdir()
    (world / "hop").symlink_to("evil/../safe")  # passes through nobody's dir
    (world / "direct").symlink_to("./safe/../safe")
    assert check_chain(str(world / "direct")) == str(world / "safe")
    with pytest.raises(TaskstatsError, match=f"{evil} is owned by uid 65534"):
        check_chain(str(world / "hop"))
    (world / "loop").symlink_to("loop")
    with pytest.raises(TaskstatsError, match="more than 40 symlinks"):
        check_chain(str(world / "loop"))


@pytest.mark.kernel
def test_a_state_dir_under_sticky_or_trusted_symlinked_parents_is_used(world: Path) -> None:
    """What StrictModes allows: root's state directory in a sticky root-owned
    directory (like /tmp), reached through a symlink of root's in root's directory."""
    sticky = world / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (world / "link").symlink_to(sticky)
    d = RunningDaemon(world / "link" / "state")
    try:
        assert _status(d.socket)["daemon"]["pid"] == d.pid
        assert _mode(sticky / "state") == 0o700
        assert (sticky / "state" / "journal.sqlite3").exists()
    finally:
        assert d.stop() == 0
        d.close()


@pytest.mark.kernel
@pytest.mark.parametrize(("case", "said"), [
    ("made by nobody in a sticky dir", "owned by uid 65534"),
    ("symlink by nobody in a sticky dir", "symlink"),
    ("root's, 0777", "writable by other users (mode 0777)"),
    ("root's, sticky 1777", "writable by other users (mode 1777)"),
    ("root's, group-writable 0775", "writable by other users (mode 0775)"),
    ("root's, under nobody's", "owned by uid 65534"),
])
def test_a_socket_dir_another_user_could_write_is_refused(
        world: Path, tmp_path: Path, nobody_env: dict[str, str], case: str,
        said: str) -> None:
    """F4: in a socket directory another user can write, that user renames the
    daemon's socket away and binds their own: root's clients then talk to them."""
    sticky = world / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    sockdir = sticky / "sockdir"
    if case == "made by nobody in a sticky dir":
        _nobody_does(nobody_env, "os.mkdir(sys.argv[1])", str(sockdir))
    elif case == "symlink by nobody in a sticky dir":
        (world / "root-run").mkdir()
        _nobody_does(nobody_env, "os.symlink(sys.argv[1], sys.argv[2])",
                     str(world / "root-run"), str(sockdir))
    elif case == "root's, under nobody's":
        sockdir = _nobodys_dir(world, "evil") / "sockdir"
        sockdir.mkdir()
        sockdir.chmod(0o755)
    else:
        sockdir.mkdir()
        sockdir.chmod(int(case.rsplit(maxsplit=1)[-1], 8))
    sock = sockdir / "s.sock"
    line = _start_refused(str(sock), str(tmp_path / "state"))  # exit 1: found at start
    assert said in line
    if "symlink" not in said and "under" not in case:  # the socket's own directory:
        assert "give a socket path whose directory only taskstatsd's user can" in line
    assert not os.path.lexists(sock) and not (world / "root-run" / "s.sock").exists()
    assert not (tmp_path / "state").exists()  # the failed start removed what it made


def test_the_socket_mode_is_set_by_bind_never_through_the_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """F4: the old daemon chmod'ed the socket's path after bind(); whoever swapped it
    for a symlink in between had any file made 0666.  The swap is made here
    deterministically, right after bind()."""
    path, victim = str(tmp_path / "run" / "s.sock"), tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    real_bind = daemon_socket._bind

    def bind_then_swap(where: str) -> socket.socket:
        sock = real_bind(where)
        os.rename(where, tmp_path / "moved")
        os.symlink(victim, where)
        return sock

    monkeypatch.setattr(daemon_socket, "_bind", bind_then_swap)
    old = os.umask(0o077)  # the daemon's
    try:
        with pytest.raises(TaskstatsError, match="not the socket taskstatsd just bound"):
            daemon_socket.BoundSocket(path)
        assert _mode(victim) == 0o600
        os.unlink(path)
        monkeypatch.undo()
        bound = daemon_socket.BoundSocket(path)
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
        bound.close()
    finally:
        assert os.umask(old) == 0o077  # restored after bind()


# ---------------------------------------------------------------- finding 10


@pytest.mark.kernel
def test_a_second_daemon_on_a_live_socket_is_refused(tmp_path: Path) -> None:
    first = RunningDaemon()
    try:
        for background in ((), ("--foreground",)):
            done = _run(*background, "--socket", first.socket, "--state-dir",
                        str(tmp_path / "other"))
            assert done.returncode == 1, done.stderr
            assert "already answers" in _one_line_error(done)
            assert "stop it first, or give this one another --socket" in done.stderr
            assert not (tmp_path / "other").exists()
        assert _status(first.socket)["daemon"]["pid"] == first.pid  # still reachable
    finally:
        assert first.stop() == 0
        first.close()


@pytest.mark.kernel
def test_stale_socket_is_replaced_and_a_foreign_one_is_never_unlinked(tmp_path: Path) -> None:
    d = RunningDaemon.__new__(RunningDaemon)
    base = tmp_path / "run"
    base.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(base / "s.sock"))
    stale.close()  # a dead daemon's socket
    d.base, d.socket, d.state_dir, d.extra, d.proc = tmp_path, str(base / "s.sock"), \
        tmp_path / "state", (), None
    d.start()  # the stale path exists already: start() waits until the daemon answers
    try:
        assert _status(d.socket)["daemon"]["pid"] == d.pid
        os.unlink(d.socket)  # someone (an admin, another daemon) puts another socket there
        foreign = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        foreign.bind(d.socket)
        assert d.stop() == 0
        assert stat.S_ISSOCK(os.lstat(d.socket).st_mode)  # not ours: left alone
        foreign.close()
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


BAD = [
    (["--socket", "/proc/no-such-dir/sub/s.sock"], "does not exist"),
    (["--synchronous", "BOGUS"], "synchronous"),
    (["--retention-days", "-3"], "retention_days"),
    (["--state-dir", "/etc/passwd"], "not a directory"),
    (["--max-clients", "banana"], "not an integer"),
    (["--source", "nope"], "source"),
    (["--admin-group", "no-such-group-xyz"], "no such group"),
    (["--low-free-pct", "90"], "resume_free_pct"),
    (["--procfs-interval-s", "nan"], "not a number"),
    (["--metrics-groups", "x=("], "bad regex"),
    (["--admin-reserved-clients", "300"], "admin_reserved_clients (300) leaves no"),
    (["--max-clients", "8"], "want fewer than max_clients"),  # 8 reserved of 8
    (["--admin-group", "99999999999"], "a gid is 0 .. 4294967294"),
    (["--admin-group", "4294967295"], "a gid is 0 .. 4294967294"),  # (gid_t)-1
    (["--admin-group", "\u00b2"], "no such group"),  # a digit to str.isdigit only
]


@pytest.mark.parametrize(("args", "said"), BAD)
@pytest.mark.parametrize("foreground", [True, False])
def test_bad_settings_are_one_line_usage_errors_before_any_disk_write(
        tmp_path: Path, args: list[str], said: str, foreground: bool) -> None:
    state, sock = tmp_path / "state", tmp_path / "run" / "s.sock"
    done = _run(*(["--foreground"] if foreground else []), "--socket", str(sock),
                "--state-dir", str(state), *args)
    assert done.returncode == 2 and said in _one_line_error(done)
    assert not state.exists() and not sock.parent.exists()


@pytest.mark.parametrize(("text", "said"), [
    ("max_clients = 3\n", "section header"),
    ("[taskstatsd]\nmax_clients = banana\n", "not an integer"),
    ("[taskstatsd]\ncgroups = banana\n", "yes or no"),
    ("[taskstatsd]\nno_such_key = 1\n", "unknown setting"),
    ("[taskstatsd]\nmax_clinets = 3\n", "c.conf: unknown setting 'max_clinets' (did you mean "
     "max_clients?)"),
    ("[taskstatsdd]\nmax_clients = 3\n", "unknown section"),
])
def test_bad_config_files_are_one_line_usage_errors(tmp_path: Path, text: str,
                                                    said: str) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text(text)
    done = subprocess.run([sys.executable, "-m", "pytaskstats.daemon", "--config", str(conf),
                           "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and said in _one_line_error(done)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "directory", "too big"])
def test_a_config_file_is_a_regular_file_read_with_a_cap(tmp_path: Path, kind: str) -> None:
    """/dev/zero once grew the daemon to GBs, a FIFO hung it: refused, one line, 2."""
    conf = tmp_path / "c.conf"
    if kind == "fifo":
        os.mkfifo(conf)
    elif kind == "directory":
        conf.mkdir()
    elif kind == "too big":
        conf.write_text("[taskstatsd]\n" + "# padding\n" * 120_000)
    path = "/dev/zero" if kind == "/dev/zero" else str(conf)
    done = subprocess.run([sys.executable, "-m", "pytaskstats.daemon", "--foreground",
                           "--config", path, "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60, check=False)
    said = {"too big": "larger than 1048576 bytes", "fifo": "a FIFO, not a regular file",
            "directory": "a directory, not", "/dev/zero": "a device or socket, not"}[kind]
    assert done.returncode == 2 and said in _one_line_error(done)
    assert not (tmp_path / "state").exists()


def _writers_of(state: Path) -> list[int]:
    """Pids of journal writer processes for ``state``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"journal_writer" in cmdline and str(state).encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.kernel
def test_a_failed_start_leaves_nothing_behind(tmp_path: Path) -> None:
    """A start that fails after the journal writer began (metrics port taken) leaves
    no writer, no socket, and no false daemon_down gap at the next start."""
    pytest.importorskip("prometheus_client")
    state, sock = tmp_path / "state", str(tmp_path / "run" / "s.sock")
    d = RunningDaemon(state)
    assert d.stop() == 0  # a journal with a clean stop
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        done = _run("--foreground", "--socket", sock, "--state-dir", str(state),
                    "--metrics-listen", f"127.0.0.1:{taken.getsockname()[1]}")
    finally:
        taken.close()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert not os.path.exists(sock) and _writers_of(state) == []
    d.start()
    try:
        assert not [g for g in _status(d.socket)["gaps"] if g[2] == "daemon_down"]
    finally:
        d.close()


@pytest.mark.kernel
def test_background_start_waits_for_readiness(tmp_path: Path) -> None:
    sock, state = str(tmp_path / "run" / "s.sock"), tmp_path / "state"
    done = _run("--socket", sock, "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    pid = _status(sock)["daemon"]["pid"]  # answering as soon as the start returned
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(sock), "the socket removed at its exit")
    bad = _run("--socket", sock, "--state-dir", str(state / "journal.sqlite3"))
    assert bad.returncode == 2


class _BrokenEvents:
    """A fork-event socket whose every read fails with EIO (counts the reads)."""

    def __init__(self) -> None:
        self.reads = 0
        self.pair = socket.socketpair()

    def recv(self) -> int:
        self.reads += 1
        if self.reads > 10_000:
            raise RuntimeError("spinning")  # the old loop never returns: stop it
        raise OSError(5, "Input/output error")

    def fileno(self) -> int:
        return self.pair[0].fileno()

    def close(self) -> None:
        for s in self.pair:
            s.close()


def test_fork_events_do_not_spin_on_a_persistent_error() -> None:
    d = daemon_main.Daemon.__new__(daemon_main.Daemon)
    events = _BrokenEvents()
    d.fork_events, d.fork_events_failed = events, False  # type: ignore[assignment]
    d.selector = selectors.DefaultSelector()
    d.selector.register(events.fileno(), selectors.EVENT_READ, ("forks", 0))
    d._forks()
    assert events.reads == 1 and d.fork_events is None and d.fork_events_failed
    assert not d.selector.get_map()


# ---------------------------------------------------------------- finding 11


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(fs: Path) -> None:
    with open(fs / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def _children(n: int) -> None:
    """``n`` exits in a burst (forked shells)."""
    subprocess.run(["sh", "-c", f"for i in $(seq {n}); do true & done; wait"], check=True)


@pytest.mark.kernel
def test_a_full_disk_never_stops_the_daemon(small_fs: Path) -> None:
    state = small_fs / "state"
    d = RunningDaemon(state, "--rcvbuf-bytes", "4096")
    try:
        _fill(small_fs)
        _children(5)
        assert d.stop() == 0  # SIGTERM on a full disk: a clean stop
        assert not os.path.exists(d.socket)
        d.start()  # a restart on the full disk
        with Client("daemon", socket_path=d.socket) as c, c.listen() as listener:
            assert c.pid(os.getpid()).ac_pid == os.getpid()
            _children(3000)  # overruns the 4 KiB listener buffers while full
            seen = 0
            while events := listener.poll(0.5):
                seen += sum(isinstance(e, ExitRecord) for e in events)
            assert seen > 0
        counters = _status(d.socket)["counters"]
        assert counters["lost_overrun"] > 0, counters  # the overrun was counted...
        assert d.proc is not None and d.proc.poll() is None  # ...and did not kill it
        lost = sum(v for k, v in counters.items() if k.startswith(("lost_", "dropped_")))
        assert counters["journaled"] + lost >= counters["received"]
        assert d.stop() == 0
    finally:
        d.close()


@pytest.mark.kernel
def test_a_new_state_dir_on_a_full_disk_starts_suspended(small_fs: Path) -> None:
    _fill(small_fs)
    d = RunningDaemon(small_fs / "state")
    try:
        _children(20)
        with Client("daemon", socket_path=d.socket) as c:
            assert c.history(limit=5) == []
            assert c.pid(os.getpid()).ac_pid == os.getpid()
        counters = _status(d.socket)["counters"]
        assert counters["suspensions"] >= 1 and counters["dropped_disk_low"] >= 20
        assert d.stop() == 0
    finally:
        d.close()


# ---------------------------------------------------------------- finding 12


def test_printed_unit_verifies_with_systemd_analyze(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "taskstatsd.service"
    done = subprocess.run([*DAEMON[:3], "--print-unit"], capture_output=True, text=True,
                          timeout=60, check=True)
    unit.write_text(done.stdout)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False, cwd=tmp_path)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr
    text = done.stdout
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                      "PrivateTmp=yes", "UMask=0077", "SystemCallFilter=@system-service",
                      "RestrictAddressFamilies=AF_UNIX AF_NETLINK\n", "StateDirectoryMode=0700"):
        assert directive in text
    assert f"ExecStart={os.path.abspath(sys.executable)} -I -m pytaskstats.daemon" in text


@pytest.mark.kernel
def test_daemon_works_with_the_units_capabilities_only(tmp_path: Path,
                                                        nobody_env: dict[str, str]) -> None:
    """The unit's CapabilityBoundingSet, NoNewPrivileges and UMask reproduced with
    setpriv (systemd is not PID 1 here): it serves a nobody's query and a listener."""
    tmp_path = Path(tempfile.mkdtemp(prefix="taskstatsd-caps-", dir="/tmp"))
    tmp_path.chmod(0o755)
    sock = str(tmp_path / "run" / "s.sock")
    proc = subprocess.Popen(
        ["setpriv", "--bounding-set=-all,+net_admin,+sys_ptrace,+dac_read_search",
         "--inh-caps=-all", "--no-new-privs", "sh", "-c", 'umask 0077; exec "$@"', "sh",
         *DAEMON, "--foreground", "--socket", sock, "--state-dir", str(tmp_path / "state")],
        stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(sock) or proc.poll() is not None, "the socket")
        assert proc.poll() is None
        caps = Path(f"/proc/{proc.pid}/status").read_text()
        assert "CapBnd:\t0000000000081004" in caps and "NoNewPrivs:\t1" in caps
        code = ("import os, subprocess, sys, time; from pytaskstats import Client\n"
                "with Client('daemon', socket_path=sys.argv[1]) as c, c.listen() as l:\n"
                "    print(c.pid(os.getpid()).ac_uid)\n"
                "    child = subprocess.Popen(['true']); child.wait()\n"
                "    end, seen = time.monotonic() + 10, []\n"
                "    while not seen and time.monotonic() < end:  # its own child's exit\n"
                "        seen = [e for e in l.poll(0.2) if getattr(e, 'pid', 0) == child.pid]\n"
                "    print(seen[0].task.ac_uid == 65534 if seen else 'unseen')\n")
        done = as_nobody(nobody_env, "-c", code, sock)
        assert done.stdout.split() == ["65534", "True"], done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_printed_unit_checks_and_carries_the_settings(tmp_path: Path) -> None:
    """--print-unit once printed the default socket for ``--socket rel`` (exit 0)."""
    done = _run("--print-unit", "--socket", "rel")
    assert done.returncode == 2 and "want an absolute path" in _one_line_error(done)
    assert done.stdout == ""
    sock, state = str(tmp_path / "run" / "s.sock"), str(tmp_path / "state")
    text = _run("--print-unit", "--socket", sock, "--state-dir", state, "--nice", "5",
                "--no-cgroups", "--max-clients", "64").stdout
    start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert start.endswith(f" --foreground --socket {sock} --state-dir {state} --config "
                          f"{os.devnull} --max-clients 64 --no-cgroups --nice 5"), start
    assert "\nNice=5\n" in text
    assert f"\nReadWritePaths=-{tmp_path / 'run'} -{state}\n" in text


def _as_nobody_daemon(world: Path, env: dict[str, str], source: str,
                      ) -> tuple[subprocess.Popen[str], str]:
    """taskstatsd started as nobody (at this process's nice: no note about it) with
    ``source``, its socket and state in a directory of nobody's; and the socket."""
    home = _nobodys_dir(world, "nobody")
    sock = str(home / "run" / "s.sock")
    proc = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", NOBODY_PYTHON,
         *DAEMON[1:], "--foreground", "--source", source, "--socket", sock,
         "--state-dir", str(home / "state"), "--nice", str(os.getpriority(
             os.PRIO_PROCESS, 0))], stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    return proc, sock


@pytest.mark.kernel
def test_without_privilege_source_kernel_says_what_taskstatsd_needs(
        world: Path, nobody_env: dict[str, str]) -> None:
    """It once told the user to start taskstatsd (the advice for its clients)."""
    proc, _ = _as_nobody_daemon(world, nobody_env, "kernel")
    _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, err
    assert "permission denied: taskstatsd needs root or CAP_NET_ADMIN" in lines[0]
    assert "--source procfs runs without" in lines[0] and "start taskstatsd" not in err


@pytest.mark.kernel
def test_without_privilege_source_auto_serves_from_proc(
        world: Path, nobody_env: dict[str, str]) -> None:
    """auto is "the kernel's taskstats, else /proc": refused for want of privilege
    (EPERM), it serves from /proc and says so once, instead of failing."""
    proc, sock = _as_nobody_daemon(world, nobody_env, "auto")
    try:
        wait_until(lambda: os.path.exists(sock) or proc.poll() is not None, "the socket")
        assert proc.poll() is None
        done = as_nobody(nobody_env, "-c", "import os, sys; from pytaskstats import Client\n"
                         "with Client('daemon', socket_path=sys.argv[1]) as c:\n"
                         "    print(c.status()['kernel']['source'], "
                         "c.pid(os.getpid()).ac_uid)", sock)
        assert done.stdout.split() == ["procfs", "65534"], done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == 2, err
    assert lines[0].startswith("taskstatsd: the kernel refused the exit listener (EPERM")
    assert "serving from /proc instead" in lines[0] and "listening on" in lines[1]


def test_contrib_unit_is_the_printed_one() -> None:
    """contrib/taskstatsd.service is --print-unit's text for /usr/local/bin/taskstatsd."""
    contrib = (Path(__file__).parent.parent / "contrib" / "taskstatsd.service").read_text()
    printed = subprocess.run([*DAEMON[:3], "--print-unit"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    def body(text: str) -> list[str]:
        return [line for line in text.splitlines()
                if line.strip() and not line.startswith(("#", "ExecStart="))]
    assert body(contrib) == body(printed)


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_daemon_and_journal_writer_run_at_the_configured_priority(tmp_path: Path) -> None:
    """A fork storm competes with the daemon for the CPU: it runs at `nice` (default
    -10), and so does its journal writer, which would otherwise fall behind."""
    d = RunningDaemon(tmp_path / "state", "--nice", "-7")
    try:
        _status(d.socket)  # serving: the journal writer has started
        children = Path(f"/proc/{d.pid}/task/{d.pid}/children").read_text().split()
        assert _nice(d.pid) == -7
        assert children and all(_nice(int(c)) == -7 for c in children)
    finally:
        d.close()
    assert Config().nice == -10
