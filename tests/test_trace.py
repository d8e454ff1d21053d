"""Profiling builds and jobs: the trace (checked against the format's rules in
tests/trace_rules.py), the critical path, and ``taskstats diff``; on the recorded
``make -j2`` fixture, on synthetic trees, and on real runs (a make -j2 project, a
pipeline with a slow stage, a run made deliberately slower).

No trace processor is loaded here: Perfetto's Python package (``perfetto``) installs
from PyPI but downloads its trace_processor_shell binary at first use, which an
offline CI cannot; the rules below are the format's documented ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytaskstats import Client, delayacct
from pytaskstats.report import render_run
from pytaskstats.report.compare import Job, compare, load, pruned, regression
from pytaskstats.report.critical import critical_path
from pytaskstats.report.run import Process, tree_order
from pytaskstats.report.trace import CATEGORY, COUNTERS_PID, build_trace
from pytaskstats.summary import ProcessSummary

from . import trace_rules
from .conftest import require_kernel, unique_command, wait_until
from .daemon_util import RunningDaemon
from .test_report import Page, assert_self_contained, fixture_report, write_project

CLI = [sys.executable, "-m", "pytaskstats"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180,
                          check=False)


def _proc(tgid: int, ppid: int, start: float, end: float, *, comm: str = "",
          cpu_us: int = 0) -> Process:
    values: dict[str, int | None] = {"ac_utime": cpu_us, "ac_stime": 0,
                                     "cpu_delay_total": 1000, "blkio_delay_total": 0,
                                     "memory_delay_total": 0, "read_bytes": 0,
                                     "write_bytes": 0}
    return Process(ProcessSummary(tgid, ppid, comm or f"p{tgid}", 1, 0,
                                  int((end - start) * 1e6), 0, values), start, end)


def _slices(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] == CATEGORY]


# ------------------------------------------------------------------ the rules checker


def test_the_rules_checker_rejects_what_the_format_forbids() -> None:
    good = build_trace(fixture_report(), critical_path(fixture_report().processes))
    trace_rules.check(good)

    def broken(change: Any) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.dumps(good))
        change(doc["traceEvents"])
        return doc
    x = next(i for i, e in enumerate(good["traceEvents"]) if e["ph"] == "X")
    flow = next(i for i, e in enumerate(good["traceEvents"]) if e["ph"] == "f")
    pid = good["traceEvents"][x]["pid"]
    cases = {
        "negative ts": lambda ev: ev[x].update(ts=-1),
        "dur missing": lambda ev: ev[x].pop("dur"),
        "overlap": lambda ev: ev.extend([
            {**ev[x], "ts": ev[x]["ts"] + 1, "dur": ev[x]["dur"] + 5}]),
        "unpaired flow": lambda ev: ev.pop(flow),
        "string counter": lambda ev: ev.append({"ph": "C", "name": "c", "pid": pid,
                                                "tid": pid, "ts": 0, "args": {"n": "1"}}),
        "bad metadata": lambda ev: ev.append({"ph": "M", "name": "process_sort_index",
                                              "pid": pid, "tid": pid, "args": {}}),
        "unnamed pid": lambda ev: ev.append({**ev[x], "pid": 999_999_999}),
    }
    for what, change in cases.items():
        with pytest.raises(AssertionError):
            trace_rules.check(broken(change))
            pytest.fail(f"accepted: {what}")


# ------------------------------------------------------------------ trace from a recording


def test_trace_of_the_recorded_build_follows_the_rules_and_the_tree() -> None:
    report = fixture_report()
    path = critical_path(report.processes)
    doc = build_trace(report, path)
    trace_rules.check(doc)
    slices = _slices(doc)
    assert len(slices) == len(report.processes) == 27
    by_pid = {e["pid"]: e for e in slices}
    order = {e["pid"]: e["args"]["sort_index"] for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_sort_index"}
    for e in slices:  # a child's track sorts after its parent's
        parent = e["args"]["ppid"]
        if parent in by_pid:
            assert order[parent] < order[e["pid"]]
            assert by_pid[parent]["ts"] <= e["ts"] + 1000  # starts within 1 ms rounding
    rows = tree_order(report.processes)
    assert [order[p.summary.tgid] for p, _ in rows] == list(range(len(rows)))
    root = min(slices, key=lambda e: order[e["pid"]])
    assert root["args"]["command"] == "make -j2"
    # accounting on the slice, in seconds and bytes
    procs = {p.summary.tgid: p.summary for p in report.processes}
    for e in slices:
        s = procs[e["pid"]]
        assert e["args"]["cpu_s"] == pytest.approx(
            ((s.values["ac_utime"] or 0) + (s.values["ac_stime"] or 0)) / 1e6, abs=1e-6)
        assert e["args"]["read_bytes"] == s.values["read_bytes"]
        assert e["dur"] == pytest.approx((s.etime_us or 0), abs=1.5)
    # counters: every process counted alive once, none left at the end
    alive = [e["args"]["processes"] for e in doc["traceEvents"]
             if e["ph"] == "C" and e["name"] == "processes alive"]
    assert alive[-1] == 0 and max(alive) <= len(slices) and max(alive) >= 2
    assert all(e["pid"] == COUNTERS_PID for e in doc["traceEvents"] if e["ph"] == "C")
    # the critical path: flows from each link to the next; slices numbered
    flows = [e for e in doc["traceEvents"] if e["ph"] in "sf"]
    assert len(flows) == 2 * (len(path) - 1) and len(path) >= 2
    marked = sorted((e["args"]["critical_path"], e["pid"]) for e in slices
                    if "critical_path" in e["args"])
    assert [pid for _, pid in marked] == [link.process.summary.tgid for link in path]
    assert doc["otherData"]["wall_s"] == pytest.approx(report.wall_s)


def test_reused_pids_get_tracks_of_their_own() -> None:
    procs = (_proc(10, 1, 0.0, 2.0), _proc(11, 10, 0.1, 0.5, comm="first"),
             _proc(11, 10, 0.6, 1.9, comm="second"))
    report = dataclasses.replace(fixture_report(), processes=procs, command=("x",))
    doc = build_trace(report, critical_path(procs))
    trace_rules.check(doc)
    tracks = sorted(e["pid"] for e in _slices(doc))
    assert tracks == [10, 11, 11 + (1 << 22)]
    assert sorted(e["args"]["pid"] for e in _slices(doc)) == [10, 11, 11]


# ------------------------------------------------------------------ critical path (pure)


def test_critical_path_follows_the_child_waited_on_last() -> None:
    procs = [_proc(1, 0, 0.0, 10.0, comm="make"),
             _proc(2, 1, 0.1, 4.0, comm="cc-a"),
             _proc(3, 1, 0.2, 9.0, comm="cc-b", cpu_us=7_000_000),
             _proc(4, 3, 0.3, 8.5, comm="cc1"), _proc(5, 3, 0.3, 2.0, comm="as"),
             _proc(6, 1, 5.0, 12.0, comm="orphan"),  # outlived make: not waited on
             _proc(7, 4, 8.0, 8.503, comm="late")]  # its record came 3 ms after its parent's
    path = critical_path(procs)
    assert [link.process.summary.comm for link in path] == ["make", "cc-b", "cc1", "late"]
    assert path[0].own_s == pytest.approx(0.2 + 1.0)  # before cc-b started, after it ended
    assert path[-1].own_s == pytest.approx(path[-1].life_s)
    assert path[1].running_s == pytest.approx(7.0)
    assert [link.after for link in path] == [None, 0, 1, 2]
    assert critical_path([]) == []
    # one child after another (make -j1): each on the path, each after the one before;
    # one that ran in parallel with them is not
    seq = [_proc(1, 0, 0.0, 10.0, comm="make"), _proc(2, 1, 0.0, 3.0, comm="a"),
           _proc(3, 1, 3.001, 6.0, comm="b"), _proc(4, 1, 6.002, 9.9, comm="c"),
           _proc(5, 1, 0.5, 4.0, comm="parallel"), _proc(6, 3, 3.1, 5.9, comm="b-kid")]
    path = critical_path(seq)
    assert [link.process.summary.comm for link in path] == ["make", "a", "b", "b-kid", "c"]
    assert [link.after for link in path] == [None, 0, 1, 2, 2]
    assert [link.depth for link in path] == [0, 1, 1, 2, 1]
    assert path[0].own_s == pytest.approx(10.0 - 3.0 - 2.999 - 3.898)
    assert path[2].own_s == pytest.approx(2.999 - 2.8)
    # a tie on the end: the child that started first (the longer one)
    tie = [_proc(1, 0, 0.0, 5.0), _proc(2, 1, 1.0, 4.0), _proc(3, 1, 0.5, 4.0)]
    assert [link.process.summary.tgid for link in critical_path(tie)] == [1, 3]


def test_the_report_draws_the_critical_path_on_the_timeline() -> None:
    report = fixture_report()
    path = critical_path(report.processes)
    html = render_run(report)
    page = Page(html)
    assert_self_contained(page)
    outlined = [a for a in page.all("rect", **{"class": "b"}) if a.get("data-critical")]
    assert len(outlined) == len(path)
    assert len(page.all("line", **{"class": "cpl"})) == len(path) - 1
    assert "Critical path" in page.headings["h2"]
    assert all(link.process.summary.comm in page.plain for link in path)


# ------------------------------------------------------------------ diff (pure)


def _run_doc(wall: float, procs: list[tuple[str, float, int]]) -> dict[str, Any]:
    return {"command": ["job"], "exit_status": 0, "wall_s": wall, "processes": [
        {"comm": comm, "ac_etime": int(life * 1e6), "ac_utime": cpu, "ac_stime": 0,
         "cpu_delay_total": 0, "blkio_delay_total": None, "memory_delay_total": None,
         "read_bytes": 0, "write_bytes": 4096} for comm, life, cpu in procs]}


def test_diff_orders_by_the_largest_change_and_checks_the_threshold() -> None:
    a = load(_run_doc(2.0, [("cc1", 1.0, 900_000), ("cc1", 1.0, 900_000), ("ld", 0.5, 1)]),
             "a")
    b = load(_run_doc(3.0, [("cc1", 1.1, 900_000), ("ld", 2.5, 2_000_000), ("new", 0.1, 0)]),
             "b")
    whole, changes = compare(a, b)
    assert [c.comm for c in changes] == ["ld", "cc1", "new"]  # 2.0 s, 0.9 s, 0.1 s
    assert whole.percent("wall") == pytest.approx(50.0)
    cc1 = changes[1]
    assert (cc1.a["processes"], cc1.b["processes"]) == (2.0, 1.0)
    assert changes[2].percent("wall") == float("inf")
    assert regression(whole, "wall", 49.0) and regression(whole, "wall", 50.0) is None
    with pytest.raises(ValueError, match="not measured"):
        regression(whole, "io_wait", 10)
    assert whole.a["io_wait"] is None  # not measured is not 0


def test_diff_reads_a_trace_as_it_reads_run_json() -> None:
    report = fixture_report()
    from_trace = load(build_trace(report), "t")
    assert isinstance(from_trace, Job)
    assert from_trace.totals["processes"] == 27
    assert from_trace.totals["wall"] == pytest.approx(report.wall_s)
    cpu = sum(((p.summary.values["ac_utime"] or 0) + (p.summary.values["ac_stime"] or 0))
              for p in report.processes) / 1e6
    assert from_trace.totals["cpu"] == pytest.approx(cpu, abs=1e-4)


def test_diff_parsing_drops_only_keys_it_does_not_read() -> None:
    """read_job parses with ``pruned`` (memory); a run's values come out the same."""
    report = fixture_report()
    run_doc = {"command": ["make"], "exit_status": 2, "wall_s": report.wall_s,
               "delayacct": True, "lost": 0, "processes": [
                   {**p.summary.values, "comm": p.summary.comm, "tgid": p.summary.tgid,
                    "ppid": 1, "threads": 1} for p in report.processes]}
    for doc in (run_doc, build_trace(report)):
        text = json.dumps(doc)
        whole = load(json.loads(text), "a")
        small = load(json.loads(text, object_pairs_hook=pruned), "a")
        assert small == whole and whole.totals["processes"] == 27
        assert whole.totals["cpu"] and whole.totals["read"] is not None
        assert len(json.dumps(json.loads(text, object_pairs_hook=pruned))) < 0.75 * len(text)


