"""Request retries have one owner: the pipeline (`pipeline/retry.py`), not the gRPC clients.

A real gRPC server on 127.0.0.1 with the TTS contract and the standard health service
(SERVING) refuses the first Synthesize requests UNAVAILABLE, as a TTS still loading its
voices does. The real `TtsClient` makes one attempt per request and raises the refusal;
the conversation, which knows that nothing of the sentence was heard yet, asks again
with backoff and the greeting is spoken. Each refusal reaches the pipeline (its metric
counts it), so no second retry layer hides or multiplies attempts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig
from opensips_ai_core.grpc_clients.channel import HEALTH_SERVICE
from opensips_ai_core.grpc_clients.tts import TtsClient
from opensips_ai_core.pipeline.conversation import Call
from opensips_ai_core.pipeline.protocols import Services
from opensips_ai_core.pipeline.turn import TurnState
from opensips_ai_core.signalling.base import CallInfo
from tests.core.pipeline.fakes import FakeAsr, FakeLlm, FakeMedia
from voiceai.tts.v1 import tts_pb2, tts_pb2_grpc

pytestmark = [pytest.mark.timeout(60)]

GREETING = "Hello, this is Example Bank."
AUDIO = b"\x01\x00" * 4000  # 0.5 s at 8 kHz


class LoadingSynthesizer(tts_pb2_grpc.SynthesizerServicer):
    """Refuses the first `refusals` requests UNAVAILABLE, then answers with audio."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.attempts: list[str] = []

    async def Synthesize(
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[tts_pb2.AudioChunk]:
        self.attempts.append(request.text)
        if len(self.attempts) <= self.refusals:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "voices are still loading")
        yield tts_pb2.AudioChunk(audio=AUDIO)


@pytest.fixture
async def tts_server() -> AsyncIterator[tuple[str, LoadingSynthesizer]]:
    servicer = LoadingSynthesizer(refusals=2)
    server = grpc.aio.server()
    tts_pb2_grpc.add_SynthesizerServicer_to_server(servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)


def unavailable_count() -> float:
    return metrics.REGISTRY.get_sample_value(
        "voice_service_errors_total", {"service": "tts", "code": "UNAVAILABLE"}) or 0.0


async def test_the_client_makes_one_attempt_and_raises_the_refusal(tts_server) -> None:
    target, servicer = tts_server
    client = TtsClient(target, timeout_s=20.0)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _pcm in client.synthesize(GREETING, call_id="one-attempt"):
                pass
    finally:
        await client.close()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == "voices are still loading"
    assert servicer.attempts == [GREETING]


async def test_the_pipeline_retries_the_refused_sentence_and_speaks_it(tts_server) -> None:
    target, servicer = tts_server
    client = TtsClient(target, timeout_s=20.0)
    media = FakeMedia()
    call = Call(CallInfo("retry-owner", "sip:caller@test", "sip:ai@test", "sip"), media,
                Services(FakeAsr(), FakeLlm(), client), BotConfig(greeting=GREETING),
                _no_hangup)
    before = unavailable_count()
    try:
        call.start()
        greeting = call.turn
        await greeting.wait_for_work()
        assert greeting.state is TurnState.DONE
        assert b"".join(media.queued) == AUDIO
        # Three attempts in all, each one the pipeline's: both refusals reached it.
        assert servicer.attempts == [GREETING] * 3
        assert unavailable_count() - before == 2
        assert call.history == [("assistant", GREETING)]
    finally:
        await call.close("test over")
        await client.close()


async def _no_hangup(_call_id: str) -> None:
    return None
