"""Batching exits: a wake-up after a fast series of exits waits a little (bounded by
``max_wait``) so that one drain serves many; nothing is left behind across the wait,
a lone exit is delivered at once, and a backlog is drained without waiting.  Against
the fake kernel with a fake clock, and live: a burst of our own exits, every one
seen, through coalescing windows."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from pytaskstats import ExitRecord
from pytaskstats import listener as listener_mod
from pytaskstats.daemon import config as config_mod
from pytaskstats.listener import (
    BACKLOG_RECORDS,
    COALESCE_FRACTION,
    Listener,
    coalesce_wait,
)

from .conftest import require_kernel, unique_command
from .fakekernel import FakeKernel
from .test_listener_fake import kernel  # noqa: F401  (the fixture)


class Clock:
    """A monotonic clock that moves only when told to or when slept on; ``during``
    runs at each sleep (what arrives in the window)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.during: Callable[[], None] = lambda: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.during()
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(listener_mod, "time", fake)
    yield fake


def pids(events: Sequence[object]) -> list[int]:
    return sorted(e.pid for e in events if isinstance(e, ExitRecord))


def test_the_wait_rule() -> None:
    window = 0.1 * COALESCE_FRACTION
    assert coalesce_wait(0.1, since_last=0.001, last_batch=1) == window  # exits come fast
    assert coalesce_wait(0.1, since_last=window, last_batch=1) == 0  # slower than the wait
    assert coalesce_wait(0.1, since_last=0.001, last_batch=BACKLOG_RECORDS) == 0  # backlog
    assert coalesce_wait(0.0, since_last=0.0, last_batch=1) == 0  # never
    assert coalesce_wait(0.1, since_last=float("inf"), last_batch=0) == 0  # the first


def test_a_lone_exit_is_delivered_without_waiting(kernel: FakeKernel,  # noqa: F811
                                                  clock: Clock) -> None:
    for pid in (10, 11):
        kernel.add_task(pid)
    with Listener(cpus=[0, 1], per_cpu=True, max_wait=5.0) as listener:
        kernel.exit(10, cpu=0)
        assert pids(listener.poll(0)) == [10]  # the first: at once
        clock.now += 5.0 * COALESCE_FRACTION  # a quiet spell as long as the window
        kernel.exit(11, cpu=1)
        assert pids(listener.poll(0)) == [11]
        assert clock.slept == [] and listener.waited == 0


def test_nothing_is_lost_across_a_coalescing_window(kernel: FakeKernel,  # noqa: F811
                                                    clock: Clock) -> None:
    for pid in range(20, 40):
        kernel.add_task(pid)
    with Listener(cpus=[0, 1], per_cpu=True, max_wait=0.2) as listener:
        kernel.exit(20, cpu=0)
        assert pids(listener.poll(0)) == [20]
        clock.now += 0.001  # the next exit comes quickly: this wake-up waits
        kernel.exit(21, cpu=0)

        def arrivals() -> None:  # during the wait, on both CPUs (CPU 1 was not ready)
            for pid in range(22, 40):
                kernel.exit(pid, cpu=pid % 2)

        clock.during = arrivals
        got = listener.poll(0)
        assert clock.slept == [0.2 * COALESCE_FRACTION]  # bounded by max_wait
        assert pids(got) == list(range(21, 40))
        assert listener.received == 20 and listener.lost == 0 and listener.waited == 1


def test_a_wait_delivers_its_exit_even_when_no_other_comes(kernel: FakeKernel,  # noqa: F811
                                                           clock: Clock) -> None:
    for pid in (50, 51):
        kernel.add_task(pid)
    with Listener(cpus=[0], max_wait=0.1) as listener:
        kernel.exit(50, cpu=0)
        listener.poll(0)
        clock.now += 0.001
        kernel.exit(51, cpu=0)
        assert pids(listener.poll(0)) == [51]  # after one bounded wait, not a second exit
        assert sum(clock.slept) <= 0.1


def test_a_backlog_is_drained_without_waiting(kernel: FakeKernel,  # noqa: F811
                                              clock: Clock) -> None:
    count = BACKLOG_RECORDS + 1
    for pid in range(100, 100 + 2 * count):
        kernel.add_task(pid)
    with Listener(cpus=[0], max_wait=0.1) as listener:
        for pid in range(100, 100 + count):
            kernel.exit(pid, cpu=0)
        assert len(listener.poll(0)) == count
        clock.now += 0.001
        kernel.exit(100 + count, cpu=0)
        assert pids(listener.poll(0)) == [100 + count] and clock.slept == []


def test_the_daemon_setting_is_bounded() -> None:
    assert config_mod.Config().max_wait_ms == 100.0
    low, high = config_mod.BOUNDS["max_wait_ms"]
    assert low == 0 and high >= 1000


def test_live_burst_every_exit_seen_through_coalescing_windows(tmp_path: Path) -> None:
    """A shell of a unique name runs 300 children; a listener that waits 0.1 s per
    fast wake-up sees each of them (by ppid) and loses nothing."""
    require_kernel()
    shell = unique_command(tmp_path, "burst", source="/bin/sh")
    with Listener(max_wait=0.4) as listener:
        proc = subprocess.Popen([str(shell), "-c",
                                 "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done"])
        ours: set[int] = set()
        deadline = time.monotonic() + 60
        while len(ours) < 300 and time.monotonic() < deadline:
            ours |= {e.pid for e in listener.poll(1.0) if isinstance(e, ExitRecord)
                     and e.task.ac_ppid == proc.pid}
        assert proc.wait() == 0
        assert len(ours) == 300 and listener.lost == 0
        assert listener.waited > 0  # the windows were exercised
