"""The command lines as data: the argparse parsers of ``taskstats`` and ``taskstatsd``
walked into :class:`Command` trees, from which the man pages and the shell
completions are generated (so neither can drift from the parsers).

Building a parser runs nothing: :func:`commands` only constructs and reads them.
``taskstats``'s parser is handed in (``args.build_parser``, set by the command line's
``build_parser``): this module cannot import the module that imports the commands.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .getdelays import doc_parser

# how a value is completed: files for these dests and FILE metavars, directories for
# DIR metavars, users for these dests (anything else: free text)
FILE_DESTS = frozenset({"socket"})
USER_DESTS = frozenset({"uid", "user"})


@dataclass(frozen=True)
class Option:
    """An option: its flags (``-n``, ``--count``), the value's name (None: a flag
    without a value), its choices, help text and how its value is completed
    (``file``, ``dir``, ``user`` or ``""``)."""

    flags: tuple[str, ...]
    metavar: str | None
    choices: tuple[str, ...]
    help: str
    complete: str = ""


@dataclass(frozen=True)
class Positional:
    """A positional argument: name, choices, help, and whether it is optional
    (``?``) or takes the rest of the line (a command after ``--``)."""

    name: str
    choices: tuple[str, ...]
    help: str
    optional: bool
    rest: bool


@dataclass(frozen=True)
class Command:
    """A parser: ``path`` from the program (``("taskstats", "run")``), its one-line
    summary (its help in the parent's list), description, usage line (without
    "usage: "), options, positionals and subcommands."""

    path: tuple[str, ...]
    summary: str
    description: str
    usage: str
    options: tuple[Option, ...]
    positionals: tuple[Positional, ...]
    commands: tuple[Command, ...]

    @property
    def name(self) -> str:
        """``taskstats-run`` (the man page's name)."""
        return "-".join(self.path)

    def all_flags(self) -> list[str]:
        """Every option string of this command."""
        return [flag for option in self.options for flag in option.flags]


def _text(value: object) -> str:
    text = "" if value is None or value == argparse.SUPPRESS else str(value)
    return " ".join(text.split()).replace("%%", "%")


def _option(action: argparse.Action, known: dict[str, tuple[str, ...]]) -> Option:
    takes = action.nargs != 0
    choices = tuple(str(c) for c in action.choices) if action.choices else known.get(
        action.dest, ())
    metavar = None
    if takes:
        metavar = action.metavar if isinstance(action.metavar, str) else (
            "{" + ",".join(choices) + "}" if choices else action.dest.upper())
    complete = ("file" if action.dest in FILE_DESTS or str(metavar).startswith("FILE")
                else "dir" if metavar == "DIR" else "user" if action.dest in USER_DESTS
                else "")
    help_text = _text(action.help)
    if "%(default)" in help_text:
        help_text = help_text.replace("%(default)s", str(action.default))
    return Option(tuple(action.option_strings), metavar, choices, help_text,
                  complete if takes else "")


def _positional(action: argparse.Action) -> Positional:
    choices = tuple(str(c) for c in action.choices) if action.choices else ()
    name = action.metavar if isinstance(action.metavar, str) else action.dest
    return Positional(name, choices, _text(action.help), action.nargs in ("?", "*"),
                      action.nargs == argparse.REMAINDER)


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...], summary: str = "",
         replace: dict[str, argparse.ArgumentParser] | None = None,
         choices: dict[str, tuple[str, ...]] | None = None) -> Command:
    """The :class:`Command` of ``parser``; a subcommand named in ``replace`` is walked
    from the parser given there (one made to describe it); ``choices``: the choices of
    options (by dest) checked after parsing rather than by argparse."""
    options, positionals, commands = [], [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: _text(a.help) for a in action._choices_actions}
            for name, sub in action.choices.items():
                described = (replace or {}).get(name) or sub
                commands.append(walk(described, (*path, name), helps.get(name, ""), replace))
        elif action.option_strings:
            if action.help != argparse.SUPPRESS:
                options.append(_option(action, choices or {}))
        else:
            positionals.append(_positional(action))
    usage = " ".join(parser.format_usage().split()).removeprefix("usage: ")
    return Command(path, summary or _text(parser.description), _text(parser.description),
                   usage, tuple(options), tuple(positionals), tuple(commands))


def commands(taskstats: argparse.ArgumentParser) -> tuple[Command, Command]:
    """``taskstats`` (its parser given: the command line's ``build_parser()``) and
    ``taskstatsd`` as :class:`Command` trees; getdelays, whose own getopt parser
    argparse never sees, is walked from the parser that describes it."""
    from ..daemon.config import CHOICES, build_parser  # noqa: PLC0415 - only for the docs

    return (walk(taskstats, ("taskstats",), replace={"getdelays": doc_parser()}),
            walk(build_parser(), ("taskstatsd",), choices=CHOICES))
