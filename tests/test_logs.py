"""Shipping exit records to a log pipeline (issue 17, docs/logs.md): ``listen --json``
prints one JSON object a line with the same keys whatever the struct version, and a
real collector (rsyslog's imfile + mmjsonparse, Debian's ``rsyslog``) reads the lines
of a live ``listen --json`` and finds the fields by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytaskstats import taskstats as ts
from pytaskstats.cli.listen import exit_json, exit_json_text
from pytaskstats.fields import FIELDS, Timespec
from pytaskstats.records import ExitRecord

from .conftest import fixture_bytes, unique_command, wait_until

REPLIES = ("reply_v08.bin", "reply_v09.bin", "reply_v10.bin", "reply_v13.bin",
           "reply_v14.bin", "reply_v15.bin", "reply_v16.bin", "reply_v17.bin")
EXIT_KEYS = {"event", "pid", "tgid", "cpu", "ended_process", "task", "group"}
RECORD_KEYS = {f.name for f in FIELDS} | {"scope", "source", "payload_len", "exe_major",
                                          "exe_minor"}


FAMILY = 27  # any id: the fixtures are decoded as this family's


def _exits() -> list[ExitRecord]:
    """Exit records of every struct version the fixtures hold (v8 to v17): the
    kernel's dual exit messages, and per-task query replies as exits."""
    out: list[ExitRecord] = []
    for name in ("exit_v16_dual.bin", "exit_v17_dual.bin"):
        out += [e for e in ts.decode(fixture_bytes(name), FAMILY) if isinstance(e, ExitRecord)]
    for name in REPLIES:
        for event in ts.decode(fixture_bytes(name), FAMILY):
            if isinstance(event, ts.StatsReply) and event.stats.scope == "pid":
                out.append(ExitRecord(task=event.stats, pid=event.id))
    return out


def _line(record: ExitRecord, delayacct_on: bool | None) -> str:
    """The line ``listen --json`` prints for ``record`` (its own formatter)."""
    return exit_json_text(record, delayacct_on)


def _odd(record: ExitRecord) -> list[ExitRecord]:
    """``record`` with the values a direct JSON writer could get wrong: comms with
    quotes, backslashes, control characters, non-ASCII and undecodable bytes, every
    timespec set, trailing bytes, an odd group record and no cpu or tgid."""
    task = record.task
    stamps: dict[str, Any] = {f.name: Timespec(1_700_000_000 + f.position, 999_999_999)
              for f in FIELDS if f.ctype == "timespec"}
    odd = [replace(record, task=task._replace(ac_comm=comm)) for comm in
           ('a"b\\c', "\x1b[31m\n\t\x00", "caf\u00e9\u2603", "x\udcff", "", None)]
    odd.append(replace(record, task=task._replace(extra=b"\x00\xff", **stamps)))
    if record.group is not None:
        odd.append(replace(record, group=record.group._replace(ac_comm='g"\\x7f', extra=b"\\x01"),
                           cpu=None, tgid=None))
    return odd


def test_the_direct_json_line_is_the_json_modules_text() -> None:
    """listen --json writes each exit without the json module; for every fixture (every
    struct version, dual records) and odd values, the text is what json.dumps makes of
    exit_json(), and it reads back to the same values."""
    checked = 0
    for record in _exits():
        for rec in (record, *_odd(record)):
            for state in (True, False, None):
                want = json.dumps(exit_json(rec, state), separators=(",", ":"))
                assert exit_json_text(rec, state) == want, (rec.task.version, state)
                checked += 1
    assert checked > 150


def test_every_struct_version_gives_one_line_with_the_same_keys() -> None:
    records = _exits()
    versions = {r.task.version for r in records}
    assert len(versions) >= 6 and min(versions) <= 8 and max(versions) >= 17
    assert any(r.group is not None for r in records)
    for record in records:
        for state in (True, False, None):
            line = _line(record, state)
            assert "\n" not in line and line.isascii()  # any comm: escaped, one line
            obj = json.loads(line)
            assert set(obj) == EXIT_KEYS
            assert set(obj["task"]) == RECORD_KEYS, record.task.version
            assert obj["group"] is None or set(obj["group"]) == RECORD_KEYS
            assert obj["event"] == "exit" and obj["pid"] == record.pid


def _collector(tmp_path: Path, source: Path, out: Path) -> list[str]:
    """rsyslogd in the foreground (argv) tailing ``source`` into ``out``, one line of
    chosen fields per parsed JSON line; lines it cannot parse go to out.bad."""
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(f"""\
global(workDirectory="{tmp_path}" maxMessageSize="64k")
module(load="imfile")
module(load="mmjsonparse")
template(name="fields" type="string"
         string="%$!event% %$!task!ac_comm% %$!task!ac_pid% %$!task!ac_exitcode%\\n")
input(type="imfile" file="{source}" tag="taskstats" freshStartTail="off")
action(type="mmjsonparse" cookie="")
if $parsesuccess == "OK" then {{
  action(type="omfile" file="{out}" template="fields")
}} else {{
  action(type="omfile" file="{out}.bad")
}}
""")
    rsyslogd = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    if rsyslogd is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test log shipping: no rsyslogd (Debian's rsyslog; .ci/run)")
        pytest.skip("no rsyslogd (Debian's rsyslog)")
    assert rsyslogd is not None
    return [rsyslogd, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")]


@pytest.mark.kernel
def test_a_collector_reads_the_exits_of_listen_json(tmp_path: Path) -> None:
    """Live ``listen --json`` lines, tailed by rsyslog and parsed as JSON there: our
    three marked exits arrive with their comm, pid and status; nothing fails to parse."""
    exe = unique_command(tmp_path, "ship", "/bin/false")
    source, out = tmp_path / "exits.jsonl", tmp_path / "shipped"
    with open(source, "wb") as f:
        listener = subprocess.Popen([sys.executable, "-m", "pytaskstats", "--backend",
                                     "kernel", "listen", "--json"], stdout=f,
                                    stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: source.read_bytes().startswith(b'{"event":"start"'),
                   "listen to start")
        pids = []
        for _ in range(3):
            child = subprocess.Popen([str(exe)])
            child.wait()
            pids.append(child.pid)
        wait_until(lambda: source.read_text().count(f'"ac_comm":"{exe.name}"') >= 3,
                   "the three exits in the file")
    finally:
        listener.terminate()
        listener.wait(timeout=30)
    collector = subprocess.Popen(_collector(tmp_path, source, out), stderr=subprocess.PIPE,
                                 text=True)
    lines = source.read_text().count("\n")  # whole lines: all a collector ships
    try:
        wait_until(lambda: out.exists() and out.read_text().count("\n") >= lines,
                   "the collector to parse every line", timeout=30)
    finally:
        collector.terminate()
        _, err = collector.communicate(timeout=30)
    shipped = out.read_text().splitlines()
    assert not (tmp_path / "shipped.bad").exists(), (tmp_path / "shipped.bad").read_text()
    assert len(shipped) == lines and shipped[0].startswith("start ")
    mine = sorted(line for line in shipped if f" {exe.name} " in line)
    assert mine == sorted(f"exit {exe.name} {pid} 256" for pid in pids), (mine, err)
