"""The tree stays typed (mypy strict) and linted (ruff): part of the test command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tool", [
    [sys.executable, "-m", "mypy"],
    [sys.executable, "-m", "ruff", "check", "."],
], ids=["mypy", "ruff"])
def test_tool_is_clean(tool: list[str]) -> None:
    done = subprocess.run(tool, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
