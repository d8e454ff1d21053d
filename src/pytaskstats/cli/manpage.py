"""``taskstats man [PAGE]``: the man pages, generated from the argument parsers.

One page per command: taskstats(1) (global options, the command list, exit status,
environment), taskstats-COMMAND(1) for each subcommand, and taskstatsd(8).  The
roff is plain man(7) macros (.TH .SH .TP .B .I), deterministic (no date: the
version stands in the footer), and renders with ``groff -man -ww`` without warnings.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import __version__
from .args import printable
from .diff import REGRESSION
from .parsewalk import Command, Option, Positional, commands

SEE_ALSO_DAEMON = ("taskstatsd", 8)
_EXIT_STATUS = (
    ("0", "success"),
    ("1", "a runtime error: one line on stderr says what happened and what to do"),
    ("2", "a usage error: one line on stderr says what is wrong and what is accepted"),
)
_RUN_STATUS = ("run passes its command's status through: 126 when it cannot be executed, "
               "127 when it is not found, 128+N when it was killed by signal N; its own "
               "errors are 1 and 2, as above, with a line on stderr")
_DIFF_STATUS = ("diff --fail-above: the whole run's FIELD grew by more than PCT percent (a "
                "regression, told apart from an error; the comparison is printed)")
_ENVIRONMENT = (
    ("TASKSTATS_SOCKET", "taskstatsd's socket when --socket is not given (default "
     "/run/taskstats/taskstatsd.sock)"),
    ("TASKSTATS_DEBUG", "when set, an internal error shows its Python traceback"),
)
_DAEMON_FILES = (
    ("/etc/taskstats/taskstatsd.conf", "settings, section [taskstatsd], one key per long "
     "option with _ for - (a commented sample ships as contrib/taskstatsd.conf)"),
    ("/var/lib/taskstats", "the exit journal (SQLite), the default --state-dir"),
    ("/run/taskstats/taskstatsd.sock", "the clients' socket, the default --socket"),
)


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("man", help="print a man page (roff) generated from the parsers",
                       description="Print a man page as roff on stdout: taskstats(1), "
                       "taskstats-COMMAND(1) or taskstatsd(8). Read it with "
                       "'taskstats man run | man -l -'; install with 'taskstats man --list'.")
    p.add_argument("page", nargs="?", default="taskstats",
                   help="taskstats (default), a command (run or taskstats-run), or taskstatsd;"
                   " a section suffix (.1, .8) is allowed")
    p.add_argument("--list", action="store_true",
                   help="print the file name of every page (taskstats-run.1, ...), one a line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the page (or the list); an unknown page is a usage error."""
    found = pages(args.build_parser())
    if args.list:
        sys.stdout.write("".join(f"{name}.{section}\n" for name, (section, _) in found.items()))
        return 0
    name = str(args.page).rsplit(".", 1)[0] if str(args.page)[-2:] in (".1", ".8") \
        else str(args.page)
    key = name if name in found else f"taskstats-{name}"
    if key not in found:
        print(f"taskstats man: no page '{printable(args.page)}'; pages: "
              f"{', '.join(found)}", file=sys.stderr)
        return 2
    sys.stdout.write(found[key][1])
    return 0


def pages(parser: argparse.ArgumentParser) -> dict[str, tuple[int, str]]:
    """Every page (``parser``: taskstats'): name -> (section, roff text)."""
    main, daemon = commands(parser)
    out = {main.name: (1, render_main(main))}
    for command in main.commands:
        out[command.name] = (1, render_command(command))
    out[daemon.name] = (8, render_daemon(daemon))
    return out


def escape(text: str) -> str:
    """``text`` safe in a roff text line: backslashes and minus signs escaped, a
    leading control character neutralised."""
    body = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + body if body[:1] in (".", "'") else body


def _header(name: str, section: int, summary: str) -> list[str]:
    manual = "System Administration" if section == 8 else "User Commands"
    return [f'.TH "{name.upper()}" "{section}" "" "pytaskstats {__version__}" "{manual}"',
            ".SH NAME", f"{escape(name)} \\- {escape(summary)}"]


def _synopsis(usage: str) -> list[str]:
    return [".SH SYNOPSIS", ".nh", ".ad l", escape(usage), ".ad", ".hy"]


