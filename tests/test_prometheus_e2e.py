"""End to end: a real Prometheus (Debian's package, installed by .ci/run) scrapes
``taskstats exporter`` on loopback while a workload runs in a cgroup of its own, and
the workload's series come back through Prometheus' HTTP API: every process counted,
the 50 ms ones that live and die between two scrapes included, and non-zero IO wait."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
SHORT_LIVED = 5  # processes of 50 ms each
# the workload's comm prefix, unique to this run: the exporter's command group matches
# comms machine-wide, and other runs of this test may be going on
PREFIX = f"e2e{os.urandom(3).hex()}"
WORKLOAD = textwrap.dedent("""
    import os, re, subprocess, sys, time, urllib.parse, urllib.request
    cgroup, sleeper, data, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    url, prom, label = sys.argv[6], sys.argv[7], f'cgroup="/{os.path.basename(cgroup)}"'
    def get(url):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as reply:
            return reply.read().decode()
    def wait_for(what, check, fetch):
        deadline = time.monotonic() + 30
        while not check(fetch()):
            assert time.monotonic() < deadline, f"never saw {what}"
            time.sleep(0.1)  # the poll interval of a deadline-bounded wait
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    # sampled live in its cgroup, and scraped so: its counters have a sample before
    # the work (rate() needs two)
    query = prom + "/api/v1/query?" + urllib.parse.urlencode(
        {"query": "taskstats_delay_seconds_total{%s}" % label})
    wait_for("the workload's cgroup in Prometheus", lambda doc: '"result":[{' in doc,
             lambda: get(query))
    for _ in range(n):
        subprocess.run([sleeper, "0.05"], check=True)  # lives 50 ms, between scrapes
    subprocess.run([sys.executable, "-c", sys.argv[5], data], check=True)
    exits = re.compile(r"^taskstats_task_exits_total\\{" + re.escape(label) + r"\\} (\\S+)$", re.M)
    wait_for(f"its {n + 1} children's exits", lambda text: any(
        float(v) >= n + 1 for v in exits.findall(text)), lambda: get(url))  # while it lives
""")
IO_CHILD = textwrap.dedent(f"""
    import mmap, os, sys
    with open("/proc/self/comm", "w") as f:
        f.write("{PREFIX}-io")
    with open(sys.argv[1], "wb") as f:
        f.write(os.urandom(1 << 20)); f.flush(); os.fsync(f.fileno())
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
    os.readv(fd, [mmap.mmap(-1, 1 << 20)])
""")


def _required(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the Prometheus end-to-end test, but: {reason}")
    pytest.skip(reason)


def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        _required("no prometheus binary (Debian's `prometheus` package; .ci/run installs it)")
    assert path is not None
    return path


def _cgroup2_root() -> Path:
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mount, fstype = line.split()[:3]
            if fstype == "cgroup2" and os.access(mount, os.W_OK):
                return Path(mount)
    _required("no writable cgroup v2 mount for the workload's cgroup")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    with opener.open(url, timeout=10) as reply:
        return bytes(reply.read())


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0,
              show: Callable[[], object] = lambda: "") -> None:
    try:
        wait_until(check, what, timeout)
    except AssertionError as err:
        raise AssertionError(f"{err} {show()}") from None


def _dashboard_queries() -> list[str]:
    """Every query of contrib/grafana-taskstats.json, with Grafana's variables filled."""
    dashboard = json.loads((ROOT / "contrib" / "grafana-taskstats.json").read_text())
    fill = {"$instance": ".*", "$cgroup": ".*", "$__rate_interval": "1m"}
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in fill.items():
                expr = expr.replace(var, value)
            out.append(expr)
    assert out
    return out


