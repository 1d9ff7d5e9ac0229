"""deploy/k8s: every document valid against the Kubernetes schemas (offline, from
kubernetes-validate's bundled OpenAPI schemas), and the documents agreeing with each
other and with the code: selectors, ports, probes, env, images, the drain's grace."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from asr_service.settings import AsrSettings
from llm_service.settings import LlmSettings
from opensips_ai_core import metrics
from opensips_ai_core.config import CoreSettings
from tts_service.settings import TtsSettings
from voice_common.config import ServiceSettings
from voice_testkit.procs import LOOPBACK, ROOT

K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "voice-ai"
# The oldest Kubernetes the manifests claim (native gRPC probes are GA from 1.27, mixed
# UDP/TCP LoadBalancers from 1.26) and the newest schemas kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.29.0", "latest")
# What the core needs after its drain timeout besides the closing lines and the BYEs
# (each bounded by CORE_GRACE_PERIOD_S): the exit.
DRAIN_MARGIN_S = 10
# Settings the manifests may set ahead of the code (none now).
PENDING_SETTINGS: set[str] = set()
SETTINGS: dict[str, type[ServiceSettings]] = {
    "ASR": AsrSettings, "LLM": LlmSettings, "TTS": TtsSettings, "CORE": CoreSettings}


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                out.append((f"{path.relative_to(K8S)}#{index}", doc))
    return out


DOCS = documents()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def deployment(name: str) -> dict[str, Any]:
    [found] = [d for d in of_kind("Deployment") if d["metadata"]["name"] == name]
    return found


def containers(deploy: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deploy["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def container_ports(container: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
            for p in container.get("ports", [])}


def test_manifests_exist() -> None:
    kinds = {doc["kind"] for _, doc in DOCS}
    assert {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "ConfigMap",
            "HorizontalPodAutoscaler"} <= kinds
    assert {d["metadata"]["name"] for d in of_kind("Deployment")} == {
        "asr", "llm", "tts", "core", "opensips"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[where for where, _ in DOCS])
def test_document_is_valid_kubernetes(where: str, doc: dict[str, Any], version: str) -> None:
    # From requirements-dev.txt (CI); the Nix dev environment does not carry it yet.
    validator = pytest.importorskip("kubernetes_validate")
    if version == "latest":
        version = validator.latest_version()
    try:
        validator.validate(doc, version, strict=True)
    except validator.ValidationError as err:
        path = "/".join(str(p) for p in err.path)
        pytest.fail(f"{where} ({doc['kind']}) at {path}: {err.message}")


def test_everything_is_in_the_namespace() -> None:
    assert [d["metadata"]["name"] for d in of_kind("Namespace")] == [NAMESPACE]
    for where, doc in DOCS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, where


def test_selectors_match_their_pods() -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in of_kind("Deployment")}
    for deploy in of_kind("Deployment"):
        selector = deploy["spec"]["selector"]["matchLabels"]
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), deploy["metadata"]["name"]
    for doc in [*of_kind("Service"), *of_kind("PodDisruptionBudget")]:
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        matched = [name for name, labels in pods.items() if selector.items() <= labels.items()]
        assert len(matched) == 1, f"{doc['kind']} {doc['metadata']['name']}: {matched}"
    for hpa in of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in pods


def test_service_ports_name_container_ports() -> None:
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        [deploy] = [d for d in of_kind("Deployment")
                    if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        ports = {name: port for c in deploy["spec"]["template"]["spec"]["containers"]
                 for name, port in container_ports(c).items()}
        for port in service["spec"]["ports"]:
            number, protocol = ports[port["targetPort"]]
            assert protocol == port["protocol"], port
            if service["spec"].get("clusterIP") == "None":
                # Headless: clients dial the pod's port itself, under the Service's number.
                assert number == port["port"], port


def test_probes_point_at_declared_ports() -> None:
    for deploy in of_kind("Deployment"):
        for container in deploy["spec"]["template"]["spec"]["containers"]:
            ports = container_ports(container)
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if probe is None or "exec" in probe:
                    continue
                [(action, spec)] = [(k, v) for k, v in probe.items()
                                    if k in ("grpc", "httpGet", "tcpSocket")]
                port = spec["port"]
                where = (deploy["metadata"]["name"], kind, port)
                if isinstance(port, str):
                    assert port in ports, where
                    assert ports[port][1] == "TCP", where  # probes speak TCP
                    port = ports[port][0]
                assert (port, "TCP") in ports.values(), where
                if action == "grpc":
                    # The service's gRPC port is the one the probe asks.
                    prefix = deploy["metadata"]["name"].upper()
                    assert env_of(container)[f"{prefix}_PORT"] == str(port)


def test_ai_services_listen_where_declared_and_the_env_is_valid(monkeypatch) -> None:
    for name in ("asr", "llm", "tts"):
        [container] = deployment(name)["spec"]["template"]["spec"]["containers"]
        env = env_of(container)
        prefix = name.upper()
        assert env[f"{prefix}_PORT"] == str(container_ports(container)["grpc"][0])
        assert env[f"{prefix}_HOST"] == "0.0.0.0"
        check_settings(monkeypatch, SETTINGS[prefix], env)


def check_settings(monkeypatch, cls: type[ServiceSettings], env: dict[str, str]) -> Any:
    """Every variable is one the service reads, and its value is one it accepts."""
    known = {cls.env_name(field) for field in cls.model_fields}
    prefix = cls.model_config["env_prefix"]
    for key, value in env.items():
        if key.startswith(prefix) and key not in PENDING_SETTINGS:
            assert key in known, f"{key}: not a setting of {cls.service_name()}"
        monkeypatch.setenv(key, value)
    return cls()


def test_core_env_is_valid_and_its_targets_name_the_headless_services(monkeypatch) -> None:
    [container] = deployment("core")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    public_ip = next(e for e in container["env"] if e["name"] == "CORE_PUBLIC_IP")
    assert public_ip["valueFrom"]["fieldRef"]["fieldPath"] in ("status.podIP", "status.hostIP")
    monkeypatch.setenv("CORE_PUBLIC_IP", "10.0.0.7")  # what the downward API gives
    settings = check_settings(monkeypatch, CoreSettings, env)
    ports = container_ports(container)
    assert ports["sip"] == (settings.sip_port, "UDP")
    assert ports["http"] == (settings.http_port, "TCP")
    services = {s["metadata"]["name"]: s for s in of_kind("Service")}
    for name, target in (("asr", settings.asr_target), ("llm", settings.llm_target),
                         ("tts", settings.tts_target)):
        match = re.fullmatch(rf"dns:///([a-z0-9-]+)\.{NAMESPACE}\.svc\.cluster\.local:(\d+)",
                             target)
        assert match, target
        service = services[match[1]]
        assert service["spec"]["clusterIP"] == "None"  # every pod, for round_robin
        assert int(match[2]) in {p["port"] for p in service["spec"]["ports"]}
        assert match[1] == name


def test_core_grace_period_covers_the_drain() -> None:
    spec = deployment("core")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    env = env_of(container)
    drain = int(env["CORE_DRAIN_TIMEOUT_S"])
    assert drain == 900  # the production default
    closing = float(env["CORE_GRACE_PERIOD_S"])  # the closing line, then the BYE's answer
    assert spec["terminationGracePeriodSeconds"] >= drain + 2 * closing + DRAIN_MARGIN_S
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert f"http://127.0.0.1:{env['CORE_HTTP_PORT']}/drain" in pre_stop
    assert "method='POST'" in pre_stop
    # A draining core answers /health with 503: readiness may use it, liveness must not.
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "httpGet" not in container["livenessProbe"]
    annotations = deployment("core")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == env["CORE_HTTP_PORT"]
    [pdb] = [p for p in of_kind("PodDisruptionBudget") if p["metadata"]["name"] == "core"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert deployment("core")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_autoscaler_uses_the_cores_active_calls_metric() -> None:
    assert metrics.ACTIVE_CALLS._name == "voice_active_calls"
    [hpa] = [h for h in of_kind("HorizontalPodAutoscaler") if h["metadata"]["name"] == "core"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "voice_active_calls"
    max_calls = int(env_of(deployment("core")["spec"]["template"]["spec"]["containers"][0])
                    ["CORE_MAX_CALLS"])
    assert 0 < float(metric["pods"]["target"]["averageValue"]) < max_calls
    [rules] = [c for c in of_kind("ConfigMap")
               if c["metadata"]["name"] == "prometheus-adapter-voice-rules"]
    [rule] = yaml.safe_load(rules["data"]["rules.yaml"])["rules"]
    assert rule["seriesQuery"].startswith("voice_active_calls{")
    assert rule["name"]["as"] == "voice_active_calls"


def nix_images() -> tuple[set[str], str]:
    """The image names and tag `nix build .#images` produces (nix/images.nix)."""
    text = (ROOT / "nix" / "images.nix").read_text()
    names = set(re.findall(r'^\s+(\w+) = (?:pythonService|mkImage) \{', text, re.M))
    assert 'name = "opensips-ai-${name}";' in text and "tag = python.version;" in text
    version = re.search(r'^\s*version = "([^"]+)";', (ROOT / "nix" / "python.nix").read_text(),
                        re.M)
    assert version
    return {f"opensips-ai-{name}" for name in names}, version[1]


def test_images_are_the_ones_nix_builds() -> None:
    names, tag = nix_images()
    assert names == {f"opensips-ai-{n}" for n in ("asr", "llm", "tts", "core", "opensips")}
    for deploy in of_kind("Deployment"):
        for container in containers(deploy):
            name, _, image_tag = container["image"].partition(":")
            assert name in names and image_tag == tag, container["image"]
    for name in ("asr", "llm", "tts", "core"):
        [container] = deployment(name)["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"opensips-ai-{name}:{tag}"


# --- OpenSIPS and its dispatcher list ---------------------------------------------

def opensips_config() -> dict[str, str]:
    [config] = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "opensips-dispatcher"]
    return config["data"]


def test_dispatcher_sync_follows_the_headless_core_service() -> None:
    deploy = deployment("opensips")
    core_sip = next(s for s in of_kind("Service") if s["metadata"]["name"] == "core-sip")
    assert core_sip["spec"]["clusterIP"] == "None"
    assert core_sip["spec"]["publishNotReadyAddresses"] is False
    sip_port = next(p["port"] for p in core_sip["spec"]["ports"] if p["name"] == "sip")
    for container in containers(deploy):
        if container["image"].startswith("opensips-ai-core"):
            env = env_of(container)
            assert env["CORE_SERVICE"] == f"core-sip.{NAMESPACE}.svc.cluster.local"
            assert env["CORE_SIP_PORT"] == str(sip_port)
    cfg = opensips_config()["opensips.cfg"]
    mi = env_of(next(c for c in containers(deploy) if c["name"] == "dispatcher-sync"))
    opensips = next(c for c in containers(deploy) if c["name"] == "opensips")
    assert opensips["command"] == ["opensips", "-F", "-f", mi["OPENSIPS_CFG"]]
    assert f'"socket_name", "udp:{mi["MI_ADDRESS"]}"' in cfg
    assert f'"db_url", "text://{mi["DB_DIR"]}"' in cfg
    for module in re.findall(r'loadmodule "(\w+)\.so"', cfg):
        assert module in {"proto_udp", "proto_tcp", "signaling", "sl", "tm", "rr", "maxfwd",
                          "sipmsgops", "db_text", "dispatcher", "mi_datagram"}


@pytest.fixture
def dispatcher_sync(tmp_path: Path):
    script = tmp_path / "dispatcher_sync.py"
    script.write_text(opensips_config()["dispatcher_sync.py"])
    spec = importlib.util.spec_from_file_location("dispatcher_sync", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return script, module


def test_dispatcher_sync_writes_the_db_text_table(dispatcher_sync, tmp_path: Path) -> None:
    script, _ = dispatcher_sync
    db = tmp_path / "db"
    template = tmp_path / "template.cfg"
    template.write_text(opensips_config()["opensips.cfg"])
    rendered = tmp_path / "run" / "opensips.cfg"
    result = subprocess.run(
        [sys.executable, str(script), "--once"], capture_output=True, text=True, timeout=30,
        env={"CORE_SERVICE": "localhost", "CORE_SIP_PORT": "5080", "DB_DIR": str(db),
             "OPENSIPS_CFG_TEMPLATE": str(template), "OPENSIPS_CFG": str(rendered),
             "SIP_PUBLIC_ADDRESS": "198.51.100.7", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "1 cores: 127.0.0.1" in result.stdout
    # The init container's other job: the script with the public address in its sockets.
    sockets = [line for line in rendered.read_text().splitlines() if line.startswith("socket=")]
    assert sockets == ["socket=udp:eth0:5060 as 198.51.100.7:5060",
                       "socket=tcp:eth0:5060 as 198.51.100.7:5060"]
    # OpenSIPS's db_text format: a typed header line, ':'-separated rows, '\:' escaped.
    lines = (db / "dispatcher").read_text().splitlines()
    assert lines[0].split() == ["id(int,auto)", "setid(int)", "destination(string)",
                                "socket(string,null)", "state(int)", "probe_mode(int)",
                                "weight(string)", "priority(int)", "attrs(string,null)",
                                "description(string,null)"]
    assert lines[1:] == [r"1:1:sip\:127.0.0.1\:5080::0:1:1:0::core 127.0.0.1"]
    assert (db / "version").read_text().splitlines()[1] == "dispatcher:9"


def test_dispatcher_sync_no_core_is_an_empty_list(dispatcher_sync, tmp_path: Path) -> None:
    _, module = dispatcher_sync
    assert module.resolve("no-core.invalid", 5080) == []
    module.write(tmp_path, [], 5080)
    assert len((tmp_path / "dispatcher").read_text().splitlines()) == 1  # the header only


@pytest.fixture
def mi_server() -> Iterator[tuple[str, list[dict]]]:
    """A UDP socket answering OpenSIPS MI JSON-RPC as mi_datagram does (one datagram each
    way), recording the requests."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(0.2)
    requests: list[dict] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            request = json.loads(data)
            requests.append(request)
            sock.sendto(json.dumps({"jsonrpc": "2.0", "result": "OK",
                                    "id": request["id"]}).encode(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"{LOOPBACK}:{sock.getsockname()[1]}", requests
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def test_dispatcher_sync_asks_opensips_to_reload(dispatcher_sync, mi_server) -> None:
    _, module = dispatcher_sync
    address, requests = mi_server
    module.reload(address)
    assert requests == [{"jsonrpc": "2.0", "method": "ds_reload", "id": 1}]
