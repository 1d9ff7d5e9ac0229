"""TTS client: stream PCM16 chunks for a text at the call's sample rate; sentences said
before come from the core's cache (tts_cache.py) without asking the service."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from opensips_ai_core.grpc_clients.channel import open_channel, responses
from opensips_ai_core.grpc_clients.tts_cache import AudioCache
from voice_common import get_development_logger
from voiceai.tts.v1 import tts_pb2, tts_pb2_grpc

log = get_development_logger(__name__)


class TtsClient:
    def __init__(self, target: str, *, timeout_s: float = 20.0, cache_bytes: int = 0) -> None:
        self.target = target
        # 0: every sentence is synthesised by the service.
        self.cache = AudioCache(cache_bytes) if cache_bytes > 0 else None
        # One sentence's synthesis, waiting for a restarting service included: the
        # deadline of one attempt, and of all the pipeline's attempts together.
        self.timeout_s = timeout_s
        self.channel = open_channel(target)
        self.stub = tts_pb2_grpc.SynthesizerStub(self.channel)

    async def synthesize(self, text: str, *, sample_rate: int = 8000, voice: str = "",
                         call_id: str = "") -> AsyncIterator[bytes]:
        """Yield PCM16 audio at `sample_rate`. Closing the generator cancels the RPC. One
        attempt: a failure (`grpc.aio.AioRpcError`) is the caller's to retry."""
        key = (text, voice, sample_rate)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            log.debug("TTS of %s from the cache: %r", call_id, text)
            for audio in cached:
                yield audio
            return
        kept: list[bytes] = []
        request = tts_pb2.SynthesizeRequest(text=text, voice=voice, sample_rate_hz=sample_rate,
                                            call_id=call_id)
        # The generated stubs are untyped: name the response type here.
        calls: AsyncGenerator[tts_pb2.AudioChunk, None] = responses(
            self.stub.Synthesize(request, wait_for_ready=True, timeout=self.timeout_s))
        try:
            async for chunk in calls:
                if chunk.audio:
                    kept.append(chunk.audio)
                    yield chunk.audio
            # Complete: neither failed nor cancelled part-way.
            if self.cache is not None:
                self.cache.put(key, kept)
        except GeneratorExit:
            log.debug("TTS request of %s cancelled", call_id)
            raise
        finally:
            await calls.aclose()  # cancels the call if it is still running

    async def close(self) -> None:
        await self.channel.close()
