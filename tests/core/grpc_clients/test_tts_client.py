"""The core's TTS client against the real TTS service (Piper) on loopback."""

from __future__ import annotations

import asyncio
import logging
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


def test_a_sentence_sent_while_voices_load_is_spoken(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # A TTS restart mid-turn: both attempts were refused UNAVAILABLE ("voices are still
    # loading") 8 ms apart and the reply was lost. The client asks again until its deadline.
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

    caplog.set_level(logging.INFO, logger="opensips_ai_core.grpc_clients.channel")
    with running(python_module("tts_service"), env, tmp_path / "tts.log") as proc:
        seen = wait_until(lambda: (s := health_status(target)) in ("NOT_SERVING", "SERVING")
                          and s, 60, message="the port answers")
        audio = asyncio.run(speak())
        log = proc.output()
    assert len(audio) > 8000 * 2 // 2, log  # more than half a second at 8 kHz
    # The port answers while the voices still load: the request met the warm-up, was
    # refused UNAVAILABLE and asked again.
    assert seen == "NOT_SERVING"
    # The channel's client-side health checking holds the RPC until SERVING; one that
    # reaches the service anyway is refused UNAVAILABLE ("warming up") and asked again
    # (tests/common/test_runtime.py shows that refusal deterministically).
    assert "refused while warming up" not in log or "asking again" in caplog.text, caplog.text
