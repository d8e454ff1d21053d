"""``taskstats getdelays``: a drop-in for the kernel's tools/accounting/getdelays.

Same options (getopt string ``qdiw:r:m:t:p:vlC:c:``; ``-c`` must come last and
takes the rest of the command line), the same echo lines, and the same output
byte for byte: the delay tables switch format on the record's struct version
(<16, 16, >=17 with the "delay max timestamp" column in local time), keeping the
original's column drift (17-character ``%15.3fms`` cells under 15-character
headers).  Units as printed by the original: counts, totals in ns, averages and
max/min in ms.

Fixed on purpose (the original's known bugs):

- whole exit messages: both the PID and the TGID record of a dual-record exit are
  printed (with ``-l`` and without), never "fatal reply error" on truncation;
- the exit status is 1 on any runtime failure (message on stderr) and 2 on a
  usage error (message and usage on stderr), instead of 0 or 255;
- ``-w`` writes exactly sizeof(struct taskstats) bytes per record, in the
  record's own version layout (the original wrote 4 bytes more);
- THRASHING (and RECLAIM) rows are printed only when the record has the fields
  (struct version >= 9, >= 7); the original printed zeros for older versions;
- ``-i`` on a TGID record prints a note instead of an empty comm and zeros;
- ``-c`` takes the command's record from an exit listener on every CPU
  registered before it starts, not by querying an unreaped zombie; Ctrl-C goes
  to the command and its record is still printed.  The command's own exit
  status is not passed through (as in the original): 0 unless getdelays fails;
- a delay-accounting-off note goes to stderr once, so stdout stays parseable;
- ``-l`` without ``-m`` ends after the reply instead of waiting forever; Ctrl-C
  or SIGTERM ends ``-l`` with status 0 after deregistering;
- stray arguments, ``12abc`` pids and bad cpumasks are usage errors;
  ``-h`` prints the (complete) usage on stdout.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from .. import delayacct
from ..client import choose_backend, daemon_socket
from ..cpulist import parse_cpulist
from ..errors import TaskstatsError
from ..fields import Scope
from ..kernel import LISTEN_RCVBUF, QUERY_RCVBUF, Connection
from ..listener import Listener
from ..records import CgroupStats, ExitRecord, Lost, TaskStats
from ..report import resolve_output
from ..taskstats import encode_stats
from .getdelays_format import Sections, cgroup_line, exit_records, format_stats, message_size

OPTSTRING = "qdiw:r:m:t:p:vlC:c:"
USAGE = """\
usage: taskstats getdelays [-dilqv] [-w logfile] [-r bufsize] [-m cpumask]
                           [-t tgid | -p pid | -C cgroup] [-c command [args...]]
  -d: print delayacct stats
  -i: print IO accounting (per task: -p, -c or exit records; not -t)
  -q: print task context switch counts
  -p PID: query a task;  -t TGID: query a thread group (process)
  -c CMD [ARGS...]: run CMD, then print its task record (must be the last option)
  -C DIR: count the tasks of a cgroup v1 directory by state
  -m MASK: listen for task exits on the CPUs in MASK (a cpulist such as 0-3,5)
  -l: listen forever (with -m; Ctrl-C ends it)
  -w FILE: append each record's raw struct taskstats to FILE
  -r N: socket receive buffer size in bytes (0: default)
  -v: debug on
