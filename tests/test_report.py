"""HTML reports: structure checked on recorded exit data (tests/fixtures/report), the
journal's aggregate query, the CLI options, and headless Chromium opening real reports
(no console errors; screenshots kept under ARTIFACTS and printed for CI).

Regenerate the recorded fixture (root, delay accounting on):
``python -m tests.test_report record tests/fixtures/report/make_j2.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pytaskstats import Client, ExitRecord, delayacct, taskstats
from pytaskstats.cli import getdelays
from pytaskstats.cli.args import output_file_arg
from pytaskstats.cli.run import execute, exit_status
from pytaskstats.daemon.journal import Store
from pytaskstats.daemon.journal_queries import JournalQueries
from pytaskstats.daemon.journal_rows import JournalEntry
from pytaskstats.errors import TaskstatsError
from pytaskstats.kernel import Connection
from pytaskstats.report import (
    BUCKET_FIELDS,
    GROUP_FIELDS,
    HistoryReport,
    RunReport,
    build_run,
    choose_bucket,
    render_history,
    render_run,
    save,
)
from pytaskstats.report.fmt import clock, local_time, nice_ceiling, nice_step, short_duration
from pytaskstats.report.kinds import IO, OFF_NOTE, RUNNING
from pytaskstats.report.run import plausible, shown, totals_of, tree_order
from pytaskstats.summary import summarize, totals
from pytaskstats.textfmt import human_duration

from .conftest import require_kernel, unique_command, wait_until
from .daemon_util import RunningDaemon

FIXTURE = Path(__file__).parent / "fixtures" / "report" / "make_j2.json"
MODULES = ("lexer", "parser", "eval", "store", "print", "hash")


def write_project(root: Path) -> None:
    """A tiny C project: a few modules worth compiling, a two-thread program that
    writes and syncs a file, and a Makefile whose default target builds and runs it."""
    root.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        funcs = "\n".join(
            f"static long {name}_f{i}(long x) {{ long s = 0; for (long j = 0; j < x; j++) "
            f"s += (j * {i + 3}) ^ (s >> 3); return s; }}" for i in range(120))
        calls = " + ".join(f"{name}_f{i}(n)" for i in range(120))
        (root / f"{name}.c").write_text(f"{funcs}\nlong {name}_run(long n) {{ return {calls}; }}\n")
    decls = "".join(f"long {n}_run(long n);\n" for n in MODULES)
    runs = " + ".join(f"{n}_run(n)" for n in MODULES)
    (root / "main.c").write_text(f"""#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
{decls}
static void *work(void *arg) {{ long n = (long)arg; long *r = malloc(sizeof *r);
  *r = {runs}; return r; }}
