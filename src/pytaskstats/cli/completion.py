"""``taskstats completion bash|zsh|fish``: shell completion scripts for ``taskstats``
and ``taskstatsd``, generated from the argument parsers (commands, options, their
choices; files, directories and users where an option takes one).

Each script is self-contained (bash needs no bash-completion helpers) and defines
the completion of both programs.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from .parsewalk import Command, Option, commands

SHELLS = ("bash", "zsh", "fish")


def add_parser(sub: Any) -> None:
    """Register the subcommand."""
    p = sub.add_parser("completion", help="print a shell completion script",
                       description="Print the completion script of taskstats and "
                       "taskstatsd for SHELL on stdout, e.g. 'taskstats completion bash > "
                       "/etc/bash_completion.d/taskstats' (see README).")
    p.add_argument("shell", choices=SHELLS, help="bash, zsh or fish")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the script."""
    sys.stdout.write(script(args.shell, args.build_parser()))
    return 0


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for ``shell`` (one of :data:`SHELLS`; ``parser``:
    taskstats')."""
    main, daemon = commands(parser)
    return {"bash": bash, "zsh": zsh, "fish": fish}[shell](main, daemon)


def _valued(cmd: Command) -> list[str]:
    return [flag for o in cmd.options if o.metavar is not None for flag in o.flags]


def _shq(text: str) -> str:
    """``text`` in single quotes for a POSIX shell (and zsh, and fish)."""
    return "'" + text.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------- bash

def _bash_values(cmd: Command, indent: str) -> list[str]:
    """A ``case "$prev"`` completing the values of ``cmd``'s options."""
    lines = [f'{indent}case "$prev" in']
    for o in cmd.options:
        if o.metavar is None:
            continue
        pattern = "|".join(o.flags)
        if o.choices:
            action = f"COMPREPLY=($(compgen -W {_shq(' '.join(o.choices))} -- \"$cur\"))"
        else:
            flag = {"file": "-f", "dir": "-d", "user": "-u"}.get(o.complete)
            action = _bash_names(flag) if flag else "COMPREPLY=()"
        lines.append(f"{indent}    {pattern}) {action}; return;;")
    lines.append(f"{indent}esac")
    return lines


def _bash_names(flag: str) -> str:
    """COMPREPLY from ``compgen FLAG``, one name a line: not split at blanks nor
    expanded as a glob (a file named '*' or 'a b' in the current directory), and
    quoted when inserted."""
    return f'mapfile -t COMPREPLY < <(compgen {flag} -- "$cur"); compopt -o filenames 2>/dev/null'


def _bash_words(cmd: Command) -> str:
    """Options when the word starts with "-", else the positionals' choices."""
    choices = [c for positional in cmd.positionals for c in positional.choices]
    return (f'if [[ $cur == -* ]]; then words={_shq(" ".join(cmd.all_flags()))}; '
            f'else words={_shq(" ".join(choices))}; fi')


def _bash_function(cmd: Command) -> list[str]:
    fn = "_" + cmd.name.replace("-", "_")
    lines = [f"{fn}() {{",
             "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
             "    local i cmd='' words='' words_end=0"]
    lines.append("    for ((i = 1; i < COMP_CWORD; i++)); do")
    lines.append('        case "${COMP_WORDS[i]}" in')
    valued = _valued(cmd)
    if valued:
        lines.append(f"            {'|'.join(valued)}) ((i++));;")
    lines.append("            --) words_end=$i; break;;")
    lines.append("            -*) ;;")
    lines.append('            *) [ -z "$cmd" ] && cmd=${COMP_WORDS[i]};;')
    lines += ["        esac", "    done"]
    lines += ['    if ((words_end)); then',  # after --: a command, then its arguments
              f"        if ((COMP_CWORD == words_end + 1)); then {_bash_names('-c')}; "
              f"else {_bash_names('-f')}; fi",
              "        return", "    fi"]
    if cmd.commands:
        lines.append('    case "$cmd" in')
        for sub in cmd.commands:
            lines.append(f"        {sub.path[-1]})")
            lines += _bash_values(sub, "            ")
            lines.append(f"            {_bash_words(sub)}")
            lines.append('            COMPREPLY=($(compgen -W "$words" -- "$cur")); return;;')
        lines += ["    esac"]
    lines += _bash_values(cmd, "    ")
    names = " ".join(sub.path[-1] for sub in cmd.commands)
    lines.append('    if [[ $cur == -* ]]; then')
    lines.append(f"        COMPREPLY=($(compgen -W {_shq(' '.join(cmd.all_flags()))} "
                 '-- "$cur"))')
    lines.append("    else")
    lines.append(f"        COMPREPLY=($(compgen -W {_shq(names)} -- \"$cur\"))")
    lines += ["    fi", "}", f"complete -F {fn} {cmd.name}"]
    return lines


def bash(main: Command, daemon: Command) -> str:
    """The bash script: ``_taskstats`` and ``_taskstatsd``, each bound by ``complete -F``."""
    lines = ["# bash completion for taskstats and taskstatsd (generated by "
             "'taskstats completion bash')"]
    lines += _bash_function(main) + _bash_function(daemon)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- zsh

def _short_help(text: str) -> str:
    """The help's first clause, for a one-line description."""
    first = re.split(r"; | \(|: ", text, maxsplit=1)[0].strip()
    return first[:70]


def _zsh_spec(o: Option) -> str:
    """An ``_arguments`` spec of option ``o``."""
    text = _short_help(o.help).replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    value = ""
    if o.metavar is not None:
        what = {"file": "_files", "dir": "_files -/", "user": "_users"}.get(o.complete, " ")
        if o.choices:
            what = "(" + " ".join(o.choices) + ")"
        value = ":" + o.metavar.replace(":", "\\:").lower() + ":" + what
    spec = f"[{text}]{value}"
    if len(o.flags) == 1:
        return _shq(o.flags[0] + spec)
    return "{" + ",".join(o.flags) + "}" + _shq(spec)


def _zsh_positionals(cmd: Command) -> list[str]:
    specs = []
    for i, p in enumerate(cmd.positionals, 1):
        if p.rest:
            specs.append(_shq("*::command:_normal"))
            continue
        what = "(" + " ".join(p.choices) + ")" if p.choices else " "
        colon = "::" if p.optional else ":"
        specs.append(_shq(f"{i}{colon}{p.name}:{what}"))
    return specs


def _zsh_function(cmd: Command) -> list[str]:
    fn = "_" + cmd.name.replace("-", "_")
    specs = [_zsh_spec(o) for o in cmd.options]
    lines = [f"{fn}() {{", "    local curcontext=$curcontext state line ret=1"]
    if not cmd.commands:
        lines += ["    _arguments -s " + " \\\n        ".join(specs + _zsh_positionals(cmd)),
                  "}"]
        return lines
    lines.append("    _arguments -C " + " \\\n        ".join(
        [*specs, _shq("1:command:->command"), _shq("*::argument:->argument")]) + " && ret=0")
    lines += ['    case $state in', "        command)", "            local -a cmds=("]
    lines += [f"                {_shq(sub.path[-1] + ':' + _short_help(sub.summary))}"
              for sub in cmd.commands]
    lines += ["            )", "            _describe command cmds && ret=0;;",
              "        argument)", '            case $line[1] in']
    for sub in cmd.commands:
        sub_specs = [_zsh_spec(o) for o in sub.options] + _zsh_positionals(sub)
        lines.append(f"                {sub.path[-1]}) _arguments -s "
                     + " \\\n                    ".join(sub_specs) + " && ret=0;;")
    lines += ["            esac;;", "    esac", "    return ret", "}"]
    return lines


def zsh(main: Command, daemon: Command) -> str:
    """The zsh script (an autoloadable ``_taskstats`` for $fpath, or ``source``d)."""
    lines = ["#compdef taskstats taskstatsd",
             "# zsh completion for taskstats and taskstatsd (generated by "
             "'taskstats completion zsh')"]
    lines += _zsh_function(main) + _zsh_function(daemon)
    lines += ['if [[ $zsh_eval_context[-1] == loadautofunc ]]; then',
              '    case $service in taskstatsd) _taskstatsd "$@";; *) _taskstats "$@";; esac',
              "else",
              "    compdef _taskstats taskstats", "    compdef _taskstatsd taskstatsd", "fi"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- fish

def _fish_option(prog: str, condition: str, o: Option) -> str:
    parts = [f"complete -c {prog}"]
    if condition:
        parts.append(f"-n {_shq(condition)}")
    for flag in o.flags:
        if flag.startswith("--"):
            parts.append(f"-l {flag[2:]}")
        elif len(flag) == 2:
            parts.append(f"-s {flag[1]}")
        else:
            parts.append(f"-o {flag[1:]}")
    if o.metavar is not None:
        if o.choices:
            parts.append(f"-x -a {_shq(' '.join(o.choices))}")
        elif o.complete == "user":
            parts.append("-x -a '(__fish_complete_users)'")
        elif o.complete == "dir":
            parts.append("-x -a '(__fish_complete_directories)'")
        elif o.complete == "file":
            parts.append("-r -F")
        else:
            parts.append("-x")
    parts.append(f"-d {_shq(_short_help(o.help))}")
    return " ".join(parts)


def fish(main: Command, daemon: Command) -> str:
    """The fish script (for ~/.config/fish/completions/ or ``source``)."""
    names = " ".join(sub.path[-1] for sub in main.commands)
    lines = ["# fish completion for taskstats and taskstatsd (generated by "
             "'taskstats completion fish')", "complete -c taskstats -f",
             "complete -c taskstatsd -f"]
    top = "__fish_use_subcommand"
    lines += [_fish_option("taskstats", top, o) for o in main.options]
    for sub in main.commands:
        name = sub.path[-1]
        lines.append(f"complete -c taskstats -n {top} -a {name} "
                     f"-d {_shq(_short_help(sub.summary))}")
        seen = f"__fish_seen_subcommand_from {name}"
        lines += [_fish_option("taskstats", seen, o) for o in sub.options]
        for p in sub.positionals:
            if p.choices:
                lines.append(f"complete -c taskstats -n {_shq(seen)} -a "
                             f"{_shq(' '.join(p.choices))}")
            elif p.rest:
                after = f"{seen}; and contains -- (commandline -opc)"
                lines.append(f"complete -c taskstats -n {_shq(after)} -F "
                             "-a '(__fish_complete_command)'")
    lines.append(f"# commands: {names}")
    lines += [_fish_option("taskstatsd", "", o) for o in daemon.options]
    return "\n".join(lines) + "\n"
