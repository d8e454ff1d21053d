"""Command-line values checked where they are parsed: every bad value is a usage
error (exit status 2) of one line that says what is wrong and what is accepted.

Each ``*_arg`` function is an argparse ``type=``: text in, a bounded value out, or
:class:`argparse.ArgumentTypeError` with the message.  Times are CLOCK_REALTIME
ns since the epoch; durations are seconds.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import pwd
import re
import stat
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..cpulist import parse_cpulist
from ..kernel import possible_cpus
from ..report import resolve_output

ID_MAX = (1 << 32) - 1  # pids, tgids, uids: u32 in struct taskstats
COUNT_MAX = (1 << 31) - 1  # -n, --limit, -P: a C int
_NS = 1_000_000_000
# Dates taskstatsd can hold: CLOCK_REALTIME ns in an int64 (years 1970 to 2262)
WHEN_MIN_NS, WHEN_MAX_NS = 0, (1 << 63) - 1
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_AGE = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9})?) ?([smhdwy])")
WHEN_FORMS = ("an age (90s, 30m, 1h, 2d, 1w, 1y), now, today, yesterday, a time of day "
              "(03:14, the last one), an ISO date or "
              "date-time (2026-12-05, 2026-12-05T14:30) or seconds since the epoch")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``prog: message (see prog --help)``, exit 2.

    Options it does not know are reported by the parser of the command they were
    given to (``taskstats get: ...``), with where they go when they are known
    elsewhere (a global option after the command, a command's option before it).
    """

    _deferred = False  # while parse_args runs: errors are raised, judged, then said

    def error(self, message: str) -> NoReturn:
        """Print the one line, with a hint for the usual slips, and exit with status 2."""
        if Parser._deferred:
            raise _Refused(self, message)
        self.exit(2, f"{self.prog}: {printable(message)} (see '{self.prog} --help')\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """Parse; an unknown argument is a usage error of the command it followed, and
        is said first (rather than "the following arguments are required")."""
        argv = list(sys.argv[1:] if args is None else args)
        Parser._deferred = True
        try:
            parsed, extra = self.parse_known_args(argv, namespace)
        except _Refused as refused:
            Parser._deferred = False
            unknown = self._unknown(argv)
            if unknown and ("required" in refused.message or refused.message.startswith(
                    "argument COMMAND: invalid choice")):  # --backnd daemon get: not 'daemon'
                extra, parsed = unknown, argparse.Namespace()
            else:
                refused.parser.error(refused.message + _dash_hint(refused.message, argv))
        finally:
            Parser._deferred = False
        if extra:
            sub = self._command_parser(argv)
            if (sub is not None and not self._where(sub, extra)
                    and _all_before(argv, extra, sub.prog.split()[-1])):
                sub = None  # mistyped global options: said by the top parser
            (sub or self).error(f"unrecognized arguments: {' '.join(extra)}"
                                f"{self._where(sub, extra)}")
        return parsed

    def _unknown(self, argv: list[str]) -> list[str]:
        """The words of ``argv`` (before ``--``) that look like options and that neither
        this parser nor its command's knows."""
        sub = self._command_parser(argv)
        parsers = [self] if sub is None else [self, sub]
        words = argv[:argv.index("--")] if "--" in argv else argv
        return [w for w in words if w.startswith("-") and len(w) > 1
                and all(_unknown_option(p, w) for p in parsers)]

    def _command_parser(self, argv: list[str]) -> argparse.ArgumentParser | None:
        """The parser of the command named in ``argv`` (the first word that is one,
        past the global options' values), if any."""
        choices: dict[str, argparse.ArgumentParser] = {}
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                choices = action.choices
        valued = {name for name, action in self._option_string_actions.items()
                  if action.nargs is None and action.const is None}
        words = iter(argv)
        for word in words:
            if word in valued:
                next(words, None)
            elif word in choices:
                return choices[word]
        return None

    def _where(self, sub: argparse.ArgumentParser | None, extra: list[str]) -> str:
        names = {word.split("=", 1)[0] for word in extra}
        if sub is None:
            return ""
        if names & set(self._option_string_actions):
            return "; global options (--backend, --socket) go before the command"
        if names & set(sub._option_string_actions):
            return "; the command's own options (--json, ...) go after it"
        return ""


def _all_before(argv: list[str], words: list[str], command: str) -> bool:
    """Whether every one of ``words`` comes before ``command`` in ``argv``."""
    if command not in argv:
        return False
    head = argv[:argv.index(command)]
    return all(word in head for word in words)


class _Refused(Exception):
    """A usage error found while parsing, said once the whole line is judged."""

    def __init__(self, parser: Parser, message: str) -> None:
        super().__init__(message)
        self.parser, self.message = parser, message


def _unknown_option(parser: argparse.ArgumentParser, word: str) -> bool:
    """Whether ``parser`` takes ``word`` for an option it does not have (argparse's own
    reading: abbreviations and negative numbers as it sees them)."""
    found: object = parser._parse_optional(word)
    if found is None:
        return False  # a positional (e.g. "-5" where no option looks like a number)
    cases = found if isinstance(found, list) else [found]
    return all(isinstance(case, tuple) and case[0] is None for case in cases)


def _dash_hint(message: str, argv: list[str]) -> str:
    """What to do when an option's value was taken for an option: write it with '='."""
    match = re.match(r"argument (\S+): expected one argument$", message)
    if not match:
        return ""
    names = match[1].split("/")
    after = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word in names]
    if any(word.startswith("-") for word in after):
        return "; a value that starts with '-' is written with '=' (--OPTION=VALUE)"
    return ""


