"""Text output shows names any user chooses (comm, command lines) escaped: a process
named "\\x1b[2J" must not clear the terminal of the root who runs taskstats."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from pytaskstats import taskstats
from pytaskstats.cli.history import format_row
from pytaskstats.cli.listen import procacct_line, text_line
from pytaskstats.records import ExitRecord
from pytaskstats.textfmt import shown
from pytaskstats.top.model import COUNTED, METRICS, Row
from pytaskstats.top.render import row_cells

from .test_journal import FAMILY, exit_bytes

HOSTILE = "\x1b[2J\x1b]0;t\x07\rx"


def test_shown_escapes_controls_and_keeps_printable_text() -> None:
    assert shown("make -j2 café") == "make -j2 café"
    escaped = shown(HOSTILE + "\udcff")
    assert escaped.isprintable() and "\\x1b[2J" in escaped and "\\r" in escaped
    assert "\\xff" in escaped  # an undecodable byte of argv, as bytes


def test_text_lines_escape_a_hostile_comm() -> None:
    event = taskstats.decode(exit_bytes("reply_v17.bin"), FAMILY)[0]
    assert isinstance(event, ExitRecord)
    rec = dataclasses.replace(event, task=event.task._replace(ac_comm=HOSTILE))
    row = {"kind": "exit", "time_ns": 10**18, "pid": 7, "ac_comm": HOSTILE}
    sample = {"kind": "sample", "time_ns": 10**18, "tgid": 7, "comm": HOSTILE,
              "interval_ns": 10**9, "running": True}
    group = {"exits": 1, "ac_comm": HOSTILE}
    cgroup = {"exits": 1, "cgroup": "/user.slice/" + HOSTILE}
    for line in (text_line(rec, True), procacct_line(rec.task), format_row(row),
                 format_row(sample), format_row(group, "comm"), format_row(cgroup, "cgroup")):
        assert "\x1b" not in line and "\r" not in line and "\\x1b[2J" in line, line


def test_top_escapes_a_hostile_command() -> None:
    row = Row(pid=7, tgid=7, uid=0, user="root", command=HOSTILE, cgroup="/", threads=1,
              exited=False, seconds=1.0, totals=(0,) * len(COUNTED),
              values=(None,) * len(METRICS), cmdline=HOSTILE + " -x")
    for full in (False, True):
        line = row_cells(row, False, full=full)
        assert "\x1b" not in line and "\\x1b[2J" in line, line


def test_diff_text_escapes_names_from_its_files(tmp_path: Path) -> None:
    doc = {"command": [HOSTILE], "exit_status": 0, "wall_s": 1.0,
           "processes": [{"comm": HOSTILE, "ac_etime": 1000}]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(doc))
    done = subprocess.run([sys.executable, "-m", "pytaskstats", "diff", str(path), str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and done.stdout.count("\\x1b[2J") >= 3
    as_json = subprocess.run([sys.executable, "-m", "pytaskstats", "diff", "--json",
                              str(path), str(path)], capture_output=True, text=True,
                             timeout=120, check=False)
    assert json.loads(as_json.stdout)["commands"][0]["comm"] == HOSTILE  # JSON: exact
