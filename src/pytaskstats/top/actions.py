"""What the live view does to the selected process: send it a signal, renice it.

Every action names its target by pid and start (ticks after boot, from /proc) and
checks both before acting, so a pid reused since the row was drawn is never hit; a
signal goes through a pidfd opened before that check.  Each returns the one line
the key line shows: what was done, or why not (gone, not permitted...), never an
exception.
"""

from __future__ import annotations

import os
import signal

from ..procinfo import read_start
from .frame import Row

__all__ = ["parse_nice", "parse_signal", "refusal", "renice", "send_signal"]

NICE_RANGE = range(-20, 20)


def parse_signal(text: str) -> signal.Signals:
    """A signal by name (TERM, SIGTERM, term) or number; ValueError with the message."""
    word = text.strip().upper() or "TERM"
    try:
        return signal.Signals(int(word)) if word.isdigit() else signal.Signals[
            word if word.startswith("SIG") else "SIG" + word]
    except (KeyError, ValueError):
        raise ValueError(f"unknown signal {text.strip()!r}: give a name (TERM, KILL, HUP, "
                         "STOP, CONT, INT...) or a number") from None


def parse_nice(text: str) -> int:
    """A nice value, -20 to 19; ValueError with the message."""
    try:
        value = int(text.strip())
    except ValueError:
        value = NICE_RANGE.stop
    if value not in NICE_RANGE:
        raise ValueError(f"nice {text.strip()!r}: give a number from -20 to 19")
    return value


def refusal(row: Row | None, level: str) -> str | None:
    """Why ``row`` cannot be acted on (None: it can)."""
    if row is None:
        return "no row selected"
    if level == "cgroup":
        return "select a process or a thread (per cgroup, rows are groups)"
    if row.exited:
        return f"{row.pid} ({row.command}) has exited"
    if row.start is None:
        return f"{row.pid} ({row.command}) is gone from /proc"
    return None


def _who(row: Row) -> str:
    return f"{row.tgid} ({row.command})"


def _reused(row: Row, proc: str) -> str | None:
    """Why the row's process is no longer the one shown (None: it is)."""
    if read_start(row.tgid, proc) != row.start:
        return f"{_who(row)} has exited (its pid is gone or reused): nothing done"
    return None


def send_signal(row: Row, sig: signal.Signals, proc: str = "/proc") -> str:
    """Send ``sig`` to the row's process (a thread row: its process, as kill(1))."""
    try:
        fd = os.pidfd_open(row.tgid)
    except ProcessLookupError:
        return f"{_who(row)} has exited: nothing done"
    except OSError as err:
        return f"cannot signal {_who(row)}: {err.strerror}"
    try:
        gone = _reused(row, proc)
        if gone:
            return gone
        signal.pidfd_send_signal(fd, sig)
    except PermissionError:
        return (f"not permitted to signal {_who(row)}: run as its owner or root")
    except ProcessLookupError:
        return f"{_who(row)} has exited: nothing done"
    except OSError as err:
        return f"cannot signal {_who(row)}: {err.strerror}"
    finally:
        os.close(fd)
    return f"sent {sig.name} to {_who(row)}"


def _tids(row: Row, level: str, proc: str) -> list[int]:
    """The threads to renice: the row's thread, or every thread of its process."""
    if level == "thread":
        return [row.pid]
    try:
        return [int(t) for t in os.listdir(f"{proc}/{row.tgid}/task")]
    except OSError:
        return []


def renice(row: Row, level: str, nice: int, proc: str = "/proc") -> str:
    """Set the nice value of the row's thread, or of every thread of its process
    (Linux nice values are per thread; renice(1) changes only the one named)."""
    gone = _reused(row, proc)
    if gone:
        return gone
    tids = _tids(row, level, proc)
    done = 0
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
            done += 1
        except ProcessLookupError:
            continue  # a thread that exited meanwhile
        except PermissionError:
            return (f"not permitted to renice {_who(row)} to {nice}: lowering nice needs "
                    "root (CAP_SYS_NICE); others' processes need their owner or root")
        except OSError as err:
            return f"cannot renice {_who(row)}: {err.strerror}"
    if not done:
        return f"{_who(row)} has exited: nothing done"
    what = f"thread {row.pid} of" if level == "thread" else f"{done} thread(s) of"
    return f"reniced {what} {_who(row)} to {nice}"