def _fail(text: str, what: str) -> NoReturn:
    """Refuse ``text`` quoted as typed (undecodable bytes as \\xNN, not as Python's
    surrogates), then ``what`` is wrong or accepted."""
    raise argparse.ArgumentTypeError(f"'{printable(text)}': {what}")


def _integer(text: str, what: str) -> int:
    """A decimal integer of at most 20 digits (no huge conversions), else the error."""
    body = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,20}", body):
        _fail(text, what)
    return int(body)


def _whole(text: str, low: int, high: int, what: str) -> int:
    value = _integer(text, what)
    if not low <= value <= high:
        _fail(text, what)
    return value


def id_arg(text: str) -> int:
    """A pid or tgid: 1 .. 2**32-1."""
    return _whole(text, 1, ID_MAX, f"a pid is a whole number from 1 to {ID_MAX}")


def count_arg(text: str) -> int:
    """A count: 0 .. 2**31-1."""
    return _whole(text, 0, COUNT_MAX, f"give a whole number from 0 to {COUNT_MAX}")


def positive_arg(text: str) -> int:
    """A count of at least 1."""
    return _whole(text, 1, COUNT_MAX, f"give a whole number from 1 to {COUNT_MAX}")


def bounded_arg(low: int, high: int) -> Callable[[str], int]:
    """A ``type=`` for a whole number in [low, high]."""
    what = f"give a whole number from {low} to {high}"

    def parse(text: str) -> int:
        return _whole(text, low, high, what)
    parse.__name__ = "number"
    return parse


def text_arg(max_len: int) -> Callable[[str], str]:
    """A ``type=`` for text taskstatsd accepts: valid UTF-8, at most ``max_len``
    characters (what its request schema allows)."""
    def parse(text: str) -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            _fail(text, "not valid UTF-8 (names are matched as UTF-8 text)")
        if len(text) > max_len:
            _fail(text[:40] + "...", f"longer than {max_len} characters")
        return text
    parse.__name__ = "text"
    return parse


def seconds_arg(low: float, high: float) -> Callable[[str], float]:
    """A ``type=`` for a number of seconds in [low, high] (finite, no nan)."""
    what = f"give a number of seconds from {low:g} to {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            _fail(text, what)
        if not (math.isfinite(value) and low <= value <= high):
            _fail(text, what)
        return value
    parse.__name__ = "seconds"
    return parse