int main(void) {{
  pthread_t t[2]; long total = 0;
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, work, (void *)(20000L + i));
  for (int i = 0; i < 2; i++) {{ void *r; pthread_join(t[i], &r); total += *(long *)r; free(r); }}
  int fd = open("data.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  static char buf[1 << 20];
  for (int i = 0; i < 8; i++) {{ buf[0] = (char)i; if (write(fd, buf, sizeof buf) < 0) return 1; }}
  fsync(fd); close(fd);
  printf("%ld\\n", total);
  return 0;
}}
""")
    objs = " ".join(f"{n}.o" for n in (*MODULES, "main"))
    (root / "Makefile").write_text(
        f"CFLAGS = -O2 -Wall\nOBJS = {objs}\n\nall: result.txt\n\n"
        "result.txt: prog\n\t./prog > $@\n\n"
        "prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS) -lpthread\n\n"
        "%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n\n"
        "clean:\n\trm -f $(OBJS) prog result.txt data.bin\n")


def record(out: Path) -> None:
    """Record ``make -j2`` of the tiny project as a fixture: each exit message (as
    ``taskstats.encode_exit`` renders the decoded record) with its arrival time."""
    with tempfile.TemporaryDirectory() as tmp:
        write_project(Path(tmp))
        command = ["make", "-C", tmp, "-j2", "--no-print-directory"]
        with Connection() as conn:
            family = conn.family.id
        with Client(backend="kernel") as client, client.listen(per_cpu=True) as listener:
            result = execute(command, listener, wait_all=True)
    doc = {"format": "pytaskstats run recording 1", "family": family,
           "command": ["make", "-j2"], "exit_status": exit_status(result.returncode),
           "wall_s": round(result.wall_s, 6), "started_ns": result.started_ns,
           "delayacct": delayacct.status(), "lost": result.lost,
           "exits": [[round(t, 6), taskstats.encode_exit(family, r).hex()]
                     for r, t in zip(result.records, result.exit_s, strict=True)]}
    out.write_text(json.dumps(doc, indent=0) + "\n")


def load(path: Path = FIXTURE) -> tuple[dict[str, object], list[ExitRecord], list[float]]:
    """A recording: its header, its exit records, and their arrival times."""
    doc = json.loads(path.read_text())
    records, times = [], []
    for t, raw in doc.pop("exits"):
        event = taskstats.decode(bytes.fromhex(raw), doc["family"])[0]
        assert isinstance(event, ExitRecord)
        records.append(event)
        times.append(float(t))
    return doc, records, times


ARTIFACTS = Path(os.environ.get("PYTASKSTATS_ARTIFACTS", "/tmp/pytaskstats-artifacts"))
EXTERNAL = re.compile(r"(?i)(https?:|//|ftp:|file:)")


# ------------------------------------------------------------------ helpers


class Page(HTMLParser):
    """The parts of a report the tests look at."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.headings: dict[str, list[str]] = {"h1": [], "h2": [], "h3": []}
        self.styles: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        top = self.stack[-1] if self.stack else ""
        if top in self.headings:
            self.headings[top].append(data.strip())
        if top == "style":
            self.styles.append(data)

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        """Attributes of every ``tag`` whose attributes include ``attrs``."""
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v
                                                            for k, v in attrs.items())]

    @property
    def plain(self) -> str:
        """All text, whitespace collapsed."""
        return " ".join(" ".join(self.text).split())


def assert_self_contained(page: Page) -> None:
    """No script, no external file or URL anywhere: links are anchors, icons data:."""
    assert not page.all("script") and not page.all("img") and not page.all("iframe")
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if name in ("href", "src", "xlink:href"):
                assert value.startswith(("#", "data:")), (tag, name, value)
            if name != "aria-label":
                assert not EXTERNAL.search(value) or name == "title", (tag, name, value)
    for css in page.styles:
        assert not EXTERNAL.search(css) and "@import" not in css
        assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", css))


def fixture_report(state: bool | None = None, **kw: Any) -> RunReport:
    doc, records, times = load()
    return build_run(["make", "-j2"], int(str(doc["exit_status"])), float(str(doc["wall_s"])),
                     records, times, started_ns=int(str(doc["started_ns"])),
                     delayacct=bool(doc["delayacct"]) if state is None else state, **kw)


def copies(n: int) -> tuple[list[ExitRecord], list[float]]:
    """``n`` copies of the recorded run, one after another, under one root (pid 1)."""
    _, base, times = load()
    records: list[ExitRecord] = []
    out_times: list[float] = []
    tgids = list(dict.fromkeys(r.tgid or r.pid for r in base))
    for c in range(n):
        new = {old: 100_000 + c * 1000 + i for i, old in enumerate(tgids)}
        for rec, t in zip(base, times, strict=True):
            tgid = new[rec.tgid or rec.pid]
            pid = tgid if rec.pid == (rec.tgid or rec.pid) else tgid + 500
            task = rec.task._replace(ac_pid=pid, ac_tgid=tgid,
                                     ac_ppid=new.get(rec.task.ac_ppid or 0, 1))
            records.append(dataclasses.replace(rec, task=task, group=None, pid=pid, tgid=tgid))
            out_times.append(t + 2.0 * c)
    return records, out_times


