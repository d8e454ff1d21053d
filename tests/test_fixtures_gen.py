"""The committed golden fixtures are exactly what gcc's struct layout produces.

make_fixtures.c declares every struct version in C and lets the compiler lay it
out, so this check is independent of pytaskstats' own layout code.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def test_fixtures_are_what_gcc_generates(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not on PATH: cannot regenerate the golden fixtures")
    exe = tmp_path / "mkfix"
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([gcc, "-O0", "-Wall", "-Wextra", "-o", str(exe),
                    str(FIXTURES / "make_fixtures.c")], check=True, capture_output=True)
    subprocess.run([str(exe), str(out)], check=True, capture_output=True)

    produced = sorted(p.name for p in out.glob("*.bin"))
    committed = sorted(p.name for p in FIXTURES.glob("*.bin"))
    assert produced == committed
    differing = [name for name in produced
                 if (out / name).read_bytes() != (FIXTURES / name).read_bytes()]
    assert differing == [], f"committed fixtures differ from gcc's output: {differing}"