def cpulist_arg(text: str) -> str:
    """A cpulist ("0-3,5") naming only CPUs this machine may have."""
    try:
        cpus = parse_cpulist(text)
    except ValueError as err:
        _fail(text, f"{err}; give a cpulist such as 0-3,5")
    try:
        possible = set(possible_cpus())
    except (OSError, ValueError):  # no sysfs: the kernel will judge
        return text
    extra = [cpu for cpu in cpus if cpu not in possible]
    if extra:
        _fail(text, f"no CPU {extra[0]} on this machine; possible CPUs: {_span(possible)}")
    return text


def _span(cpus: set[int]) -> str:
    return f"{min(cpus)}-{max(cpus)}" if cpus else "none"


def uid_arg(text: str) -> int:
    """A user: a name of the password database, or a uid 0 .. 2**32-2."""
    what = "no such user; give a user name or a uid"
    if re.fullmatch(r"[0-9]+", text.strip()):
        value = _integer(text, what)
        if value < ID_MAX:
            return value
        _fail(text, f"a uid is a whole number from 0 to {ID_MAX - 1}")
    try:
        return pwd.getpwnam(text).pw_uid
    except (KeyError, ValueError, UnicodeError):
        _fail(text, what)


def user_arg(text: str) -> str:
    """``uid_arg`` checked, the text kept (top filters match the name or the uid)."""
    uid_arg(text)
    return text


def cgroup_dir_arg(text: str) -> str:
    """A cgroup: ``/sys/fs/cgroup/...`` or a path below a hierarchy (``/system.slice``)
    that exists; returned relative to its hierarchy, as /proc/PID/cgroup shows it."""
    what = "no such cgroup; give a path such as /system.slice or /sys/fs/cgroup/system.slice"
    path = os.path.normpath("/" + text.strip().lstrip("/")) if text.strip() else ""
    if not path:
        _fail(text, what)
    for root in _cgroup_roots():
        if path == root or path.startswith(root + "/"):
            if os.path.isdir(path):
                return path[len(root):] or "/"
            _fail(text, what)
    if any(os.path.isdir(root + path) for root in _cgroup_roots()):
        return path
    _fail(text, what)


def _cgroup_roots() -> list[str]:
    """Mount points of cgroup hierarchies, deepest first (v1 sits below /sys/fs/cgroup)."""
    roots = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] in ("cgroup", "cgroup2"):
                    roots.append(parts[1])
    except OSError:
        pass
    return sorted(roots or ["/sys/fs/cgroup"], key=len, reverse=True)


def socket_arg(text: str) -> str:
    """taskstatsd's socket path: not empty, at most 107 bytes (sun_path)."""
    if not text.strip():
        _fail(text, "give the path of taskstatsd's socket, e.g. /run/taskstats/taskstatsd.sock")
    if len(os.fsencode(text)) > 107:
        _fail(text[:40] + "...", "longer than a Unix socket path may be (107 bytes)")
    return text


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (existing: the same inode; else the
    same resolved path); for an output that would overwrite an input or another output."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def stdout_clash(option: str, path: str | None) -> str | None:
    """The usage error when output file ``path`` (of ``option``) is the regular file
    stdout is redirected to: writing it replaces that file, and what went to stdout is
    lost.  None otherwise (no path, a terminal, a pipe, stdout named as such: asked for)."""
    if not path or path in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        return None
    try:
        out, named = os.fstat(sys.stdout.fileno()), os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(out.st_mode) or (out.st_dev, out.st_ino) != (named.st_dev,
                                                                      named.st_ino):
        return None
    return (f"{option} {printable(path)} is the file stdout is redirected to: what is "
            "printed would be lost; give another file")


def output_file_arg(text: str) -> str:
    """A report to write (an HTML page); see :func:`_output_file`."""
    return _output_file(text, "report.html")


def trace_file_arg(text: str) -> str:
    """A trace to write (JSON); see :func:`_output_file`."""
    return _output_file(text, "trace.json")


