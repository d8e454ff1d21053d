"""Shared fixtures: golden bytes, the real kernel (root), delay accounting on/off."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytaskstats import Client, delayacct

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))  # expected.py: the fixtures' value rule


def fixture_bytes(name: str) -> bytes:
    """A golden datagram from tests/fixtures (see its README)."""
    return (FIXTURES / name).read_bytes()


def _kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for the kernel's TASKSTATS queries"
    if not Path("/proc/sys/kernel/task_delayacct").exists():
        return "this kernel has no delay accounting sysctl"
    return None


def require_kernel() -> None:
    """Skip (with the reason) where the real kernel cannot be used; fail in CI."""
    reason = _kernel_unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the kernel tests, but: {reason}")
    pytest.skip(reason)


@pytest.fixture
def client() -> Iterator[Client]:
    """A kernel Client (root)."""
    require_kernel()
    with Client(backend="kernel") as c:
        yield c


@pytest.fixture
def delayacct_on() -> Iterator[None]:
    """Switch delay accounting on for the test and restore the previous state."""
    require_kernel()
    before = delayacct.status()
    delayacct.set_enabled(True)
    try:
        yield
    finally:
        delayacct.set_enabled(bool(before))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``kernel`` check for the kernel before running."""
    for item in items:
        if item.get_closest_marker("kernel"):
            item.add_marker(pytest.mark.usefixtures("_kernel_gate"))


@pytest.fixture
def _kernel_gate() -> None:
    require_kernel()