# ------------------------------------------------------------------ the run report


def test_run_report_structure_from_recorded_exits() -> None:
    _, records, _ = load()
    report = fixture_report()
    html = render_run(report)
    page = Page(html)
    assert_self_contained(page)
    assert page.headings["h1"][0].startswith("taskstats run:") and "make -j2" in html
    assert page.headings["h2"] == ["Where the time went", "Timeline", "Critical path",
                                   "Top processes by wait", "Totals"]
    assert [a["id"] for a in page.all("section")] == ["breakdown", "timeline", "critical",
                                                      "waits", "totals"]
    assert {"Per command name", "Activity", "Processes", "waiting for CPU", "IO wait",
            "memory wait", "IRQ"} <= set(page.headings["h3"])
    procs = summarize(records)
    assert len(procs) == len(report.processes) == 27
    # one timeline row (bar) per process, every row with a tooltip
    bars = page.all("rect", **{"class": "b"})
    assert len(bars) == len(procs)
    assert all(float(b["width"].rstrip("%")) <= 100 for b in bars)
    # legends name every kind of time, with units
    legend = page.plain
    for label in ("running", "waiting for CPU", "IO wait", "memory wait", "IRQ"):
        assert re.search(rf"{label} [0-9.]+(us|ms|s)\b", legend) or f"{label} 0 " in legend
    # the totals row matches the records (user CPU, threads, processes)
    tot = totals(procs)
    assert f"all processes {tot['processes']} {tot['threads']}" in page.plain
    user = sum(r.task.ac_utime or 0 for r in records)
    assert human_duration(user / 1e6) in page.plain
    # time axis labels with units
    assert {"0", "500ms", "1s", "1.5s"} <= set(page.text)
    # delay accounting was on: IO wait is drawn in its colour
    assert any(a.get("fill") == IO.colour for a in page.all("rect"))


def test_impossible_delays_are_left_out_and_listed() -> None:
    _, records, _ = load()
    clean, left_out = plausible(records)
    assert [(i.comm, i.field) for i in left_out] == [("prog", "blkio_delay_total")]
    assert left_out[0].value_ns > 3000e9 and left_out[0].etime_us < 1e6  # the kernel's error
    prog = next(r for r in clean if r.pid == left_out[0].pid)
    assert prog.task.blkio_delay_total is None and prog.task.cpu_delay_total is not None
    report = fixture_report()
    assert report.impossible == tuple(left_out)
    page = Page(render_run(report))
    assert "Left out of every figure: 1 delay value longer than the task lived" in page.plain
    io = sum(r.task.blkio_delay_total or 0 for r in clean)
    assert f"IO wait {human_duration(io / 1e9)}" in page.plain


def test_lifetimes_come_from_arrival_and_elapsed_time() -> None:
    _, records, times = load()
    report = fixture_report()
    by_tgid = {p.summary.tgid: p for p in report.processes}
    for rec, t in zip(records, times, strict=True):
        proc = by_tgid[rec.tgid or rec.pid]
        assert proc.end_s >= t - 1e-9
        if rec.pid == proc.summary.tgid:
            assert proc.start_s == pytest.approx(t - (rec.task.ac_etime or 0) / 1e6)
    make = next(p for p in report.processes if p.summary.comm == "make")
    assert 0 <= make.start_s < 0.05 and make.end_s == pytest.approx(max(times))
    assert all(make.start_s <= p.start_s <= p.end_s <= make.end_s + 1e-3
               for p in report.processes)


def test_timeline_nests_children_under_parents() -> None:
    report = fixture_report()
    rows = tree_order(report.processes)
    assert rows[0][0].summary.comm == "make" and rows[0][1] == 0
    seen: dict[int, int] = {}
    for proc, depth in rows:
        parent = proc.summary.ppid
        if parent in seen:
            assert depth == seen[parent] + 1
        else:
            assert depth == 0
        seen[proc.summary.tgid] = depth
    assert {p.summary.comm for p, d in rows if d == 2} >= {"cc1", "as", "collect2"}  # make > cc


