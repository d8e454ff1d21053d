"""The backend contracts: one procfs adapter, bulk answers that say what they skipped,
one errno translation (both ways)."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

from pytaskstats import Client
from pytaskstats.backends import Answers, ProcBackend, YieldsExits
from pytaskstats.daemon.procmode import ProcfsExits, ProcfsKernel
from pytaskstats.errors import (
    AccessDenied,
    NetlinkError,
    NoSuchTask,
    RemoteProtocolError,
    TaskstatsError,
    Unsupported,
    errno_of,
    from_errno,
)
from pytaskstats.kernel import Connection
from pytaskstats.listener import Listener
from pytaskstats.procfs import ProcSource, os_error
from pytaskstats.records import Bulk, check_id

FIXTURE = Path(__file__).parent / "fixtures" / "proc"


def _fixture() -> ProcBackend:
    return ProcBackend(ProcSource(str(FIXTURE), clock_ticks=100, clock_ns=lambda: 10**12))


def test_each_source_implements_its_contract() -> None:
    """Checked by mypy (these assignments), and at run time for the names."""
    answers: list[type[Answers]] = [Connection, ProcBackend]
    exits: list[type[YieldsExits]] = [Listener, ProcfsExits]
    for cls in answers:
        assert all(callable(getattr(cls, m)) for m in ("query", "query_many", "query_reply",
                                                     "query_replies", "cgroup", "close"))
    for kind in exits:
        assert all(callable(getattr(kind, m)) for m in ("drain_raw", "fill", "blind_spot",
                                                      "masks", "drops", "account_drops"))
    assert ProcfsKernel is ProcBackend  # taskstatsd's procfs mode uses the one adapter


def test_a_bulk_answer_lists_the_vanished_ids() -> None:
    got = _fixture().query_many("pid", [100, 600, 301, 999])
    assert isinstance(got, Bulk) and list(got) == [100, 301]
    assert got.vanished == (600, 999) and got.denied == ()
    groups = _fixture().query_many("tgid", [100, 999])
    assert list(groups) == [100] and groups.vanished == (999,)


def test_a_bulk_answer_pickles_with_what_it_skipped() -> None:
    got = _fixture().query_many("pid", [100, 999])
    again = pickle.loads(pickle.dumps(got))
    assert again == got and again.vanished == (999,) and "vanished=(999,)" in repr(again)


def test_client_bulk_query_on_procfs_returns_the_skipped_ids() -> None:
    with Client("procfs") as c:
        got = c.pids([os.getpid(), 2**31 - 1])
        assert os.getpid() in got and got.vanished == (2**31 - 1,)
        assert c.struct_version() == c.pid(os.getpid()).version


def test_the_procfs_adapter_counts_cgroup_v1_only_like_the_kernel(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(NetlinkError) as info:
            _fixture().cgroup(fd)
    finally:
        os.close(fd)
    assert info.value.errno == errno.EINVAL


def test_status_and_history_need_taskstatsd() -> None:
    with Client("procfs") as c:
        with pytest.raises(Unsupported, match="taskstatsd"):
            c.status()
        with pytest.raises(Unsupported, match="taskstatsd"):
            c.history(limit=1)


@pytest.mark.parametrize("bad", [0, -1, 2**32, True, 1.0, "1"])
def test_check_id_refuses_what_is_not_a_pid(bad: object) -> None:
    with pytest.raises(ValueError, match="positive 32-bit"):
        check_id(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("code", "cls"), [
    (errno.ESRCH, NoSuchTask), (errno.EPERM, AccessDenied), (errno.EACCES, AccessDenied),
    (errno.EBUSY, NetlinkError)])
def test_errno_of_inverts_from_errno(code: int, cls: type[TaskstatsError]) -> None:
    exc = from_errno(code, "query", pid=5)
    assert type(exc) is cls and exc.pid == 5
    assert errno_of(exc) == (errno.EPERM if cls is AccessDenied else code)


def test_errno_of_the_other_classes() -> None:
    assert errno_of(from_errno(errno.ENOENT, "family lookup")) == errno.ENOENT
    assert errno_of(RemoteProtocolError("bad bytes")) == errno.EINVAL
    assert errno_of(TaskstatsError("?")) == errno.EIO


@pytest.mark.parametrize(("code", "cls", "said"), [
    (errno.ENOENT, NoSuchTask, "task 7: no such task (/proc/7/stat is gone)"),
    (errno.ESRCH, NoSuchTask, "task 7: no such task (/proc/7/stat is gone)"),
    (errno.EACCES, AccessDenied, "/proc/7/stat: permission denied: is procfs mounted with "
     "hidepid?"),
    (errno.EIO, TaskstatsError, "/proc/7/stat: Input/output error (errno 5); please report"),
])
def test_procfs_read_errors_go_through_from_errno(code: int, cls: type[TaskstatsError],
                                                  said: str) -> None:
    exc = os_error(OSError(code, os.strerror(code)), "/proc/7/stat", 7)
    assert type(exc) is cls and str(exc).startswith(said) and exc.pid == 7
    group = os_error(OSError(code, os.strerror(code)), "/proc/7/stat", 7, group=True)
    assert group.tgid == 7 and group.pid is None


def test_a_client_answers_from_a_given_source() -> None:
    mine = _fixture()
    with Client(source=mine) as c:
        assert (c.backend, c.backend_reason) == ("procfs", "given a source")
        assert c.pid(100).ac_pid == 100 and c.tgids([100, 999]).vanished == (999,)