def test_diff_command_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "a.json"
    good.write_text(json.dumps(_run_doc(1.0, [("x", 1.0, 1)])))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    for args, status, said in (
            ((str(good), str(tmp_path / "missing.json")), 1, "cannot read"),
            ((str(good), str(bad)), 1, "not JSON"),
            ((str(good), str(other)), 1, "not the output of"),
            ((str(good), str(good), "--fail-above", "-3"), 2, "percentage"),
            ((str(good), str(good), "--on", "cpu"), 2, "goes with --fail-above"),
            ((str(good), str(good), "--fail-above", "5", "--on", "io_wait"), 1,
             "not measured")):
        done = _cli("diff", *args)
        assert done.returncode == status, (args, done.stderr)
        assert said in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    same = _cli("diff", str(good), str(good), "--fail-above", "0")
    assert same.returncode == 0 and "whole run" in same.stdout
    slower = json.dumps(_run_doc(2.0, [("x", 2.0, 1)]))
    for args, text, status, said in (  # '-': one run from stdin, as from a pipe
            ((str(good), "-", "--fail-above", "10"), slower, 3, "regression: wall"),
            (("-", str(good)), slower, 0, ""),
            (("-", "-"), slower, 2, "one run only can come on stdin"),
            ((str(good), "-"), "{", 1, "stdin: not JSON")):
        done = subprocess.run([*CLI, "diff", *args], input=text, capture_output=True,
                              text=True, timeout=180, check=False)
        assert done.returncode == status and said in done.stderr, (args, done.stderr)
        assert status in (2, 1) or "B: stdin" in done.stdout or "A: stdin" in done.stdout