def test_delay_accounting_off_says_not_measured() -> None:
    page = Page(render_run(fixture_report(state=False)))
    text = page.plain
    assert OFF_NOTE in text
    assert "not measured" in text and "Not measured: delay accounting was off." in text
    assert not any(a.get("fill") == IO.colour for a in page.all("rect"))
    assert "IO wait 0" not in text  # never shown as zero
    assert any(a.get("fill") == RUNNING.colour for a in page.all("rect"))


def test_untrusted_names_are_escaped() -> None:
    _, records, times = load()
    evil = [dataclasses.replace(r, task=r.task._replace(ac_comm="<script>x</script>"))
            for r in records]
    html = render_run(build_run(['"><script>alert(1)</script>'], 0, 2.0, evil, times,
                                delayacct=True))
    assert "<script" not in html and "&lt;script&gt;" in html
    assert_self_contained(Page(html))


def test_a_large_run_caps_the_timeline_but_counts_everything() -> None:
    records, times = copies(120)  # 3,480 records
    report = build_run(["make"], 0, max(times), records, times, delayacct=True)
    html = render_run(report, max_rows=100)
    page = Page(html)
    bars = page.all("rect", **{"class": "b"})
    assert 90 <= len(bars) <= 100
    assert f"Showing {len(bars)} of {len(report.processes):,} processes" in page.plain
    kept = shown(report.processes, 100)
    tgids = {p.summary.tgid for p in kept}
    assert all(p.summary.ppid in tgids or p.summary.ppid == 1 for p in kept)  # parents too
    assert f"all processes {len(report.processes):,}" in page.plain
    assert len(html) < 400_000


def test_group_totals_add_up_to_the_totals() -> None:
    _, records, _ = load()
    procs = summarize(records)
    groups: dict[str, list[Any]] = {}
    for p in procs:
        groups.setdefault(p.comm, []).append(p)
    summed = totals_of([totals(g) for g in groups.values()])
    assert summed == totals(procs)


def test_axis_helpers() -> None:
    assert [nice_ceiling(x) for x in (0, 0.7, 1, 3, 4.1, 23, 1200)] == [1, 1, 1, 5, 5, 25, 2000]
    assert nice_step(1.7, 6) == 0.5 and nice_step(600, 6) == 120 and nice_step(0.02, 5) == 0.005
    assert [clock(x, 0.5) for x in (0, 0.5, 1.0, 1.5)] == ["0", "500ms", "1s", "1.5s"]
    assert [clock(x, 60) for x in (60, 90, 3900)] == ["1m", "1m30s", "1h05m"]
    assert [short_duration(x) for x in (0, 4e-5, 0.25, 6, 150)] == ["0", "40us", "250ms", "6s",
                                                                      "2.5m"]
    assert [choose_bucket(s) for s in (600, 86400, 86400 * 7, 86400 * 30)] == [60, 60, 600, 1800]


# ------------------------------------------------------------------ journal aggregates

T0 = 1_700_000_040 * 10**9  # a whole minute


@pytest.fixture
def journal() -> Iterator[JournalQueries]:
    """The recorded exits journaled 20 s apart from T0, cgroups /a and /b in turn."""
    doc, records, _ = load()
    family = int(str(doc["family"]))
    with Store(":memory:") as j:
        for i, rec in enumerate(records):
            j.insert([JournalEntry(rec, T0 + i * 20 * 10**9, "/a" if i % 2 else "/b",
                                  taskstats.encode_exit(family, rec)).item])
        yield j.queries


