"""Service addresses: one replica, a list of replicas, or a gRPC target (CORE_*_TARGET)."""

from __future__ import annotations

import json
import subprocess

import pytest
from pydantic import ValidationError

from opensips_ai_core.config import CoreSettings
from opensips_ai_core.grpc_clients.channel import (
    HEALTH_SERVICE,
    TargetError,
    grpc_target,
    service_config,
)
from voice_testkit.procs import base_env, python_module


@pytest.mark.parametrize(("value", "target"), [
    ("127.0.0.1:50051", "127.0.0.1:50051"),
    ("asr.voice.svc.cluster.local:50051", "asr.voice.svc.cluster.local:50051"),
    ("[::1]:50051", "[::1]:50051"),
    ("10.0.0.5:50051,10.0.0.6:50052", "ipv4:10.0.0.5:50051,10.0.0.6:50052"),
    (" 10.0.0.5:50051 , 10.0.0.6:50051 ", "ipv4:10.0.0.5:50051,10.0.0.6:50051"),
    ("[::1]:1,[fd00::2]:2", "ipv6:[::1]:1,[fd00::2]:2"),
    ("dns:///asr.voice.svc.cluster.local:50051", "dns:///asr.voice.svc.cluster.local:50051"),
    ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
    ("unix:/run/asr.sock", "unix:/run/asr.sock"),
])
def test_service_addresses_become_grpc_targets(value: str, target: str) -> None:
    assert grpc_target(value) == target
    assert grpc_target(target) == target  # already a target: unchanged


@pytest.mark.parametrize(("value", "problem"), [
    ("", "empty"),
    ("127.0.0.1", "not host:port"),
    ("127.0.0.1:0", "not host:port"),
    ("127.0.0.1:70000", "not host:port"),
    ("127.0.0.1:1,", "an empty entry"),
    ("asr-a:50051,asr-b:50051", "IP addresses only, not asr-a, asr-b"),
    ("127.0.0.1:1,[::1]:2", "not both"),
])
def test_bad_addresses_are_refused_with_the_reason(value: str, problem: str) -> None:
    with pytest.raises(TargetError, match=problem):
        grpc_target(value)


def test_core_settings_store_the_grpc_target_and_name_a_bad_variable(monkeypatch) -> None:
    monkeypatch.setenv("CORE_ASR_TARGET", "127.0.0.1:50051,127.0.0.1:50061")
    monkeypatch.setenv("CORE_TTS_TARGET", "dns:///tts:50053")
    settings = CoreSettings()
    assert settings.asr_target == "ipv4:127.0.0.1:50051,127.0.0.1:50061"
    assert settings.llm_target == "127.0.0.1:50052"
    assert settings.tts_target == "dns:///tts:50053"
    monkeypatch.setenv("CORE_LLM_TARGET", "llm-a:50052,llm-b:50052")
    with pytest.raises(ValidationError, match="llm_target"):
        CoreSettings()


def test_service_config_balances_round_robin_and_checks_health() -> None:
    config = json.loads(service_config())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": HEALTH_SERVICE}


def test_core_with_a_list_of_names_stops_at_start_with_one_clear_line() -> None:
    """The real entry point: exit 2 and the variable named, nothing started."""
    env = base_env(CORE_ASR_TARGET="asr-a:50051,asr-b:50051", CORE_HTTP_PORT="0",
                   CORE_SIP_PORT="0")
    result = subprocess.run(python_module("opensips_ai_core"), env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "CORE_ASR_TARGET='asr-a:50051,asr-b:50051'" in line
    assert "a list takes IP addresses only" in line