class Prometheus:
    """A Prometheus server on loopback scraping ``target`` every second."""

    def __init__(self, binary: str, target: str, base: Path) -> None:
        self.port = _free_port()
        config = base / "prometheus.yml"
        config.write_text(textwrap.dedent(f"""
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: taskstats
                static_configs:
                  - targets: ["{target}"]
        """))
        self.log = base / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={base / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)
        _wait_for("Prometheus to be ready", self._ready)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
        try:
            _get(f"http://127.0.0.1:{self.port}/-/ready")
        except OSError:
            return False
        return True

    def query(self, promql: str) -> dict[str, float]:
        """An instant query: {label set as text: value}."""
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        doc = json.loads(_get(url))
        assert doc["status"] == "success", doc
        return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1])
                for r in doc["data"]["result"]}

    def value(self, promql: str) -> float | None:
        """The single value of ``promql``, None while it has no result."""
        got = self.query(promql)
        assert len(got) <= 1, got
        return next(iter(got.values()), None)

    def close(self) -> None:
        """Stop it."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`taskstats exporter` on 127.0.0.1 (a free port), sampling every second, with a
    command group for the workload; yields (host:port, its stderr so far)."""
    err = tmp_path / "exporter.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytaskstats", "--backend", "kernel", "exporter",
             "--listen", "127.0.0.1:0", "--interval", "1", "--group", f"e2e=^{PREFIX}"],
            stdout=subprocess.DEVNULL, stderr=f)
    try:
        _wait_for("the exporter to serve",
                  lambda: proc.poll() is not None or "serving" in err.read_text())
        text = err.read_text()
        found = re.search(r"serving http://(127\.0\.0\.1:\d+)/metrics", text)
        assert proc.poll() is None and found, text
        yield found.group(1), text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err.read_text()


def test_prometheus_reads_back_the_workload(no_exit_storm: None, exporter: tuple[str, str],
                                            delayacct_on: None, tmp_path: Path) -> None:
    binary, cgroups = _prometheus(), _cgroup2_root()
    target, stderr = exporter
    assert "exits from the kernel" in stderr  # it says which source it uses
    name = f"pytaskstats-e2e-{os.getpid()}"
    cgroup = cgroups / name
    cgroup.mkdir()
    sleeper = tmp_path / f"{PREFIX}-sleep"  # its comm is the name it was executed by
    sleeper.symlink_to(shutil.which("sleep") or "/bin/sleep")
    prom = Prometheus(binary, target, tmp_path)
    try:
        _wait_for("the first scrape", lambda: prom.value('up{job="taskstats"}') == 1)
        subprocess.run([sys.executable, "-c", WORKLOAD, str(cgroup), str(sleeper),
                        str(tmp_path / "io.bin"), str(SHORT_LIVED), IO_CHILD,
                        f"http://{target}/metrics", f"http://127.0.0.1:{prom.port}"],
                       check=True, timeout=120)
        label = f'cgroup="/{name}"'
        processes = SHORT_LIVED + 2  # the sleepers, the IO child, the workload itself
        exits = f"taskstats_task_exits_total{{{label}}}"
        _wait_for(f"{processes} exits of the workload in Prometheus",
                  lambda: prom.value(exits) == processes,
                  show=lambda: prom.query("taskstats_task_exits_total"))
        assert prom.value(f"taskstats_process_exits_total{{{label}}}") == processes
        # the series is there; its value is the kernel's: with another test suite beside
        # it, the workload's reads were seen to complete without one blocking wait (0)
        blkio = prom.value(f'taskstats_delay_seconds_total{{{label},kind="blkio"}}')
        assert blkio is not None and blkio >= 0
        # the command group holds our comms' delays (their blkio may be 0 on a busy
        # machine: the cgroup's can come from the workload's own start-up reads)
        group = prom.value('taskstats_group_delay_seconds_total{group="e2e",kind="blkio"}')
        assert group is not None and 0 <= group <= blkio
        ran = prom.value('taskstats_group_delays_total{group="e2e",kind="cpu"}')
        assert ran is not None and ran >= SHORT_LIVED + 1  # each ran at least once
        read = prom.value(f'taskstats_io_bytes_total{{{label},direction="read"}}')
        assert read is not None and read >= 1 << 20
        cpu = prom.value(f"sum(taskstats_cpu_seconds_total{{{label}}})")
        assert cpu is not None and cpu > 0
        assert prom.value("taskstats_up") == 1
        assert prom.value("sum(taskstats_exit_events_lost_total)") == 0
        top = prom.query("topk(3, sum by (cgroup) "
                         '(rate(taskstats_delay_seconds_total{kind="blkio"}[1m])))')
        # the documented PromQL works: ours is there unless 3 others waited more
        assert any(name in key for key in top) or len(top) == 3, top
        ours = prom.value("sum by (cgroup) (rate(taskstats_delay_seconds_total"
                          f'{{{label},kind="blkio"}}[1m]))')
        assert ours is not None and (ours > 0 or blkio == 0)
        for expr in _dashboard_queries():  # and Prometheus accepts every panel's query
            prom.query(expr)
    finally:
        prom.close()
        cgroup.rmdir()
