"""Fixtures for the LLM service: the demo model built once per session, real servers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from voice_testkit.procs import (
    ROOT,
    Proc,
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
)
from voiceai.llm.v1 import llm_pb2, llm_pb2_grpc

SERVICE = "voiceai.llm.v1.LanguageModel"
DIALOGUE = ROOT / "services/llm-service/src/llm_service/demo/bank_dialogue.json"
Role = llm_pb2.ChatMessage


@dataclass
class DemoBuild:
    cache_dir: Path  # what VOICE_CACHE_DIR points at
    model_dir: Path
    build_log: str


@dataclass
class LlmServer:
    target: str
    proc: Proc
    stub: llm_pb2_grpc.LanguageModelStub


def load_dialogue() -> list[dict]:
    return json.loads(DIALOGUE.read_text())["intents"]


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> DemoBuild:
    cache = tmp_path_factory.mktemp("llm-cache")
    result = subprocess.run(
        python_module("llm_service.demo_model", "build"), env=base_env(VOICE_CACHE_DIR=str(cache)),
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    model_dir = Path(result.stdout.strip().splitlines()[-1])
    assert model_dir.parent == cache and model_dir.name.startswith("llm-demo-")
    return DemoBuild(cache, model_dir, result.stderr)


def start_server(tmp_path_factory: pytest.TempPathFactory, build: DemoBuild, name: str,
                 **env: str) -> Iterator[LlmServer]:
    port = free_port()
    target = f"127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp(f"llm-{name}") / "server.log"
    # LLM_ENABLE_DEBUG=1: as the dev stack (process-compose.yaml) runs it; the demo model
    # (its replies are exact) unless a test names another; a test may override either.
    environment = base_env(LLM_PORT=str(port), VOICE_CACHE_DIR=str(build.cache_dir),
                           **{"LLM_ENABLE_DEBUG": "1", "LLM_MODEL": "demo", **env})
    with running(python_module("llm_service"), environment, log_path) as proc:
        wait_serving(target, proc, timeout=120, service=SERVICE)
        channel = grpc.insecure_channel(target)
        try:
            yield LlmServer(target, proc, llm_pb2_grpc.LanguageModelStub(channel))
        finally:
            channel.close()


def request(question: str, *, history: bool = True, call_id: str = "",
            **params: object) -> llm_pb2.GenerateRequest:
    """What the core sends: a system prompt, earlier turns, then the caller's utterance."""
    messages = []
    if history:
        messages += [
            Role(role=Role.SYSTEM, content="You are the phone assistant of Example Bank. "
                 "Answer in one or two short sentences."),
            Role(role=Role.ASSISTANT, content="Hello, thank you for calling Example Bank."),
            Role(role=Role.USER, content="hi there"),
            Role(role=Role.ASSISTANT, content="How can I help you today?"),
        ]
    messages.append(Role(role=Role.USER, content=question))
    return llm_pb2.GenerateRequest(messages=messages, call_id=call_id,
                                   params=llm_pb2.GenerationParams(**params))


def collect(stub: llm_pb2_grpc.LanguageModelStub, req: llm_pb2.GenerateRequest,
            timeout: float = 60.0) -> tuple[list[str], llm_pb2.GenerationTimings]:
    deltas: list[str] = []
    done = None
    for response in stub.Generate(req, timeout=timeout):
        assert done is None, "nothing may follow `done`"
        if response.HasField("delta"):
            deltas.append(response.delta)
        else:
            done = response.done
    assert done is not None, "the stream must end with `done`"
    return deltas, done
