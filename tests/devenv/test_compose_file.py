"""process-compose.yaml: valid for process-compose's schema, no key it does not define,
runnable by the devstack runner, and configured as DESIGN.md's development table says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from voice_testkit.procs import ROOT

# process-compose's own JSON Schema (draft 2020-12), from its repository's schemas/
# (commit of 2026-08-18), kept beside this test so that it runs anywhere.
SCHEMA = Path(__file__).with_name("process-compose-schema.json")
STACK = ROOT / "process-compose.yaml"
# name: (env prefix, gRPC port, HTTP health port)
SERVICES = {"asr": ("ASR", 50051, 8051), "llm": ("LLM", 50052, 8052),
            "tts": ("TTS", 50053, 8053)}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return yaml.safe_load(STACK.read_text())


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def undefined_keys(schema: dict[str, Any], node: dict[str, Any], value: Any,
                   where: str = "") -> list[str]:
    """Every mapping key in `value` that the schema node does not name (the schema itself
    allows unknown keys, process-compose would silently ignore them)."""
    node = _resolve(schema, node)
    found: list[str] = []
    if isinstance(value, dict):
        props = node.get("properties")
        extra = node.get("additionalProperties")
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            if props is not None:
                if key not in props:
                    found.append(path)
                else:
                    found += undefined_keys(schema, props[key], item, path)
            elif isinstance(extra, dict):
                found += undefined_keys(schema, extra, item, path)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            found += undefined_keys(schema, node["items"], item, f"{where}[{i}]")
    return found


def test_validates_against_the_process_compose_schema(schema, stack) -> None:
    jsonschema.Draft202012Validator(schema).validate(stack)


def test_uses_only_keys_the_schema_defines(schema, stack) -> None:
    assert undefined_keys(schema, schema, stack) == []


def test_the_strict_walk_catches_an_unknown_key(schema, stack) -> None:
    # The check above means something only if it can fail.
    broken = json.loads(json.dumps(stack))
    broken["processes"]["asr"]["restart_policy"] = "always"
    broken["processes"]["opensips"]["readiness_probe"]["exec"]["cmd"] = "true"
    jsonschema.Draft202012Validator(schema).validate(broken)  # the schema lets them pass
    assert sorted(undefined_keys(schema, schema, broken)) == [
        "processes.asr.restart_policy", "processes.opensips.readiness_probe.exec.cmd"]


def test_the_runner_accepts_it_and_orders_core_last() -> None:
    from devstack import config

    project = config.load(STACK)
    assert set(project.processes) == {"asr", "llm", "tts", "core", "opensips", "bank",
                                     "adviser"}
    assert config.start_order(project)[-1] == "core"


def _env(process: dict[str, Any], stack: dict[str, Any]) -> dict[str, str]:
    pairs = [*stack.get("environment", []), *process.get("environment", [])]
    return dict(item.split("=", 1) for item in pairs)


@pytest.mark.parametrize("name", ["asr", "llm", "tts", "core", "opensips", "bank", "adviser"])
def test_each_process_is_configured_for_development(stack, name: str) -> None:
    process = stack["processes"][name]
    env = _env(process, stack)
    for var in ("DEVELOPMENT_MODE", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
                "TORCH_FORCE_CPU", "TRANSFORMERS_OFFLINE", "HF_HUB_OFFLINE"):
        assert env[var] == "1", var
    assert env["LOG_LEVEL"] == "DEBUG"
    live = process["liveness_probe"]
    assert (live["period_seconds"], live["timeout_seconds"], live["failure_threshold"],
            live["initial_delay_seconds"]) == (15, 5, 2, 20)
    if name in SERVICES:  # ready when it logs that it serves: no readiness probe
        assert process["ready_log_line"] == f"{name}-service SERVING (warm-up"
        assert "readiness_probe" not in process
    else:
        assert process["readiness_probe"] and "ready_log_line" not in process
    assert process["shutdown"]["signal"] == 15 and process["shutdown"]["timeout_seconds"] > 0
    assert process["log_location"] == f".dev/logs/{name}.log"
    # process-compose then writes the same plain lines as the devstack runner.
    assert process["log_configuration"] == {"disable_json": True, "no_metadata": True,
                                            "no_color": True, "flush_each_line": True}
    # Hot reload exits 0: only `always` starts such a process again.
    expected = "on_failure" if name == "opensips" else "always"
    assert process["availability"]["restart"] == expected
    # No pause after a hot reload's clean exit; voice_common.launch throttles crash loops.
    # (OpenSIPS and the mocks have no hot reload: one second between restarts.)
    assert process["availability"]["backoff_seconds"] == (
        1 if name in ("opensips", "bank", "adviser") else 0)
    if name in SERVICES:
        prefix, port, health_port = SERVICES[name]
        assert env[f"{prefix}_HOT_RELOAD"] == "1" and env[f"{prefix}_PORT"] == str(port)
        assert env[f"{prefix}_ENABLE_DEBUG"] == "1"
        assert f"voice_common.launch {name}_service" in process["command"]
        # The runtime's HTTP /health: the supervisor probes without starting a Python.
        assert env[f"{prefix}_HEALTH_HTTP_PORT"] == str(health_port)
        assert "exec" not in process["liveness_probe"]
        assert process["liveness_probe"]["http_get"] == {
            "host": "127.0.0.1", "port": str(health_port), "path": "/health", "scheme": "http"}
    if name == "asr":
        assert env["VOSK_SHOW_WORDS"] == "1"
    if name == "bank":  # the demo bot's tools (core/bot.toml) call it here
        assert "opensips_ai_core.devtools.mock_bank" in process["command"]
        assert "--port 8090" in process["command"]
        for kind in ("readiness_probe", "liveness_probe"):
            assert process[kind]["http_get"] == {"host": "127.0.0.1", "port": "8090",
                                                 "path": "/health", "scheme": "http"}, kind
    if name == "adviser":  # the demo bot's transfer target (core/bot.toml) is here
        assert "opensips_ai_core.devtools.mock_adviser" in process["command"]
        assert "--port 5090" in process["command"]
        assert "--tts 127.0.0.1:50053" in process["command"]
        for kind in ("readiness_probe", "liveness_probe"):
            assert process[kind]["http_get"] == {"host": "127.0.0.1", "port": "5090",
                                                 "path": "/health", "scheme": "http"}, kind


def test_core_starts_with_the_services_and_after_opensips(stack) -> None:
    # Its start-up overlaps the services' (its channels wait for them to serve); it
    # subscribes to OpenSIPS as it starts, so that one must be healthy first.
    core = stack["processes"]["core"]
    assert {name: dep["condition"] for name, dep in core["depends_on"].items()} == {
        "asr": "process_started", "llm": "process_started", "tts": "process_started",
        "opensips": "process_healthy"}
    env = _env(core, stack)
    assert env["CORE_HOT_RELOAD"] == "1"
    assert (env["CORE_ASR_TARGET"], env["CORE_LLM_TARGET"], env["CORE_TTS_TARGET"]) == (
        "127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053")
    # /started: a full core (503 on /health) must not be stopped by process-compose.
    assert core["readiness_probe"]["http_get"]["path"] == "/started"
    assert "voice_common.launch --prefix CORE opensips_ai_core" in core["command"]


def test_no_probe_starts_a_python(stack) -> None:
    """A Python per probe per second cost 29% of a 2-core machine: every process whose
    health a Python would check (gRPC services, core) is probed over HTTP."""
    for name in ("asr", "llm", "tts", "core", "bank", "adviser"):
        for kind in ("readiness_probe", "liveness_probe"):
            probe = stack["processes"][name].get(kind)
            if probe is None:
                assert kind == "readiness_probe" and name in SERVICES, (name, kind)
                continue
            assert set(probe) & {"exec", "http_get"} == {"http_get"}, (name, kind)
    ports = [stack["processes"][n]["liveness_probe"]["http_get"]["port"]
             for n in ("asr", "llm", "tts", "core", "bank", "adviser")]
    assert len(set(ports)) == len(ports)


def test_the_runner_probes_the_services_over_http() -> None:
    from devstack import config

    project = config.load(STACK)
    for name, (_prefix, _port, health_port) in SERVICES.items():
        # dev-status's HEALTH: the liveness probe (ready by log line, no readiness probe).
        kind, probe = config.health_probe(project.processes[name])
        assert kind == "liveness"
        assert probe is not None and probe.exec is None and probe.http_get is not None
        assert probe.http_get.port_number() == health_port


def test_every_dollar_in_the_file_is_meant_for_process_compose() -> None:
    """process-compose expands `$VAR` anywhere in the file from its own environment before
    parsing (a variable set only in a process's `environment:` comes out empty); `$$` is a
    literal `$` for the shell. The file may use `$` only as `$$`, so that what runs is what
    is written."""
    from devstack import config

    text = STACK.read_text()
    assert [line for line in text.splitlines() if "$" in line.replace("$$", "")] == []
    # And the runner reads it as process-compose does, whatever the environment holds.
    assert config.expand_env(text, {"ASR_PORT": "1", "HOME": "/x"}) == text.replace("$$", "$")


@pytest.mark.parametrize("name", ["core", "opensips", "bank", "adviser"])
def test_readiness_gives_a_slow_start_time_not_retries(stack, name: str) -> None:
    """In process-compose the readiness probe's failure_threshold-th failure in a row
    stops the process for good and skips its dependents, counting across hot-reload
    restarts: the threshold is how long a process may take to answer. A model takes
    20-30 s to load on a busy 2-core machine (tests/devenv/test_slow_start.py runs a
    30 s load with the LLM's settings); a service waiting for a syntax fix is not ready
    either. OpenSIPS starts in under a second."""
    probe = stack["processes"][name]["readiness_probe"]
    allowed_s = probe["initial_delay_seconds"] + probe["failure_threshold"] * probe[
        "period_seconds"]
    assert allowed_s >= (60 if name == "opensips" else 600)
    # ...and readiness is noticed within a second of being true.
    assert probe["period_seconds"] == 1


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_service_is_ready_when_it_logs_that_it_serves(stack, name: str) -> None:
    """process-compose v1.64.1 marks a process Ready at the first output line of a run
    that contains `ready_log_line` (src/app/process.go, handleOutput), at once: a probe
    saw the LLM up to its whole-second period late (5.0 s for a service serving at
    ~4.5 s). The line is voice_common.runtime's INFO line after the health turned
    SERVING (tests/common/test_runtime.py: not before), so no level above INFO may hide
    it; and without a readiness probe there is no failure count to stop a slow load."""
    process = stack["processes"][name]
    env = _env(process, stack)
    prefix = SERVICES[name][0]
    for var in ("LOG_LEVEL", f"{prefix}_LOG_LEVEL"):
        assert env.get(var, "INFO") in ("DEBUG", "INFO"), var
    assert process["ready_log_line"] == f"{name}-service SERVING (warm-up"
    assert "readiness_probe" not in process  # process-compose refuses both
