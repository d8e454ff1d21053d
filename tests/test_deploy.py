"""The fleet deployment recipes: contrib/Dockerfile and contrib/k8s/daemonset.yaml.

What can be checked here is: the manifest against the Kubernetes schema
(kubernetes-validate, strict: an unknown field fails), the privileges the kernel asks
for and no more, the documents agreeing with each other (ports, labels, paths), the
container's arguments accepted by taskstatsd's own parser, and the image recipe's RUN
lines run in a plain root shell with its paths mapped into a temp directory; the
installed taskstatsd then started with the image's CMD and probed as the DaemonSet does.
"""

from __future__ import annotations

import configparser
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import pytaskstats
from pytaskstats.cli.main import build_parser
from pytaskstats.daemon import config

from .conftest import require_kernel, wait_until

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "contrib" / "Dockerfile"
MANIFEST = ROOT / "contrib" / "k8s" / "daemonset.yaml"
UNIT = ROOT / "contrib" / "taskstatsd.service"
K8S_VERSION = "1.30"  # the oldest Kubernetes release the manifest is meant for


# ------------------------------------------------------------------ the recipes, parsed

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) of the Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def instruction(name: str) -> list[str]:
    """The last ``name`` instruction, which must be in exec (JSON) form."""
    rests = [rest for word, rest in dockerfile() if word == name]
    assert rests, f"the Dockerfile has no {name}"
    value = json.loads(rests[-1])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def documents() -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind."""
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one document of each kind"
    return by_kind


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = documents()["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod()["containers"]
    return dict(only)


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ------------------------------------------------------------------------- the manifest

@pytest.mark.parametrize("kind", ["Namespace", "DaemonSet", "Service"])
def test_manifest_validates_against_the_kubernetes_schema(kind: str) -> None:
    doc = documents()[kind]
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = copy.deepcopy(doc)
    broken["spec" if "spec" in broken else "metadata"]["nonsense"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_pod_has_what_the_kernel_asks_and_no_more() -> None:
    spec, ctx = pod(), container()["securityContext"]
    # listeners: initial PID and network namespaces (exit records reach init_net
    # only), and CAP_NET_ADMIN counted in the initial user namespace
    assert spec["hostPID"] is True and spec["hostNetwork"] is True
    assert spec["hostUsers"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert ctx["privileged"] is False and ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True and ctx["runAsUser"] == 0
    assert ctx["capabilities"]["drop"] == ["ALL"]
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    bounding = unit["Service"]["CapabilityBoundingSet"].split()
    assert sorted("CAP_" + c for c in ctx["capabilities"]["add"]) == sorted(bounding)
    labels = documents()["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_socket_and_journal_live_on_host_paths() -> None:
    argv = container()["args"]
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in pod()["volumes"] if "hostPath" in v}
    sock_dir = os.path.dirname(option(argv, "--socket"))
    state = option(argv, "--state-dir")
    by_path = {path: name for name, path in mounts.items()}
    assert host[by_path[sock_dir]] == sock_dir  # other pods mount the same host path
    assert host[by_path[state]] == state


def test_metrics_port_annotations_service_and_monitor_agree() -> None:
    docs, argv = documents(), container()["args"]
    port = int(option(argv, "--metrics-listen").rsplit(":", 1)[1])
    (cport,) = container()["ports"]
    assert cport["containerPort"] == port
    notes = docs["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and int(notes["prometheus.io/port"]) == port
    service, monitor = docs["Service"], docs["ServiceMonitor"]
    labels = docs["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (sport,) = service["spec"]["ports"]
    assert sport["port"] == port and sport["targetPort"] == cport["name"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == \
        [service["metadata"]["namespace"]]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [sport["name"]]


def test_image_tag_is_the_package_version() -> None:
    assert container()["image"].rsplit(":", 1)[1] == pytaskstats.__version__


# ------------------------------------------------------------- arguments and the parsers

def test_image_and_pod_arguments_are_accepted_by_taskstatsd() -> None:
    assert instruction("ENTRYPOINT") == ["taskstatsd"]
    cmd = instruction("CMD")
    assert container()["args"] == cmd  # the DaemonSet spells out the image's CMD
    cfg = config.load([*cmd, "--config", os.devnull])  # every value checked
    assert cfg.socket == "/run/taskstats/taskstatsd.sock" and cfg.metrics_listen
    with pytest.raises(config.ConfigError):  # the check can fail
        config.load([*cmd, "--metrics-listen", "nowhere:port", "--config", os.devnull])


def test_probes_are_taskstats_commands() -> None:
    for probe in ("readinessProbe", "livenessProbe"):
        argv = container()[probe]["exec"]["command"]
        assert argv[0] == "taskstats"
        args = build_parser().parse_args(argv[1:])
        assert args.socket == option(container()["args"], "--socket")


# ----------------------------------------------------- the recipe run in a root shell

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_from_recipe(base: Path) -> dict[str, str]:
    """Run the Dockerfile's COPY, ENV and RUN steps with / mapped to ``base`` (the
    image's paths: /src and /opt); return the environment the image ends with."""
    mapped = {"/opt/": f"{base}/opt/", "/src/": f"{base}/src/"}

    def remap(text: str) -> str:
        for old, new in mapped.items():
            text = text.replace(old, new)
        return text

    python_dir = os.path.dirname(sys.executable)  # `python` here: the one running us
    env = {"PATH": f"{python_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(base)}
    for word, rest in dockerfile():
        if word == "COPY":
            *sources, dest = rest.split()
            target = Path(remap(dest))
            for src in sources:
                if dest.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / src, target / src)
                else:
                    shutil.copytree(ROOT / src, target,
                                    ignore=shutil.ignore_patterns("__pycache__"))
        elif word == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = os.path.expandvars(remap(value).replace("$PATH", env["PATH"]))
        elif word == "RUN":
            run = subprocess.run(["/bin/sh", "-c", remap(rest)], env=env, cwd=base,
                                 capture_output=True, text=True, timeout=540, check=False)
            assert run.returncode == 0, f"RUN {rest}\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
        else:
            assert word in {"FROM", "ENTRYPOINT", "CMD"}, f"unhandled {word}: extend the test"
    return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The image's file system, built by its recipe (slow: a pip install from the
    package registry, about 10-30 s; done once for the module)."""
    base = tmp_path_factory.mktemp("image")
    yield base, build_from_recipe(base)


def test_recipe_installs_taskstatsd_with_the_exporter(
        image: tuple[Path, dict[str, str]]) -> None:
    base, env = image
    assert not (base / "src" / "pytaskstats").exists()  # the build context is removed
    version = subprocess.run(["taskstatsd", "--version"], env=env, capture_output=True,
                             text=True, check=True, timeout=60).stdout
    assert version.split() == ["taskstatsd", pytaskstats.__version__]
    subprocess.run(["python", "-c", "import prometheus_client"], env=env, check=True,
                   timeout=60)
    assert shutil.which("taskstats", path=env["PATH"]) == str(base / "opt" / "pytaskstats"
                                                               / "bin" / "taskstats")


def test_the_image_command_serves_the_socket_metrics_and_probes(
        image: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    require_kernel()
    env = image[1]
    cmd = instruction("CMD")
    sock = tmp_path / "run" / "taskstatsd.sock"
    port = _free_port()
    swap = {option(cmd, "--socket"): str(sock), option(cmd, "--state-dir"): str(tmp_path / "st"),
            option(cmd, "--metrics-listen"): f"127.0.0.1:{port}"}
    argv = [*instruction("ENTRYPOINT"), *(swap.get(a, a) for a in cmd), "--config", os.devnull]
    daemon = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: sock.exists() or daemon.poll() is not None, "taskstatsd's socket")
        assert daemon.poll() is None, daemon.communicate()[1].decode()
        probe = [a if a != option(cmd, "--socket") else str(sock)
                 for a in container()["readinessProbe"]["exec"]["command"]]
        status = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=60,
                                check=False)
        assert status.returncode == 0, status.stderr

        def scraped() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    return str(r.read().decode())
            except OSError:
                return None  # not listening yet: wait_until polls again
        assert "taskstats_" in wait_until(scraped, "/metrics")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        if daemon.stderr:
            daemon.stderr.close()