def _option_lines(options: tuple[Option, ...], positionals: tuple[Positional, ...]
                  ) -> list[str]:
    lines: list[str] = []
    for positional in positionals:
        lines += [".TP", f"\\fI{escape(positional.name)}\\fR",
                  escape(positional.help or _choices_text(positional.choices))]
    for option in options:
        flags = ", ".join(f"\\fB{escape(flag)}\\fR" for flag in option.flags)
        if option.metavar is not None:
            flags += f" \\fI{escape(option.metavar)}\\fR"
        text = option.help
        if option.choices and "one of" not in text:
            text += f" ({_choices_text(option.choices)})"
        lines += [".TP", flags, escape(text)]
    return lines


def _choices_text(choices: tuple[str, ...]) -> str:
    return "one of " + ", ".join(choices) if choices else ""


def _listing(title: str, rows: tuple[tuple[str, str], ...]) -> list[str]:
    lines = [f".SH {title}"]
    for key, text in rows:
        lines += [".TP", f"\\fB{escape(key)}\\fR", escape(text)]
    return lines


def _see_also(refs: list[tuple[str, int]]) -> list[str]:
    shown = [f"\\fB{escape(name)}\\fR({section})" for name, section in refs]
    return [".SH SEE ALSO", ",\n".join(shown)]


def render_main(cmd: Command) -> str:
    """taskstats(1): global options, every command, exit status, environment."""
    lines = _header(cmd.name, 1, "Linux per-task accounting and delays (taskstats)")
    lines += [*_synopsis(cmd.usage), ".SH DESCRIPTION", escape(cmd.description),
              ".PP", escape("Each command has its own page, taskstats-COMMAND(1), and "
                            "--help."), ".SH OPTIONS", *_option_lines(cmd.options, ())]
    lines.append(".SH COMMANDS")
    for sub in cmd.commands:
        lines += [".TP", f"\\fB{escape(sub.path[-1])}\\fR", escape(sub.summary)]
    lines += _listing("EXIT STATUS", (*_EXIT_STATUS, (str(REGRESSION), _DIFF_STATUS),
                                      ("run", _RUN_STATUS)))
    lines += _listing("ENVIRONMENT", _ENVIRONMENT)
    lines += _see_also([(sub.name, 1) for sub in cmd.commands] + [SEE_ALSO_DAEMON])
    return "\n".join(lines) + "\n"


def render_command(cmd: Command) -> str:
    """taskstats-COMMAND(1)."""
    lines = _header(cmd.name, 1, cmd.summary)
    lines += [*_synopsis(cmd.usage), ".SH DESCRIPTION", escape(cmd.description or cmd.summary)]
    if cmd.options or cmd.positionals:
        lines += [".SH OPTIONS", *_option_lines(cmd.options, cmd.positionals)]
    lines += [".PP", escape("The global options (--backend, --socket) go before the "
                            "command; see taskstats(1).")]
    statuses = {"run": (*_EXIT_STATUS, ("other", _RUN_STATUS)),
                "diff": (*_EXIT_STATUS, (str(REGRESSION), _DIFF_STATUS))}
    lines += _listing("EXIT STATUS", statuses.get(cmd.path[-1], _EXIT_STATUS))
    lines += _see_also([("taskstats", 1), SEE_ALSO_DAEMON])
    return "\n".join(lines) + "\n"


def render_daemon(cmd: Command) -> str:
    """taskstatsd(8)."""
    lines = _header(cmd.name, 8, "the kernel's taskstats as a service")
    lines += [*_synopsis(cmd.usage), ".SH DESCRIPTION", escape(cmd.description),
              ".PP", escape("Settings come from the defaults, then the config file, then "
                            "the options; every setting is checked before the daemon "
                            "touches the disk."), ".SH OPTIONS",
              *_option_lines(cmd.options, cmd.positionals)]
    lines += _listing("EXIT STATUS", (("0", "stopped (SIGTERM or SIGINT)"),
                                      ("1", "the start failed (the reason on stderr)"),
                                      ("2", "a bad setting or option")))
    lines += _listing("FILES", _DAEMON_FILES)
    lines += _see_also([("taskstats", 1), ("systemd.service", 5)])
    return "\n".join(lines) + "\n"
