"""The core's TTS client against the real TTS service (Piper) on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from opensips_ai_core.grpc_clients.tts import TtsClient
from voice_testkit.procs import (
    base_env,
    free_port,
    health_status,
    python_module,
    running,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)


def test_a_sentence_sent_while_voices_load_is_spoken(tmp_path: Path) -> None:
    # A TTS restart mid-turn: both attempts were refused UNAVAILABLE ("voices are still
    # loading") 8 ms apart and the reply was lost. The request now waits for SERVING.
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = base_env(TTS_PORT=str(port), TTS_ENABLE_DEBUG="1", DEVELOPMENT_MODE="1")

    async def speak() -> bytes:
        client = TtsClient(target, timeout_s=120)
        try:
            return b"".join([pcm async for pcm in client.synthesize(
                "Hello, how can I help?", call_id="tts-warm-up")])
        finally:
            await client.close()

    with running(python_module("tts_service"), env, tmp_path / "tts.log") as proc:
        seen = wait_until(lambda: (s := health_status(target)) in ("NOT_SERVING", "SERVING")
                          and s, 60, message="the port answers")
        audio = asyncio.run(speak())
        log = proc.output()
    assert len(audio) > 8000 * 2 // 2, log  # more than half a second at 8 kHz
    # The port answers while the voices still load: the request was made then.
    assert seen == "NOT_SERVING"
    # The client makes one attempt (retries are the pipeline's, tests/core/pipeline/
    # test_retry_owner.py): the channel's client-side health checking holds it until the
    # service says SERVING, so the service never had to refuse it (a refusal reaching it
    # is shown in tests/common/test_runtime.py).
    assert "refused while warming up" not in log, log
