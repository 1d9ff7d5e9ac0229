"""docker/compose.yaml is a valid Compose file with the project's production settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from voice_testkit.procs import ROOT


def _schema() -> Path:
    """The Compose schema from shared/schemas beside the checkout, else the vendored copy."""
    for directory in (os.environ.get("VOICE_SCHEMAS_DIR"), ROOT.parent / "shared" / "schemas"):
        if directory and (Path(directory) / "compose-spec.json").exists():
            return Path(directory) / "compose-spec.json"
    return Path(__file__).with_name("compose-spec.json")


SCHEMA = _schema()
COMPOSE = ROOT / "docker" / "compose.yaml"
SERVICES = {"opensips", "core", "asr", "llm", "tts"}
GRPC_PORTS = {"asr": 50051, "llm": 50052, "tts": 50053}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_validates_against_the_compose_specification(compose):
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is not on this machine (set VOICE_SCHEMAS_DIR)")
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_a_broken_file_is_refused():
    """The schema check is not vacuous: an unknown key and a wrong type are errors."""
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is not on this machine (set VOICE_SCHEMAS_DIR)")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    for service in ({"image": "x", "hot_reload": True}, {"image": "x", "cap_drop": "ALL"}):
        assert list(validator.iter_errors({"services": {"asr": service}})), service


def test_runs_every_service_from_the_nix_images(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        assert svc["image"] == f"opensips-ai-{name}:0.1.0"
        assert "build" not in svc, f"{name}: images come from Nix, not a Dockerfile"


def test_production_hardening(compose):
    for name, svc in compose["services"].items():
        assert svc["read_only"] is True, name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert svc["cap_drop"] == ["ALL"], name
        assert not svc.get("cap_add"), name
        assert svc.get("privileged") is not True, name
        user = str(svc["user"])
        assert user.split(":", maxsplit=1)[0] not in ("0", "root", ""), f"{name} runs as root"
        limits = svc["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and limits["memory"], name
        assert any(str(t).startswith("/tmp") for t in svc["tmpfs"]), f"{name}: no writable /tmp"
        for volume in svc.get("volumes", []):
            source = volume if isinstance(volume, str) else volume.get("source", "")
            assert not str(source).startswith((".", "/")), f"{name}: source mount {volume}"


def test_production_health_checks(compose):
    for name, svc in compose["services"].items():
        check = svc["healthcheck"]
        assert (check["interval"], check["timeout"], check["retries"], check["start_period"]) \
            == ("30s", "10s", 3, "40s"), name
        assert check["test"][0] == "CMD", name
    for name, port in GRPC_PORTS.items():
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[1:] == ["python", "-m", "voice_common.healthcheck", f"127.0.0.1:{port}"]
    assert "http://127.0.0.1:8088/health" in " ".join(compose["services"]["core"]["healthcheck"]["test"])


def test_production_environment(compose):
    for name in ("core", "asr", "llm", "tts"):
        env = compose["services"][name]["environment"]
        assert env["LOG_LEVEL"] == "INFO", name
        assert env["DEVELOPMENT_MODE"] == "0", name
        assert env[f"{name.upper()}_HOT_RELOAD"] == "0", name
    core = compose["services"]["core"]
    assert core["environment"]["CORE_SIGNALLING"] == "opensips"
    assert core["network_mode"] == "service:opensips"
    assert core["depends_on"]["opensips"]["condition"] == "service_healthy"
    for name in GRPC_PORTS:
        assert core["depends_on"][name]["condition"] == "service_healthy"


def test_opensips_in_front_with_the_rtp_range(compose):
    ports = compose["services"]["opensips"]["ports"]
    assert "5060:5060/udp" in ports
    assert "35000-35999:35000-35999/udp" in ports
    for name in GRPC_PORTS:
        assert "ports" not in compose["services"][name], f"{name} must not be published"
