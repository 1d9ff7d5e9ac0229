"""A small synchronous client for the TTS service, for tests that need speech.

    from voice_testkit.tts_client import synthesize
    pcm = synthesize("127.0.0.1:50053", "Hello there.", 16000)   # PCM16 LE mono bytes

`synthesize_chunks` keeps each AudioChunk with the monotonic time it arrived.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from voiceai.tts.v1 import tts_pb2, tts_pb2_grpc

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ReceivedChunk:
    chunk: tts_pb2.AudioChunk
    received_at: float          # time.monotonic() when the client got it


def stream(target: str, text: str, sample_rate_hz: int = 16000, *, voice: str = "",
           call_id: str = "", timeout: float = DEFAULT_TIMEOUT_S
           ) -> Iterator[ReceivedChunk]:
    """Yield chunks as they arrive; closing the iterator early cancels the RPC."""
    with grpc.insecure_channel(target) as channel:
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        request = tts_pb2.SynthesizeRequest(text=text, voice=voice,
                                            sample_rate_hz=sample_rate_hz, call_id=call_id)
        call = stub.Synthesize(request, timeout=timeout)
        try:
            for chunk in call:
                yield ReceivedChunk(chunk, time.monotonic())
        finally:
            call.cancel()


def synthesize_chunks(target: str, text: str, sample_rate_hz: int = 16000, *,
                      voice: str = "", call_id: str = "", timeout: float = DEFAULT_TIMEOUT_S
                      ) -> list[ReceivedChunk]:
    return list(stream(target, text, sample_rate_hz, voice=voice, call_id=call_id,
                       timeout=timeout))


def synthesize(target: str, text: str, sample_rate_hz: int = 16000, *, voice: str = "",
               timeout: float = DEFAULT_TIMEOUT_S) -> bytes:
    """The whole utterance as PCM16 little-endian mono at `sample_rate_hz` (0: native)."""
    chunks = stream(target, text, sample_rate_hz, voice=voice, timeout=timeout)
    return b"".join(r.chunk.audio for r in chunks)


def list_voices(target: str, timeout: float = 10.0) -> list[tts_pb2.Voice]:
    with grpc.insecure_channel(target) as channel:
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        return list(stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=timeout).voices)


def pcm_rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0


def pcm_seconds(pcm: bytes, sample_rate_hz: int) -> float:
    return len(pcm) / 2 / sample_rate_hz