def _limited() -> None:
    """In the child: at most 2 GiB of address space, so a regression that reads
    /dev/zero whole fails with an error instead of eating the shared machine."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_diff_refuses_hostile_files_in_bounded_time_with_one_line(tmp_path: Path) -> None:
    good = tmp_path / "a.json"
    good.write_text(json.dumps(_run_doc(1.0, [("x", 1.0, 1)])))
    run = json.dumps(_run_doc(1.0, [("x", 1.0, 1)]))
    files = {
        "deep.json": "[" * 200_000 + "]" * 200_000,
        "nan.json": run.replace('"wall_s": 1.0', '"wall_s": NaN'),
        "inf_status.json": run.replace('"exit_status": 0', '"exit_status": Infinity'),
        "huge.json": run.replace('"ac_etime": 1000000', '"ac_etime": 1' + "0" * 400),
        "negative.json": run.replace('"wall_s": 1.0', '"wall_s": -5'),
        "string.json": run.replace('"ac_utime": 1', '"ac_utime": "1"'),
        "float_status.json": run.replace('"exit_status": 0', '"exit_status": 1e300'),
        "bad_utf8.json": "",
    }
    for name, text in files.items():
        assert name == "bad_utf8.json" or text != run, name  # the replacement happened
        (tmp_path / name).write_text(text)
    (tmp_path / "bad_utf8.json").write_bytes(b'{"processes": [], "wall_s": 1, "\xff": 0}')
    trace = {"traceEvents": [{"ph": "X", "cat": CATEGORY, "name": "x", "dur": "1e400",
                              "args": {}}], "otherData": {"wall_s": 1.0}}
    (tmp_path / "trace_dur.json").write_text(json.dumps(trace))
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    hostile = [*(str(tmp_path / n) for n in (*files, "trace_dur.json", "fifo", "dir")),
               "/dev/zero"]
    for path in hostile:
        done = subprocess.run([*CLI, "diff", str(good), path], capture_output=True,
                              text=True, timeout=60, check=False, preexec_fn=_limited)
        assert done.returncode == 1, (path, done.stderr)
        assert done.stderr.startswith("taskstats diff: "), (path, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (path, done.stderr)
        assert len(done.stderr) < 400, (path, done.stderr)


# ------------------------------------------------------------------ real runs


def _busy(tmp_path: Path) -> Path:
    """python3 under a name of its own (its comm), to find it in the run."""
    return unique_command(tmp_path, "slow", sys.executable)


@pytest.mark.kernel
def test_pipeline_with_a_slow_stage_has_a_known_critical_path(tmp_path: Path) -> None:
    require_kernel()
    slow = _busy(tmp_path)
    trace = tmp_path / "t.json"
    work = "import sys; sys.stdin.read(); sum(range(4_000_000))"
    script = (f"/bin/sleep 0.05 | /bin/cat > /dev/null; "
              f"/bin/echo go | {slow} -c '{work}'; exit 0")
    done = _cli("run", "--json", "--critical-path", "--trace", str(trace), "--",
                "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    links = doc["critical_path"]["links"]
    # sh waited on the second pipeline last, and on its last stage (the slow one) last;
    # before it, on the first pipeline, whose two stages end together (cat on sleep's
    # EOF, within the slack): one of them is on the path, not both
    comms = [link["comm"] for link in links]
    assert comms[0] == "sh" and comms[-1] == slow.name
    assert comms[1] in ("sleep", "cat") and comms.count("sleep") + comms.count("cat") == 1
    assert set(comms[2:-1]) <= {"echo"} and all(link["depth"] == 1 for link in links[1:])
    assert [link["after"] for link in links] == [None, *range(len(links) - 1)]
    assert links[-1]["running_s"] > 0.05  # it computed: its CPU time, measured
    assert links[-1]["own_s"] == pytest.approx(links[-1]["life_s"])
    assert doc["critical_path"]["totals"]["wall_s"] == pytest.approx(links[0]["life_s"])
    assert "critical path: 2 processes" not in done.stderr  # --json: the text is not printed
    tdoc = json.loads(trace.read_text())
    trace_rules.check(tdoc)
    flows = [e for e in tdoc["traceEvents"] if e["ph"] == "f"]
    assert len(flows) == len(links) - 1
    # the slow stage, as the last command of a nested shell, is on the path
    nested = _cli("run", "--critical-path", "--json", "--", "sh", "-c",
                  f"sh -c \"{slow} -c 'sum(range(8_000_000))'; exit 0\" & "
                  "/bin/sleep 0.06; wait")  # the sleep ends > slack after the inner sh began
    assert nested.returncode == 0, nested.stderr
    got = json.loads(nested.stdout)["critical_path"]
    assert [link["comm"] for link in got["links"]] == ["sh", "sh", slow.name]
    assert got["links"][-1]["running_s"] > 0.05  # it computed: CPU time, measured
    assert got["totals"]["running_s"] >= got["links"][-1]["running_s"]


@pytest.mark.kernel
@pytest.mark.usefixtures("delayacct_steady")  # its last check follows kernel.task_delayacct
def test_make_j2_project_trace_critical_path_and_diff(tmp_path: Path) -> None:
    require_kernel()
    project = tmp_path / "proj"
    write_project(project)
    out = {}
    for jobs in ("1", "2"):
        subprocess.run(["make", "-s", "-C", str(project), "clean"], check=True)
        trace = tmp_path / f"j{jobs}.trace.json"
        done = _cli("run", "--json", "--critical-path", "--trace", str(trace), "--",
                    "make", "-s", "-C", str(project), f"-j{jobs}")
        assert done.returncode == 0, done.stderr
        out[jobs] = (json.loads(done.stdout), trace)
    doc, trace = out["2"]
    tdoc = json.loads(trace.read_text())
    trace_rules.check(tdoc)
    comms = [e["name"] for e in _slices(tdoc)]
    assert comms.count("cc1") == 7 and "make" in comms and "prog" in comms
    links = [link["comm"] for link in doc["critical_path"]["links"]]
    assert links[0] == "make" and links[-1] == "prog"  # make waited on ./prog last
    assert "ld" in links and "cc1" in links  # before it, the link; before that, compiles
    assert all(e["args"]["threads"] >= 1 for e in _slices(tdoc))
    prog = next(e for e in _slices(tdoc) if e["name"] == "prog")
    assert prog["args"]["threads"] == 3  # main and its two workers
    # -j1 against -j2: the same work, more CPU in parallel; text, JSON and the page
    j1, j2 = str(out["1"][1]), str(trace)
    diff = _cli("diff", j1, j2, "--json", "--report", str(tmp_path / "d.html"))
    assert diff.returncode == 0, diff.stderr
    d = json.loads(diff.stdout)
    cc1 = next(c for c in d["commands"] if c["comm"] == "cc1")
    assert cc1["processes"]["a"] == cc1["processes"]["b"] == 7
    page = Page((tmp_path / "d.html").read_text())
    assert_self_contained(page)
    assert "cc1" in page.plain and page.headings["h2"] == ["Whole run", "Per command name",
                                                          "Table"]
    if delayacct.status() is False:
        assert d["whole"]["io_wait"]["a"] is None


@pytest.mark.kernel
def test_diff_fails_on_a_run_made_deliberately_slower(tmp_path: Path) -> None:
    require_kernel()
    files = {}
    for name, pause in (("fast", "0.05"), ("slow", "0.6")):
        trace = tmp_path / f"{name}.trace.json"
        done = _cli("run", "--json", "--trace", str(trace), "--", "sh", "-c",
                    f"/bin/sleep {pause}; /bin/true")
        assert done.returncode == 0, done.stderr
        (tmp_path / f"{name}.json").write_text(done.stdout)
        files[name] = (str(tmp_path / f"{name}.json"), str(trace))
    for kind in (0, 1):  # run --json outputs, then traces
        fast, slow = files["fast"][kind], files["slow"][kind]
        worse = _cli("diff", fast, slow, "--fail-above", "50")
        assert worse.returncode == 3, worse.stderr
        assert "regression: wall went from" in worse.stderr
        blocks = [line.split()[0] for line in worse.stdout.splitlines()[3:]
                  if not line.startswith(" ")]
        assert sorted(blocks[:2]) == ["sh", "sleep"]  # the most changed (~0.55 s) first
        better = _cli("diff", slow, fast, "--fail-above", "50")
        assert better.returncode == 0, better.stderr


@pytest.mark.kernel
def test_history_trace_through_the_daemon(tmp_path: Path) -> None:
    require_kernel()
    daemon = RunningDaemon()
    try:
        marker = unique_command(daemon.base, "trc").name
        for _ in range(4):
            subprocess.run([str(daemon.base / marker)], check=True)
        with Client("daemon", socket_path=daemon.socket) as c:
            wait_until(lambda: len(c.history(comm=marker)) >= 4, "the exits journaled", 10)
        trace = tmp_path / "h.json"
        done = _cli("--socket", daemon.socket, "history", "--trace", str(trace),
                    "--since", "10m", "--comm", marker)
        assert done.returncode == 0, done.stderr
        doc = json.loads(trace.read_text())
        trace_rules.check(doc)
        assert [e["name"] for e in _slices(doc)] == [marker] * 4
        assert doc["otherData"]["exit_status"] is None  # no command ran: no status claimed
        a = tmp_path / "a.json"
        a.write_text(trace.read_text())
        again = _cli("diff", str(a), str(trace))
        assert again.returncode == 0 and "exit ?" in again.stdout, again.stdout
        none = _cli("--socket", daemon.socket, "history", "--trace", str(trace), "--comm",
                    f"{marker}x")  # it wrote an empty trace without a word on the filter
        assert none.returncode == 0, none.stderr
        assert (f"no exits match (--comm {marker}x, in the last 1h (the default --since))"
                in none.stderr), none.stderr
        assert _slices(json.loads(trace.read_text())) == []
        clash = _cli("--socket", daemon.socket, "history", "--trace", str(trace), "--json")
        assert clash.returncode == 2 and "does not combine" in clash.stderr
    finally:
        daemon.close()
