"""The core's LLM client against the real LLM service (demo model) on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from opensips_ai_core.grpc_clients.llm import GenerationResult, LlmClient
from voice_testkit.procs import (
    base_env,
    free_port,
    health_status,
    python_module,
    running,
    wait_until,
)
from voice_testkit.stack import build_demo_llm

pytestmark = pytest.mark.timeout(300)


def test_a_request_during_warm_up_waits_for_the_answer(tmp_path: Path) -> None:
    # Regression: right after a (re)start the service took requests before its model was
    # loaded: "prompt rendering failed: 'NoneType' object has no attribute 'encode'" came
    # back INVALID_ARGUMENT and the caller got the apology. Now it answers UNAVAILABLE
    # until SERVING, and the request waits for SERVING.
    cache = tmp_path / "cache"
    build_demo_llm(cache)
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = base_env(LLM_PORT=str(port), VOICE_CACHE_DIR=str(cache), LLM_ENABLE_DEBUG="1",
                   DEVELOPMENT_MODE="1", LOG_LEVEL="DEBUG")

    async def ask() -> tuple[str, GenerationResult]:
        client = LlmClient(target, timeout_s=240)
        try:
            result = GenerationResult()
            text = "".join([d async for d in client.generate(
                [("user", "what are your opening hours")], call_id="warm-up-test",
                result=result)])
            return text, result
        finally:
            await client.close()

    with running(python_module("llm_service"), env, tmp_path / "llm.log") as proc:
        # Sent as soon as the port answers, while the model is still loading.
        seen = wait_until(lambda: (s := health_status(target)) in ("NOT_SERVING", "SERVING")
                          and s, 60, message="the port answers")
        text, result = asyncio.run(ask())
        log = proc.output()
    assert text.strip(), log
    assert result.timings is not None
    assert "prompt rendering failed" not in log
    # The port answered before the model was loaded, and the request was made then. The
    # client makes one attempt (retries are the pipeline's, tests/core/pipeline/
    # test_retry_owner.py): the channel's client-side health checking holds it until the
    # service says SERVING, so the service never had to refuse it (a refusal reaching it
    # is shown in tests/common/test_runtime.py).
    assert seen == "NOT_SERVING"
    assert "refused while warming up" not in log, log