def _output_file(text: str, example: str) -> str:
    """A file to write, checked before any work is done: a name in an existing
    directory this user may write in, not a directory; or an existing non-regular
    file this user may write (``/dev/stdout``, a FIFO: written into).  ``example``:
    a file name the messages suggest."""
    if not text.strip():
        _fail(text, f"give a file name, e.g. {example}")
    try:
        resolve_output(text)  # another user's symlink: refused now, not after the run
    except OSError as err:
        _fail(text, str(err.strerror))
    if os.path.isdir(text):
        _fail(text, f"is a directory: give a file name in it, e.g. {example}")
    if os.path.exists(text) and not os.path.isfile(text):
        if not os.access(text, os.W_OK):
            _fail(text, "this user may not write it")
        return text
    path = os.path.realpath(text)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        _fail(text, f"no directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (
            os.path.exists(path) and not os.access(path, os.W_OK)):
        _fail(text, f"this user may not write {'it' if os.path.exists(path) else 'in ' + folder}")
    return text


def when_arg(text: str, now_ns: int | None = None) -> int:
    """A point in time as ns since the epoch; see :data:`WHEN_FORMS`."""
    now = time.time_ns() if now_ns is None else now_ns
    body = text.strip().lower()
    value = _relative(body, now)
    if value is None:
        value = _absolute(body)
    if value is None:
        _fail(text, f"give {WHEN_FORMS}")
    if not WHEN_MIN_NS <= value <= WHEN_MAX_NS:
        _fail(text, "out of range: the journal holds times from 1970 to 2262")
    return value


_OUT_OF_RANGE = WHEN_MAX_NS + 1  # a date Python cannot place: refused as out of range


def when_text_arg(text: str) -> str:
    """``when_arg`` checked now, the text kept (ages count from the request)."""
    when_arg(text)
    return text


def _relative(body: str, now: int) -> int | None:
    if body == "now":
        return now
    if body in ("today", "yesterday"):
        midnight = datetime.datetime.fromtimestamp(now / _NS).replace(
            hour=0, minute=0, second=0, microsecond=0)
        if body == "yesterday":
            midnight -= datetime.timedelta(days=1)
        return int(midnight.timestamp()) * _NS
    match = _AGE.fullmatch(body.removesuffix(" ago"))
    if match:
        return now - int(float(match[1]) * _AGE_UNITS[match[2]] * _NS)
    return _time_of_day(body, now)


def _time_of_day(body: str, now: int) -> int | None:
    """``HH:MM[:SS]``: the last such moment (today, or yesterday if that is to come)."""
    match = re.fullmatch(r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?", body)
    if not match:
        return None
    today = datetime.datetime.fromtimestamp(now / _NS)
    moment = today.replace(hour=int(match[1]), minute=int(match[2]),
                           second=int(match[3] or 0), microsecond=0)
    if moment > today:
        moment -= datetime.timedelta(days=1)
    return int(moment.timestamp()) * _NS


def _absolute(body: str) -> int | None:
    if re.fullmatch(r"[0-9]{1,20}(\.[0-9]{1,9})?", body):  # epoch seconds (range: caller)
        whole, _, frac = body.partition(".")
        return int(whole) * _NS + int((frac + "0" * 9)[:9])
    try:
        moment = datetime.datetime.fromisoformat(re.sub(r"z$", "+00:00", body).upper())
    except ValueError:
        return None
    try:
        return int(moment.timestamp() * 1e6) * 1000  # naive: local time
    except (OverflowError, OSError, ValueError):
        return _OUT_OF_RANGE


def join_dash_values(argv: Sequence[str], command: str, options: Sequence[str]
                     ) -> list[str]:
    """``--sort -x`` as ``--sort=-x`` after ``command``: argparse would take ``-x`` for
    an option.  Only for ``options`` whose values may start with "-"."""
    out = list(argv)
    if command not in out:
        return out
    i = out.index(command) + 1
    while i < len(out) - 1:
        if out[i] == "--":
            break
        if out[i] in options and out[i + 1].startswith("-") and out[i + 1] not in (
                "-", "--", "-h") and not out[i + 1].startswith("--"):
            out[i:i + 2] = [f"{out[i]}={out[i + 1]}"]
        i += 1
    return out


def printable(text: str) -> str:
    """``text`` on one line and printable on any stream: control characters escaped,
    undecodable argv bytes (surrogateescape) as \\xNN."""
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)
