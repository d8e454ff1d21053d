"""cpulist parsing without a kernel: the kernel's grammar and errnos, bounded cost."""

from __future__ import annotations

import errno

import pytest

from pytaskstats.cpulist import CpulistError, parse_cpulist, parse_cpumask


@pytest.mark.parametrize(("text", "nbits", "cpus"), [
    (b"", 4, []), (b"0-3", 4, [0, 1, 2, 3]), (b"0-3:1/2", 4, [0, 2]), (b"N", 4, [3]),
    (b"all:2/4", 8, [0, 1, 4, 5]), (b" 1 ,\t2,", 4, [1, 2]), (b"1\n3", 4, [1]),
    (b"0-N", 8192, list(range(8192)))])
def test_parse_cpumask(text: bytes, nbits: int, cpus: list[int]) -> None:
    assert parse_cpumask(text, nbits) == cpus


@pytest.mark.parametrize(("text", "err"), [
    (b"0-99999999", errno.ERANGE), (b"0-4294967294,x", errno.ERANGE),
    (b"x,0-99999999", errno.EINVAL), (b"0-4294967295", errno.EINVAL),
    (b"0-4294967296", errno.EOVERFLOW), (b"9" * 1600, errno.EOVERFLOW),
    (b"3-1", errno.EINVAL), (b"0-3:3/2", errno.EINVAL), (b"0-3:1/0", errno.EINVAL),
    (b"0-3:1", errno.EINVAL), (b"+1", errno.EINVAL), (b"0-", errno.EINVAL)])
def test_parse_cpumask_errors_without_expanding(text: bytes, err: int) -> None:
    """Errors come region by region in the kernel's order; a range beyond the mask is
    refused before a CPU of it is set (10^8 or 2^32 CPUs would take seconds)."""
    with pytest.raises(CpulistError) as info:
        parse_cpumask(text, 4)
    assert info.value.errno == err


def test_parse_cpulist_refuses_huge_ranges_before_expanding() -> None:
    assert parse_cpulist("0-3,5\n") == [0, 1, 2, 3, 5]
    with pytest.raises(ValueError, match="beyond any kernel"):
        parse_cpulist("0-99999999")
