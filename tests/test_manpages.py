"""Man pages and shell completions (issue 17): generated from the parsers, they cover
every option of every parser (walked here independently of the generator), render
without warnings, and the completions complete."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytaskstats.cli import completion, diff, getdelays, manpage
from pytaskstats.cli.main import build_parser
from pytaskstats.daemon import config

CLI = [sys.executable, "-m", "pytaskstats"]


def _tool(name: str, package: str) -> str:
    """The path of ``name``; CI must have it (.ci/run installs ``package``)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {name} (Debian's {package}; see .ci/run)")
        pytest.skip(f"no {name} (Debian's {package})")
    assert path is not None
    return path


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(page name, parser) of every parser: taskstats, its commands, taskstatsd."""
    main = build_parser()
    yield "taskstats", main
    for action in main._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"taskstats-{name}", sub
    yield "taskstatsd", config.build_parser()


def _expected(parser: argparse.ArgumentParser, page: str) -> tuple[set[str], set[str]]:
    """Every option string and every choice of ``parser`` (getdelays: its getopt
    letters, which argparse never sees)."""
    if page == "taskstats-getdelays":
        return {"-" + c for c in getdelays.OPTSTRING if c != ":"}, set()
    flags: set[str] = set()
    choices: set[str] = set()
    for action in parser._actions:
        flags.update(action.option_strings)
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            choices.update(str(c) for c in action.choices)
    if page == "taskstatsd":  # checked by the loader, not by argparse
        choices.update(c for values in config.CHOICES.values() for c in values)
    return flags, choices


def _commands() -> list[str]:
    return [page.removeprefix("taskstats-") for page, _ in _parsers()
            if page.startswith("taskstats-")]


def _out(*argv: str) -> str:
    done = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=60,
                          check=False)
    assert (done.returncode, done.stderr) == (0, ""), done
    return done.stdout


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    names = _out("man", "--list").split()
    return {name.rsplit(".", 1)[0]: _out("man", name) for name in names}


def test_there_is_a_page_for_every_parser(pages: dict[str, str]) -> None:
    assert sorted(pages) == sorted(page for page, _ in _parsers())
    assert _out("man", "--list").split()[-1] == "taskstatsd.8"


@pytest.mark.parametrize(("page", "parser"), list(_parsers()), ids=lambda v: str(v)[:24])
def test_each_page_lists_every_option_and_choice(pages: dict[str, str], page: str,
                                                 parser: argparse.ArgumentParser) -> None:
    text = pages[page].replace("\\-", "-").replace("\\fB", " ").replace("\\fR", " ")
    flags, choices = _expected(parser, page)
    assert flags
    for flag in flags:
        assert re.search(rf"(^|[\s,]){re.escape(flag)}([\s,]|$)", text, re.M), (page, flag)
    for choice in choices:
        assert choice in text, (page, choice)


def test_the_main_page_lists_every_command(pages: dict[str, str]) -> None:
    text = pages["taskstats"].replace("\\-", "-")
    for name in _commands():
        assert f".TP\n\\fB{name}\\fR\n" in text
        assert f"\\fBtaskstats-{name}\\fR(1)" in text


def _exit_statuses(page: str) -> list[str]:
    """The statuses an EXIT STATUS section lists, in order."""
    section = page.split(".SH EXIT STATUS\n", 1)[1].split(".SH ", 1)[0]
    return re.findall(r"^\.TP\n\\fB(\w+)\\fR$", section, re.M)


def test_exit_statuses_include_diffs_regression_and_runs_own_errors(
        pages: dict[str, str]) -> None:
    """taskstats-diff(1) listed 0, 1 and 2 but not 3, the status --fail-above exists for;
    taskstats-run(1) listed only 0 and 'other' though run's own errors are 1 and 2."""
    assert _exit_statuses(pages["taskstats-diff"]) == ["0", "1", "2", str(diff.REGRESSION)]
    assert _exit_statuses(pages["taskstats-run"]) == ["0", "1", "2", "other"]
    assert _exit_statuses(pages["taskstats"]) == ["0", "1", "2", "3", "run"]
    assert _exit_statuses(pages["taskstats-get"]) == ["0", "1", "2"]


def test_pages_render_without_warnings(pages: dict[str, str], tmp_path: Path) -> None:
    groff = _tool("groff", "groff-base")
    man = _tool("man", "man-db")
    for name, text in pages.items():
        done = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z"], input=text,
                              capture_output=True, text=True, timeout=60, check=False)
        assert (done.returncode, done.stderr) == (0, ""), name
        path = tmp_path / f"{name}.1"
        path.write_text(text)
        shown = subprocess.run([man, "-l", str(path)], capture_output=True, text=True,
                               timeout=60, check=False,
                               env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"})
        assert (shown.returncode, shown.stderr) == (0, ""), name
        assert re.search(rf"^NAME\n\s+{re.escape(name)} ", shown.stdout, re.M), name


def test_an_unknown_page_is_a_usage_error() -> None:
    done = subprocess.run([*CLI, "man", "nosuch"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert "no page 'nosuch'" in done.stderr and "taskstats-run" in done.stderr


def test_a_page_is_named_by_command_or_file_name() -> None:
    page = _out("man", "run")
    assert page == _out("man", "taskstats-run") == _out("man", "taskstats-run.1")
    assert page.startswith('.TH "TASKSTATS-RUN" "1"')
    assert _out("man").startswith('.TH "TASKSTATS" "1"')
    assert _out("man", "taskstatsd.8").startswith('.TH "TASKSTATSD" "8"')


# ---------------------------------------------------------------- completion

@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    return {shell: _out("completion", shell) for shell in completion.SHELLS}


def _fish_flags(flag: str) -> str:
    return f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_each_script_has_every_option_and_choice(scripts: dict[str, str], shell: str) -> None:
    text = scripts[shell]
    for page, parser in _parsers():
        flags, choices = _expected(parser, page)
        for flag in flags:
            wanted = _fish_flags(flag) if shell == "fish" else flag
            assert re.search(rf"(^|[\s'{{,|]){re.escape(wanted)}([\s'\[,|}})]|$)", text,
                             re.M), (shell, page, flag)
        for choice in choices:
            assert re.search(rf"[\s'(]{re.escape(choice)}[\s')]", text), (shell, page, choice)
    for name in _commands():
        assert re.search(rf"[\s']{name}[\s':]", text), (shell, name)


def test_scripts_parse(scripts: dict[str, str], tmp_path: Path) -> None:
    for shell, check in (("bash", ["bash", "-n"]), ("zsh", ["zsh", "-n"]),
                         ("fish", ["fish", "--no-execute"])):
        exe = _tool(check[0], check[0])
        path = tmp_path / f"taskstats.{shell}"
        path.write_text(scripts[shell])
        done = subprocess.run([exe, *check[1:], str(path)], capture_output=True, text=True,
                              timeout=60, check=False)
        assert (done.returncode, done.stderr) == (0, ""), shell


def _bash_complete(script: Path, function: str, *words: str) -> list[str]:
    """What ``function`` offers for ``words`` (the last one being completed)."""
    bash = _tool("bash", "bash")
    code = (f'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); {function}; '
            'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run([bash, "--norc", "-c", code, "bash", str(script), *words],
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=script.parent)
    assert (done.returncode, done.stderr) == (0, ""), words
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completes_commands_options_and_choices(scripts: dict[str, str],
                                                     tmp_path: Path) -> None:
    script = tmp_path / "taskstats.bash"
    script.write_text(scripts["bash"])
    (tmp_path / "report-h17c.html").write_text("")

    def comp(*words: str) -> list[str]:
        return _bash_complete(script, "_taskstats", "taskstats", *words)
    assert sorted(comp("")) == sorted(_commands())
    assert comp("hi") == ["history"]
    assert comp("--backend", "") == ["auto", "kernel", "daemon", "procfs"]
    assert comp("--backend", "kernel", "de") == ["delayacct"]  # a global option's value
    assert comp("delayacct", "o") == ["on", "off"]
    assert comp("top", "--sort", "cpu") == ["cpu", "cpuwait"]
    assert comp("history", "--group-by", "") == ["comm", "uid", "cgroup"]
    assert comp("listen", "--f") == ["--format"]
    assert comp("completion", "") == list(completion.SHELLS)
    assert comp("run", "--report", "report-h1") == ["report-h17c.html"]  # a file
    assert "bash" in comp("run", "--json", "--", "bas")  # the command: from $PATH
    assert _bash_complete(script, "_taskstatsd", "taskstatsd", "--sync") == ["--synchronous"]
    assert _bash_complete(script, "_taskstatsd", "taskstatsd", "--no-c") == ["--no-cgroups"]
    assert _bash_complete(script, "_taskstatsd", "taskstatsd", "--source", "") == list(
        config.CHOICES["source"])


def test_bash_completes_hostile_file_names_as_they_are(scripts: dict[str, str],
                                                      tmp_path: Path) -> None:
    """Names in the current directory are offered whole: not split at blanks, not
    expanded as globs ('*' offered every name), never run."""
    script = tmp_path / "taskstats.bash"
    script.write_text(scripts["bash"])
    names = ["a b.html", "*", "$(touch pwned)", "`touch pwned2`", "x\\ty"]
    for name in names:
        (tmp_path / name).write_text("")

    def comp(*words: str) -> list[str]:
        return _bash_complete(script, "_taskstats", "taskstats", *words)
    assert comp("run", "--report", "a") == ["a b.html"]
    assert comp("run", "--report", "*") == ["*"]
    assert sorted(comp("diff", "--report", "")) == sorted([*names, "taskstats.bash"])
    assert sorted(comp("run", "--", "ls", "")) == sorted([*names, "taskstats.bash"])
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_fish_completes_commands_options_and_choices(scripts: dict[str, str],
                                                     tmp_path: Path) -> None:
    fish = _tool("fish", "fish")
    script = tmp_path / "taskstats.fish"
    script.write_text(scripts["fish"])

    def comp(line: str) -> list[str]:
        done = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C {line!r}"],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "HOME": str(tmp_path)})
        assert (done.returncode, done.stderr) == (0, ""), line
        return [w.split("\t")[0] for w in done.stdout.splitlines()]
    assert comp("taskstats hi") == ["history"]
    assert sorted(comp("taskstats --backend ")) == ["auto", "daemon", "kernel", "procfs"]
    assert sorted(comp("taskstats delayacct o")) == ["off", "on"]
    assert comp("taskstats listen --form") == ["--format"]
    assert comp("taskstatsd --no-c") == ["--no-cgroups"]


def test_zsh_loads_the_script_and_binds_both_programs(scripts: dict[str, str],
                                                      tmp_path: Path) -> None:
    zsh = _tool("zsh", "zsh")
    script = tmp_path / "_taskstats"
    script.write_text(scripts["zsh"])
    code = (f"autoload -U compinit; compinit -u -d {tmp_path}/zcompdump; source {script}; "
            "print -r -- $_comps[taskstats] $_comps[taskstatsd]")
    done = subprocess.run([zsh, "-f", "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "HOME": str(tmp_path)})
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "_taskstats _taskstatsd\n")


# types a line and TAB into an interactive zsh on a pty (zpty), then prints the line
ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1='%% '; autoload -U compinit; compinit -u -d $2/zcompdump; source $1; print READ\"\"Y"
zpty -r z line '*READY*% '
zpty -w -n z $3$'\t'
zpty -w -n z $'\x05 END'
zpty -r z out '*END'
print -r -- "$out"
zpty -d z
"""


def test_zsh_completes_commands_options_and_choices(scripts: dict[str, str],
                                                    tmp_path: Path) -> None:
    zsh = _tool("zsh", "zsh")
    script = tmp_path / "_taskstats"
    script.write_text(scripts["zsh"])
    driver = tmp_path / "driver.zsh"
    driver.write_text(ZSH_DRIVER)

    def comp(line: str) -> str:
        done = subprocess.run([zsh, "-f", str(driver), str(script), str(tmp_path), line],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "HOME": str(tmp_path)})
        assert done.returncode == 0, done
        shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", done.stdout)
        taken = re.sub(r"[^\x08]\x08", "", shown, count=1)
        while taken != shown:  # a backspace takes back the character before it
            shown, taken = taken, re.sub(r"[^\x08]\x08", "", taken, count=1)
        return shown.rsplit("% ", 1)[-1].removesuffix(" END\n").strip()
    assert comp("taskstats hi") == "taskstats history"
    assert comp("taskstats --backend k") == "taskstats --backend kernel"
    assert comp("taskstats top --sort cpuw") == "taskstats top --sort cpuwait"
    assert comp("taskstats delayacct of") == "taskstats delayacct off"
    assert comp("taskstatsd --sync") == "taskstatsd --synchronous"


def test_getdelays_options_describe_its_getopt_string() -> None:
    """The letters (and which take a value) that the man page and completions show
    are getdelays' own getopt string."""
    takes = {m[0]: m.endswith(":") for m in re.findall(r"[A-Za-z]:?", getdelays.OPTSTRING)}
    assert {k: v is not None for k, (v, _) in getdelays.OPTIONS.items()} == takes


def test_pages_are_generated_without_running_anything() -> None:
    """Building the pages in-process reads the parsers only (no socket, no kernel)."""
    pages = manpage.pages(build_parser())
    assert set(pages) >= {"taskstats", "taskstats-run", "taskstatsd"}
    assert pages["taskstatsd"][0] == 8