"""
DEREGISTER_LINE = "Sent deregister mask, retval 0"


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class _Help(Exception):
    """-h / --help was given."""


@dataclass
class Options:
    """The parsed command line; ``echo`` holds the lines getdelays echoes on stdout."""

    delays: bool = False
    io: bool = False
    ctxsw: bool = False
    debug: bool = False
    loop: bool = False
    scope: Scope = "pid"
    ident: int = 0
    command: list[str] = field(default_factory=list)
    cgroup: str | None = None
    mask: str | None = None
    rcvbuf: int = 0
    logfile: str | None = None
    echo: list[str] = field(default_factory=list)
    via: str | None = None  # taskstatsd's socket (the daemon backend), None: the kernel

    @property
    def sections(self) -> Sections:
        """The per-record sections selected by -d, -i and -q."""
        return Sections(self.delays, self.io, self.ctxsw)


# each getopt letter of OPTSTRING: (its value's name or None, help) for the man page
# and the completions (a test checks the letters and values against OPTSTRING)
OPTIONS: dict[str, tuple[str | None, str]] = {
    "d": (None, "print delay accounting (delayacct) statistics"),
    "i": (None, "print IO accounting (per task: -p, -c or exit records; not -t)"),
    "q": (None, "print task context switch counts"),
    "p": ("PID", "query a task (thread)"),
    "t": ("TGID", "query a thread group (process)"),
    "c": ("CMD", "run CMD with its ARGS, then print its task record (must be the "
                 "last option)"),
    "C": ("DIR", "count the tasks of a cgroup v1 directory by state"),
    "m": ("MASK", "listen for task exits on the CPUs in MASK (a cpulist such as 0-3,5)"),
    "l": (None, "listen forever (with -m; Ctrl-C ends it)"),
    "w": ("FILE", "append each record's raw struct taskstats to FILE"),
    "r": ("N", "socket receive buffer size in bytes (0: default)"),
    "v": (None, "debug output"),
}


def doc_parser() -> argparse.ArgumentParser:
    """A parser that describes getdelays' options (for the man page and the shell
    completions; getdelays parses its command line itself, getopt-style)."""
    p = argparse.ArgumentParser(
        prog="taskstats getdelays", usage=USAGE.split("\n  -", 1)[0].removeprefix("usage: "),
        description="A drop-in for the kernel's tools/accounting/getdelays: the same "
        "options, echo lines and output.")
    for letter, (metavar, text) in OPTIONS.items():
        if metavar is None:
            p.add_argument("-" + letter, action="store_true", help=text)
        else:
            p.add_argument("-" + letter, metavar=metavar, help=text)
    return p


def add_parser(sub: Any) -> None:
    """List the subcommand in ``taskstats -h``.

    ``taskstats getdelays ...`` is dispatched before argparse; after global options
    (``taskstats --backend kernel getdelays -d -p 1``) argparse hands every argument
    through untouched ("+" prefix: no "-" option is argparse's).
    """
    p = sub.add_parser("getdelays", add_help=False, prefix_chars="+",
                       help="drop-in for the kernel's getdelays "
                       "(-d -i -q -v -l -p -t -c -C -m -w -r)")
    p.add_argument("args", nargs="...")
    p.set_defaults(func=lambda args: main(args.args, backend=args.backend,
                                          socket=args.socket))


# ---------------------------------------------------------------- command line (pure)

def _split(argv: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """getopt-style scan: (option, argument) pairs, and the -c command (rest of argv)."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        token, i = argv[i], i + 1
        if token in ("-h", "--help"):
            raise _Help
        if token == "--" or not token.startswith("-") or token == "-":
            rest = argv[i:] if token == "--" else argv[i - 1:]
            if rest:
                raise UsageError(f"unexpected argument {rest[0]!r}")
            break
        j = 1
        while j < len(token):
            ch, j = token[j], j + 1
            pos = OPTSTRING.find(ch)
            if ch == ":" or pos < 0:
                raise UsageError(f"invalid option -- '{ch}'")
            if OPTSTRING[pos + 1: pos + 2] != ":":
                pairs.append((ch, ""))
                continue
            if j < len(token):
                arg = token[j:]
            elif i < len(argv):
                arg, i = argv[i], i + 1
            else:
                raise UsageError(f"option requires an argument -- '{ch}'")
            pairs.append((ch, arg))
            if ch == "c":
                return pairs, [arg, *argv[i:]]
            break
    return pairs, []


def _number(text: str, error: str, minimum: int, limit: int = 2**32) -> int:
    """A decimal in [minimum, limit), else UsageError(error)."""
    body = text.strip()
    if not (body.isascii() and body.isdigit()) or len(body) > 20 or not (
            minimum <= int(body) < limit):
        raise UsageError(error)
    return int(body)


_FLAGS = {"d": ("delays", "print delayacct stats ON"), "i": ("io", "printing IO accounting"),
          "q": ("ctxsw", "printing task/process context switch rates"),
          "v": ("debug", "debug on"), "l": ("loop", "listen forever")}


def _apply(o: Options, opt: str, arg: str) -> None:
    if opt in _FLAGS:
        name, echo = _FLAGS[opt]
        setattr(o, name, True)
        o.echo.append(echo)
    elif opt in "pt":
        o.scope = "pid" if opt == "p" else "tgid"
        o.ident = _number(arg, f"Invalid {o.scope}", 1)
    elif opt == "C":
        o.cgroup = arg
    elif opt == "w":
        o.logfile = arg
        o.echo.append(f"write to file {arg}")
    elif opt == "r":
        o.echo.append(f"receive buf size {arg}")
        o.rcvbuf = _number(arg, "Invalid rcv buf size", 0, 2**31)  # a C int
    elif opt == "m":
        try:
            parse_cpulist(arg)
        except ValueError as err:
            raise UsageError(f"Invalid cpumask {arg!r}: {err}") from err
        o.mask = arg
        o.echo.append(f"cpumask {arg} maskset 1")


def parse_args(argv: Sequence[str]) -> Options:
    """Parse getdelays' command line; raise UsageError with getdelays' messages."""
    pairs, command = _split(argv)
    opts = Options()
    for opt, arg in pairs:
        _apply(opts, opt, arg)
    if command:
        opts.command, opts.scope, opts.ident = command, "pid", 0
    if (opts.ident or opts.command) and opts.cgroup is not None:
        raise UsageError("Select either -t or -C, not both")
    if not (opts.mask or opts.ident or opts.command or opts.cgroup is not None):
        raise UsageError("nothing to do: give -p, -t, -c, -C or -m")
    return opts


# ---------------------------------------------------------------- I/O

class Output:
    """Writes to stdout (flushed per record, for pipes) and the -w file."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.fd: int | None = None

    def __enter__(self) -> Output:
        if self.opts.logfile is not None:
            try:
                # another user's symlink is not followed (root would truncate its target)
                path = resolve_output(self.opts.logfile)
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                  | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            except OSError as err:
                raise TaskstatsError(f"cannot open output file {self.opts.logfile!r}: "
                                     f"{err.strerror}") from err
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def text(self, text: str) -> None:
        """Write ``text`` to stdout now."""
        sys.stdout.write(text)
        sys.stdout.flush()

    def debug(self, line: str) -> None:
        """A -v line."""
        if self.opts.debug:
            self.text(line + "\n")

    def stats(self, t: TaskStats, ident: int) -> None:
        """Print one record and append its struct to the -w file."""
        self.debug(f"version {t.version}")
        self.text(format_stats(t, ident, self.opts.sections))
        if self.fd is not None:
            try:
                view = memoryview(encode_stats(t))
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError as err:
                raise TaskstatsError(f"write error on {self.opts.logfile!r}: "
                                     f"{err.strerror}") from err

    def exit(self, record: ExitRecord) -> None:
        """Print (and write) an exit message's records."""
        pairs = exit_records(record)
        self.debug(f"received {message_size([t for t, _ in pairs])} bytes")
        for t, ident in pairs:
            self.stats(t, ident)


def _ignore(signum: int, frame: object) -> None:
    """SIGINT handler while -c runs: the command gets Ctrl-C, we keep going."""


def _exit_record(listener: Listener, proc: subprocess.Popen[bytes]) -> ExitRecord:
    """Wait for the exit record of ``proc`` (it is queued before the process is waitable)."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        while True:
            ready, _, _ = select.select([*listener.fds, pidfd], [], [])
            for event in listener.drain():
                if isinstance(event, ExitRecord) and event.pid == proc.pid:
                    return event
            if pidfd in ready:
                break
    finally:
        os.close(pidfd)
    lost = listener.lost
    why = f": {lost} exit records were lost (listener overrun; try a larger -r)" if lost else ""
    raise TaskstatsError(f"the exit record of pid {proc.pid} did not arrive{why}")


def run_command(argv: list[str], rcvbuf: int, via: str | None = None) -> ExitRecord:
    """Run ``argv`` under an exit listener on every CPU (of taskstatsd at ``via``);
    return its exit record."""
    with Listener(None, rcvbuf=rcvbuf or LISTEN_RCVBUF, socket_path=via) as listener:
        sys.stdout.flush()
        previous = signal.signal(signal.SIGINT, _ignore)
        try:
            try:
                proc = subprocess.Popen(argv)
            except OSError as err:
                raise TaskstatsError(f"cannot run {argv[0]!r}: {err.strerror}") from err
            with proc:
                return _exit_record(listener, proc)
        finally:
            signal.signal(signal.SIGINT, previous)


def cgroup_stats(conn: Connection, path: str) -> CgroupStats:
    """cgroupstats of the cgroup v1 directory ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise TaskstatsError(f"cannot open cgroup directory {path!r}: {err.strerror}") from err
    try:
        return conn.cgroup(fd)
    finally:
        os.close(fd)


def listen(listener: Listener, out: Output, *, forever: bool) -> None:
    """Print exit records as they come: the first one, or all until Ctrl-C/SIGTERM."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            for event in listener.poll(None):
                if isinstance(event, Lost):
                    print(f"getdelays: lost {event.records} exit records ({event.reason}, "
                          f"cpus {event.cpus})", file=sys.stderr)
                    continue
                out.exit(event)
                if not forever:
                    return
    except KeyboardInterrupt:
        return
    finally:
        signal.signal(signal.SIGTERM, previous)


def _query(conn: Connection, opts: Options, out: Output) -> None:
    if opts.command:
        record = run_command(opts.command, opts.rcvbuf, opts.via)
        out.debug(f"received {message_size([record.task])} bytes")
        out.stats(record.task, record.pid)
    elif opts.ident:
        stats = conn.query(opts.scope, opts.ident)
        out.debug("Sent pid/tgid, retval 0")
        out.debug(f"received {message_size([stats])} bytes")
        out.stats(stats, opts.ident)
    elif opts.cgroup is not None:
        counts = cgroup_stats(conn, opts.cgroup)
        out.debug("received 64 bytes")
        out.text(cgroup_line(counts))


def run(opts: Options) -> int:
    """Do what the options say; TaskstatsError on failure."""
    with ExitStack() as stack:
        out = stack.enter_context(Output(opts))
        conn = stack.enter_context(Connection(opts.rcvbuf or QUERY_RCVBUF,
                                              socket_path=opts.via))
        out.debug(f"family id {conn.family.id}")
        listener = None
        if opts.mask is not None:
            listener = Listener(opts.mask, rcvbuf=opts.rcvbuf or LISTEN_RCVBUF,
                                socket_path=opts.via)
            stack.callback(out.text, DEREGISTER_LINE + "\n")
            stack.enter_context(listener)
            out.debug("Sent register cpumask, retval 0")
        _query(conn, opts, out)
        only_listen = not (opts.ident or opts.command or opts.cgroup is not None)
        if listener is not None and (opts.loop or only_listen):
            listen(listener, out, forever=opts.loop)
    return 0


def choose_source(backend: str, socket: str | None) -> str | None:
    """taskstatsd's socket path for the daemon backend, None for the kernel; "auto" as
    Client resolves it.  TaskstatsError when it resolves to /proc: getdelays speaks
    the TASKSTATS protocol, which only the kernel and taskstatsd answer."""
    path = daemon_socket(socket)
    chosen, reason = choose_backend(backend, path)
    if chosen == "procfs":
        why = reason.split(": reading /proc", 1)[0]
        raise TaskstatsError(f"needs the kernel's taskstats or taskstatsd, not /proc: {why}; "
                             "run as root or start taskstatsd ('taskstats get' reads /proc)")
    return path if chosen == "daemon" else None


def main(argv: Sequence[str], *, backend: str = "auto", socket: str | None = None) -> int:
    """``taskstats getdelays ARGS``: 0 ok, 1 runtime error, 2 usage error, 130 Ctrl-C.
    ``backend``/``socket``: the global options (auto: the kernel with CAP_NET_ADMIN,
    else taskstatsd)."""
    try:
        opts = parse_args(argv)
    except _Help:
        sys.stdout.write(USAGE)
        return 0
    except UsageError as err:
        sys.stderr.write(f"getdelays: {err}\n{USAGE}")
        return 2
    try:
        if opts.cgroup is not None and not os.path.isdir(opts.cgroup):
            raise TaskstatsError(f"cannot open cgroup directory {opts.cgroup!r}: "
                                 "no such directory")
        opts.via = choose_source(backend, socket)
        sys.stdout.write("".join(line + "\n" for line in opts.echo))
        sys.stdout.flush()
        if opts.delays and delayacct.status() is False:
            print(f"getdelays: note: {delayacct.OFF_NOTE}", file=sys.stderr)
        return run(opts)
    except TaskstatsError as err:
        sys.stdout.flush()
        print(f"getdelays: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (| head): stop quietly, as the C tool dies of SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
