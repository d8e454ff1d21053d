"""Packaging (issue 17): the sdist and the wheel build (``python -m build``, in
isolation as a packager builds), pass ``twine check --strict``, and the wheel
installs into a fresh venv without an index, where the commands, the import and the
README's first command work; contrib/taskstatsd.conf lists every setting with
taskstatsd's own default.

The build runs in a copy of the source tree (it writes build/ and *.egg-info there),
once for the module."""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from pytaskstats import __version__
from pytaskstats.daemon import config

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "contrib" / "taskstatsd.conf"
# what the sdist must carry besides the package (MANIFEST.in)
SDIST_HAS = ("README.md", "LICENSE", "pyproject.toml", "MANIFEST.in", ".ci/run", "docs/metrics.md",
             "contrib/taskstatsd.conf", "contrib/taskstatsd.service", "tests/conftest.py",
             "tests/storm.c", "tests/fixtures/expected.py", "benchmarks/_bench.py")


def _env() -> dict[str, str]:
    """This environment without what would point a child at the source tree."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=cwd, env={**_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, (argv, done.stdout[-3000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding the sdist and the wheel built from a copy of the tree."""
    base = tmp_path_factory.mktemp("packaging")
    tree = base / "src"
    shutil.copytree(ROOT, tree, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
        ".build"))
    _run([sys.executable, "-m", "build", "--outdir", str(base / "dist"), str(tree)],
         timeout=300)
    return base / "dist"


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_build_makes_an_sdist_and_a_wheel_that_pass_twine_check(dist: Path) -> None:
    sdist = _one(dist, f"pytaskstats-{__version__}.tar.gz")
    wheel = _one(dist, f"pytaskstats-{__version__}-py3-none-any.whl")
    done = _run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_metadata_says_what_the_package_is(dist: Path) -> None:
    wheel = _one(dist, "*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(f"pytaskstats-{__version__}.dist-info/METADATA").decode()
        names = z.namelist()
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta
    assert [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]  # the text ships
    assert "Classifier: License ::" not in meta  # PEP 639: the expression, not classifiers
    assert "Requires-Python: >=3.10" in meta and "Project-URL: " in meta
    assert not [line for line in meta.splitlines() if line.startswith("Requires-Dist:")
                and "extra ==" not in line]  # the core installs nothing else
    assert "pytaskstats/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_the_sdist_carries_tests_docs_contrib_and_benchmarks(dist: Path) -> None:
    with tarfile.open(_one(dist, "*.tar.gz")) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = [n for n in SDIST_HAS if n not in names]
    assert not missing
    tracked = subprocess.run(["git", "ls-files", "docs", "contrib", "tests", "benchmarks"],
                             cwd=ROOT, capture_output=True, text=True, check=False)
    if tracked.returncode == 0:  # a git checkout: every tracked file but symlinks
        files = [n for n in tracked.stdout.split() if not (ROOT / n).is_symlink()]
        assert not [n for n in files if n not in names]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed from the file alone (no index)."""
    where = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", str(where)])
    _run([str(where / "bin" / "python"), "-m", "pip", "install", "--no-index", "--quiet",
          str(_one(dist, "*.whl"))])
    return where


def test_the_wheel_installs_and_runs_in_a_fresh_venv(venv: Path) -> None:
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import pytaskstats; print(pytaskstats.__file__)"], cwd=venv)
    assert where.stdout.startswith(str(venv)), where.stdout
    assert _run([str(venv / "bin" / "taskstats"), "--version"]).stdout == \
        f"taskstats {__version__}\n"
    assert _run([str(venv / "bin" / "taskstatsd"), "--version"]).stdout == \
        f"taskstatsd {__version__}\n"
    assert _run([str(venv / "bin" / "taskstats"), "man", "run"]).stdout.startswith(
        '.TH "TASKSTATS-RUN" "1"')
    assert "complete -F _taskstats taskstats" in _run(
        [str(venv / "bin" / "taskstats"), "completion", "bash"]).stdout


def _readme_first_command() -> str:
    """The README's first command, less its ``pip install . &&`` (done: the venv)."""
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    line = next(x for x in block[1].splitlines() if x.startswith("pip install . && "))
    return line.removeprefix("pip install . && ")


@pytest.mark.kernel
def test_the_readmes_first_command_works_from_the_wheel(venv: Path) -> None:
    command = _readme_first_command()
    argv = shlex.split(command)
    assert argv[:3] == ["taskstats", "run", "--"]
    done = _run([str(venv / "bin" / argv[0]), *argv[1:]], timeout=300)
    report = done.stderr
    assert re.search(r"^\s*\d+\s+\d+\s+\d+\s+ls\s", report, re.M), report  # a child's row
    assert len(re.findall(r"^\s*\d+\s+\d+\s+\d+\s+ls\s", report, re.M)) == 3, report


# ---------------------------------------------------------------- sample config

def test_the_sample_config_sets_every_setting_to_its_default(tmp_path: Path) -> None:
    """Read by taskstatsd's own loader, contrib/taskstatsd.conf names every setting
    once (with a comment above it) and changes nothing."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(SAMPLE.read_text())  # strict: a key twice is an error
    keys = list(ini[config.SECTION])
    assert sorted(keys) == sorted(f.name for f in dataclasses.fields(config.Config))
    lines = SAMPLE.read_text().splitlines()
    for key in keys:
        at = next(i for i, line in enumerate(lines) if line.split("=")[0].strip() == key)
        assert lines[at - 1].startswith("# "), key
    loaded = config.load(["--config", str(SAMPLE)])
    assert loaded == config.Config()
    # and the loader reads it: a changed value comes through
    changed = tmp_path / "taskstatsd.conf"
    changed.write_text(SAMPLE.read_text().replace("max_clients = 256", "max_clients = 99"))
    assert config.load(["--config", str(changed)]).max_clients == 99