def test_aggregate_per_minute(journal: JournalQueries) -> None:
    _, records, _ = load()
    rows = journal.aggregate(bucket_s=60, fields=["ac_utime", "blkio_delay_total"])
    assert [r["bucket_ns"] for r in rows] == [T0 + k * 60 * 10**9 for k in range(len(rows))]
    assert [r["exits"] for r in rows] == [3] * (len(records) // 3) + (
        [len(records) % 3] if len(records) % 3 else [])
    assert sum(r["ac_utime"] for r in rows) == sum(r.task.ac_utime or 0 for r in records)
    assert set(rows[0]) == {"bucket_ns", "exits", "samples", "processes", "ac_utime",
                            "blkio_delay_total", "implausible"}
    window = journal.aggregate(bucket_s=120, since_ns=T0 + 60 * 10**9,
                               until_ns=T0 + 180 * 10**9)
    assert [r["exits"] for r in window] == [3, 3] and set(BUCKET_FIELDS) <= set(window[0])


def test_aggregate_groups_totals_and_plausibility(journal: JournalQueries) -> None:
    _, records, _ = load()
    by_cgroup = journal.aggregate(group_by="cgroup", fields=GROUP_FIELDS)
    assert [(r["cgroup"], r["exits"]) for r in by_cgroup] == [
        ("/a", len(records) // 2), ("/b", len(records) - len(records) // 2)]
    kept = journal.aggregate(fields=["blkio_delay_total"])[0]
    clean, left_out = plausible(records)
    assert kept["blkio_delay_total"] == sum(r.task.blkio_delay_total or 0 for r in clean)
    assert kept["blkio_delay_total"] < sum(r.task.blkio_delay_total or 0 for r in records)
    assert kept["implausible"] == len(left_out) == 1
    assert journal.aggregate(fields=["ac_utime"])[0]["implausible"] == 0  # not among fields
    by_comm = journal.aggregate(group_by="comm", bucket_s=3600)
    assert {r["ac_comm"] for r in by_comm} >= {"make", "cc1", "as", "prog"}
    assert next(r for r in by_comm if r["ac_comm"] == "prog")["implausible"] == 1
    empty = journal.aggregate(since_ns=0, until_ns=1)
    assert empty == [{"exits": 0, "samples": 0, "processes": None, "implausible": 0,
                      **dict.fromkeys(BUCKET_FIELDS)}]


@pytest.mark.parametrize("bad", [
    {"fields": ["ac_utime); DROP TABLE exits; --"]}, {"fields": ["ac_comm"]},
    {"fields": "ac_utime"}, {"bucket_s": 0}, {"bucket_s": 1.5}, {"bucket_s": True},
    {"group_by": "pid"}])
def test_aggregate_rejects_what_it_cannot_do(journal: JournalQueries, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        journal.aggregate(**bad)
    assert journal.aggregate()[0]["exits"] == 29  # the table is still there


# ------------------------------------------------------------------ the history report


def history_data(journal: JournalQueries, state: bool | None = True,
                 whole_range: bool = True) -> HistoryReport:
    window: dict[str, Any] = {"since_ns": T0 - 60 * 10**9, "until_ns": T0 + 900 * 10**9}
    return HistoryReport(
        window["since_ns"], window["until_ns"], 60,
        tuple(journal.aggregate(bucket_s=60, fields=BUCKET_FIELDS, **window)),
        tuple(journal.aggregate(group_by="comm", fields=GROUP_FIELDS, **window)),
        tuple(journal.aggregate(group_by="cgroup", fields=GROUP_FIELDS, **window)),
        journal.aggregate(fields=GROUP_FIELDS, **window)[0], state,
        (("comm", "x"),), whole_range)


def test_history_report_structure(journal: JournalQueries) -> None:
    data = history_data(journal)
    page = Page(render_history(data))
    assert_self_contained(page)
    assert page.headings["h1"][0].startswith("taskstats history:")
    assert page.headings["h2"] == ["Exits per minute", "Delay time per minute, by kind",
                                   "Top commands by wait", "Top cgroups by wait", "Totals"]
    # a column (with a tooltip) per minute of the range: 16 minutes
    hover = page.all("rect", **{"class": "hov"})
    assert len(hover) == 2 * 16
    minute = T0 + 60 * 10**9
    tooltip = (f"{local_time(minute)} to {local_time(minute + 60 * 10**9, date=False)}: "
               "3 exits, of which 3 ended a process")
    assert tooltip in page.plain
    text = page.plain
    assert "Left out of every figure: delays of 1 exit that" in text
    for label in ("waiting for CPU", "IO wait", "memory wait", "IRQ"):
        assert label in page.headings["h3"]
    assert "/a 14 exits" in text and "/b 15 exits" in text
    assert "cc1 7 exits" in text
    assert re.search(r"all 29 [0-9.]+(ms|s)", text)
    compact = Page(render_history(history_data(journal, whole_range=False)))
    assert len(compact.all("rect", **{"class": "hov"})) == 2 * 10  # minutes with exits


def test_history_report_states(journal: JournalQueries) -> None:
    off = Page(render_history(history_data(journal, state=False))).plain
    assert OFF_NOTE in off and "Not measured: delay accounting was off." in off
    data = history_data(journal)
    empty = dataclasses.replace(data, buckets=(), by_comm=(), by_cgroup=(),
                                totals={"exits": 0})
    assert "No exits were journaled in this range" in Page(render_history(empty)).plain


# ------------------------------------------------------------------ CLI options


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytaskstats", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_report_options_are_checked_before_work(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for report, said in [(str(tmp_path / "missing" / "r.html"), "no directory"),
                         (str(tmp_path), "is a directory"), ("", "give a file name")]:
        for command in (["run", "--report", report, "--", "touch", str(marker)],
                        ["history", "--report", report]):
            done = _cli(*command)
            assert done.returncode == 2 and said in done.stderr, (command, done.stderr)
            assert done.stderr.count("\n") == 1
    assert not marker.exists()  # refused before the command ran
    clash = _cli("history", "--report", str(tmp_path / "h.html"), "--json")
    assert clash.returncode == 2 and "--json" in clash.stderr
    backwards = _cli("history", "--report", str(tmp_path / "h.html"), "--since", "1h",
                     "--until", "2h")
    assert backwards.returncode == 2 and "--until" in backwards.stderr


def test_save_is_atomic_and_readable(tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    target.write_text("old")
    save(target, "<p>new</p>")
    assert target.read_text() == "<p>new</p>" and target.stat().st_mode & 0o044
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]



def test_save_writes_into_what_is_not_a_regular_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO, a device or a symlink is written through, never replaced by a rename
    (as root, ``--report /dev/full`` once turned the device into a regular file)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    save(fifo, "<p>piped</p>")
    assert reader.communicate(timeout=30)[0] == b"<p>piped</p>"
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    real, link = tmp_path / "real.html", tmp_path / "link.html"
    link.symlink_to(real)
    save(link, "<p>through</p>")
    assert link.is_symlink() and real.read_text() == "<p>through</p>"

    def no_rename(*_: object) -> None:
        raise AssertionError("a device must not be replaced")
    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError) as full:
        save("/dev/full", "<p>x</p>")
    assert full.value.errno == errno.ENOSPC
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    assert output_file_arg("/dev/full") == "/dev/full"  # writable: accepted, not "in /dev"


def test_save_follows_no_symlink_another_user_planted(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Root writing ``--report`` into a directory a user controls: the user's symlink
    there must not turn the write into root replacing (or writing into) a file of the
    user's choosing (a root-only 0600 file became the report, mode 0644)."""
    victim = tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    owned = tmp_path / "user"
    owned.mkdir()
    link, device = owned / "r.html", owned / "d.html"
    link.symlink_to(victim)
    device.symlink_to("/dev/full")
    if os.geteuid() == 0:
        for path in (owned, link, device):
            os.lchown(path, 65534, 65534)
    else:  # this user's links look like another user's
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    for planted in (link, device):
        with pytest.raises(OSError) as refused:
            save(planted, "<p>report</p>")
        assert refused.value.errno == errno.EPERM and "symbolic link of uid" in str(refused.value)
    assert victim.read_text() == "secret" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert link.is_symlink() and sorted(p.name for p in owned.iterdir()) == ["d.html", "r.html"]
    with pytest.raises(argparse.ArgumentTypeError, match="symbolic link of uid"):
        output_file_arg(str(link))  # said before the run, not after it
    with pytest.raises(TaskstatsError, match="symbolic link of uid"):  # getdelays -w
        getdelays.Output(getdelays.Options(logfile=str(link))).__enter__()
    assert victim.read_text() == "secret"
    monkeypatch.undo()
    own = tmp_path / "own.log"
    own.symlink_to(tmp_path / "log")  # this user's link: followed
    with getdelays.Output(getdelays.Options(logfile=str(own))):
        pass
    assert (tmp_path / "log").exists()


def test_save_changes_no_mode_through_a_swapped_temp_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temp file's name is in a directory its owner may write: swapped for a
    symlink while the report is written, a chmod by name made root's 0600 file 0644."""
    victim = tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    owned = tmp_path / "user"
    owned.mkdir()
    real_mkstemp = tempfile.mkstemp

    def swapped(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, tmp = real_mkstemp(*args, **kwargs)
        os.rename(tmp, tmp + ".moved")  # what a user watching the directory can do
        os.symlink(victim, tmp)
        return fd, tmp
    monkeypatch.setattr(tempfile, "mkstemp", swapped)
    save(owned / "r.html", "<p>report</p>")
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600 and victim.read_text() == "secret"


# ------------------------------------------------------------------ Chromium


def chromium() -> str:
    """Debian's chromium (installed by .ci/run); skip without it, fail in CI."""
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests, but chromium is not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


def open_in_chromium(html: Path, png: Path, width: int, height: int) -> list[str]:
    """Load ``html`` headless, screenshot it to ``png``; return the console lines."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0", f"--screenshot={png}",
             f"--window-size={width},{height}", html.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def png_pixels(path: Path, rows: int) -> tuple[int, int, set[tuple[int, ...]]]:
    """Width, height and the set of RGB colours in the first ``rows`` rows of an
    8-bit RGB/RGBA non-interlaced PNG (decoded here: zlib and the five filters)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        ihdr = chunk if kind == b"IHDR" else ihdr
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    assert depth == 8 and ctype in (2, 6) and interlace == 0
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompressobj().decompress(idat, (1 + width * bpp) * rows)
    stride = width * bpp
    prev = bytearray(stride)
    colours: set[tuple[int, ...]] = set()
    for y in range(min(rows, height)):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        kind, cur = line[0], bytearray(line[1:])
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                cur[i] = (cur[i] + a) & 255
            elif kind == 2:
                cur[i] = (cur[i] + b) & 255
            elif kind == 3:
                cur[i] = (cur[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(tuple(cur[i:i + 3]) for i in range(0, stride, bpp * 2))
        prev = cur
    return width, height, colours


def rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def screenshots(html: Path, name: str, capsys: pytest.CaptureFixture[str],
                rows: int = 700) -> set[tuple[int, ...]]:
    """Wide (1280 px) and narrow (420 px) screenshots under ARTIFACTS: no console
    messages, the expected size, many colours; returns the wide one's top colours."""
    wide_colours: set[tuple[int, ...]] = set()
    for width, height in ((1280, 2000), (420, 2000)):
        png = ARTIFACTS / f"{name}-{width}.png"
        ours = png.with_name(f".{name}-{width}-{os.getpid()}.png")  # other runs write png too
        console = open_in_chromium(html, ours, width, height)
        assert console == [], console
        w, h, colours = png_pixels(ours, rows if width == 1280 else 200)
        assert (w, h) == (width, height) and ours.stat().st_size > 20_000
        os.replace(ours, png)
        assert len(colours) > 50  # text, charts and colours: not a blank page
        wide_colours = wide_colours or colours
        with capsys.disabled():
            print(f"\nscreenshot: {png}")
    return wide_colours


def test_console_errors_are_detected(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>nosuch();</script>")
    console = open_in_chromium(page, tmp_path / "broken.png", 300, 200)
    assert any("Uncaught ReferenceError" in line for line in console)


def test_fixture_reports_open_in_chromium(tmp_path: Path, journal: JournalQueries,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run_html = tmp_path / "run.html"
    save(run_html, render_run(fixture_report()))
    colours = screenshots(run_html, "report-run-fixture", capsys)
    assert {rgb(RUNNING.colour), rgb("#e69f00")} <= colours  # the breakdown bar is drawn
    history_html = tmp_path / "history.html"
    save(history_html, render_history(history_data(journal)))
    screenshots(history_html, "report-history-fixture", capsys, rows=40)


@pytest.mark.kernel
@pytest.mark.usefixtures("delayacct_steady")  # its note follows kernel.task_delayacct
def test_report_of_a_parallel_build_opens_in_chromium(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "project"
    write_project(project)
    html = tmp_path / "build.html"
    done = _cli("run", "--json", "--report", str(html), "--", "make", "-s", "-C",
                str(project), "-j2")
    assert done.returncode == 0, done.stderr
    assert f"report written to {html}" in done.stderr
    doc = json.loads(done.stdout)
    assert (project / "result.txt").exists()
    page = Page(html.read_text())
    assert_self_contained(page)
    comms = [p["comm"] for p in doc["processes"]]
    assert len(page.all("rect", **{"class": "b"})) == len(comms)  # every process a row
    assert comms.count("cc1") == len(MODULES) + 1 and "prog" in comms
    assert {"cc1", "as", "make"} <= {t.split(" ")[0] for t in page.text if t.strip()}
    if delayacct.status():
        assert OFF_NOTE not in page.plain
    colours = screenshots(html, "report-run-make-j2", capsys)
    assert rgb(RUNNING.colour) in colours


@pytest.mark.kernel
def test_history_report_through_the_daemon(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    require_kernel()
    daemon = RunningDaemon()
    try:
        marker = unique_command(daemon.base, "rep").name
        for _ in range(5):
            subprocess.run([str(daemon.base / marker)], check=True)
        with Client("daemon", socket_path=daemon.socket) as c:  # a history query flushes
            wait_until(lambda: len(c.history(comm=marker)) >= 5,
                       "the five exits in the journal", 10)
        html = tmp_path / "history.html"
        done = _cli("--socket", daemon.socket, "history", "--report", str(html),
                    "--since", "10m")
        assert done.returncode == 0, done.stderr
        page = Page(html.read_text())
        assert_self_contained(page)
        assert "Exits per minute" in page.headings["h2"]
        assert len(page.all("rect", **{"class": "hov"})) == 2 * 11  # 10 minutes (+1 partial)
        only = tmp_path / "only.html"
        assert _cli("--socket", daemon.socket, "history", "--report", str(only),
                    "--comm", marker).returncode == 0
        text = Page(only.read_text()).plain
        assert "exits 5 " in text and f"comm {marker}" in text
        assert "no rows match" not in done.stderr
        empty = _cli("--socket", daemon.socket, "history", "--report", str(only),
                     "--comm", f"{marker}x")  # a page, and the word that it is empty
        assert empty.returncode == 0 and only.exists(), empty.stderr
        assert (f"no rows match (--comm {marker}x, in the last 24h (the default --since)): "
                "the report is empty") in empty.stderr, empty.stderr
        screenshots(html, "report-history-daemon", capsys, rows=40)
    finally:
        daemon.close()


if __name__ == "__main__" and sys.argv[1:2] == ["record"]:
    record(Path(sys.argv[2]))
    os.chmod(sys.argv[2], 0o644)
    subprocess.run(["ls", "-l", sys.argv[2]], check=True)
