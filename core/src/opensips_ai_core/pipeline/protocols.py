"""What the conversation needs of the world: the three AI services and the call's media.

The gRPC clients (`grpc_clients/`) and the RTP session (`media/session.py`) are the
real ones; tests give in-process fakes with the same shape. A service failure is a
`grpc.aio.AioRpcError`, as the real clients raise it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np

from opensips_ai_core.grpc_clients.llm import ChatItem, GenerationResult, ToolSpec
from voiceai.asr.v1 import asr_pb2

AsrHandler = Callable[[asr_pb2.RecognizeResponse], Awaitable[None]]
# The stream broke (it is being reopened): True to send the audio of the utterance in
# progress (everything since the last final) again on the new stream.
BreakHandler = Callable[[grpc.aio.AioRpcError], bool]


class RecognitionStream(Protocol):
    """One call's recognition stream: audio in, `RecognizeResponse`s to the handler."""

    # time.perf_counter() at which the stream's audio offset 0 arrived (None: no audio yet).
    epoch: float | None
    reconnects: int

    def start(self) -> None: ...
    def send(self, pcm16: bytes) -> None: ...
    async def close(self) -> None: ...


class SpeechRecognizer(Protocol):
    def session(self, call_id: str, on_response: AsrHandler, *, sample_rate: int = 8000,
                language: str = "", phrases: tuple[str, ...] = (),
                on_break: BreakHandler | None = None) -> RecognitionStream: ...


class LanguageModel(Protocol):
    # The deadline of one generation, waiting for a restart included (CORE_LLM_TIMEOUT_S).
    timeout_s: float

    def generate(self, messages: Sequence[ChatItem], *, call_id: str = "",
                 max_new_tokens: int = 0, temperature: float = 0.0,
                 result: GenerationResult | None = None,
                 tools: Sequence[ToolSpec] = ()) -> AsyncIterator[str]:
        """Text deltas (tool calls into `result`); closing the iterator early cancels it."""
        ...


class SpeechSynthesizer(Protocol):
    # The deadline of one sentence's synthesis, waiting for a restart included
    # (CORE_TTS_TIMEOUT_S).
    timeout_s: float

    def synthesize(self, text: str, *, sample_rate: int = 8000, voice: str = "",
                   call_id: str = "") -> AsyncIterator[bytes]:
        """PCM16 chunks at `sample_rate`; closing the iterator early cancels the RPC."""
        ...


@dataclass
class Services:
    asr: SpeechRecognizer
    llm: LanguageModel
    tts: SpeechSynthesizer


class MediaPort(Protocol):
    """What the conversation needs of the call's RTP session."""

    @property
    def is_speaking(self) -> bool: ...

    def enqueue(self, pcm16: np.ndarray | bytes) -> None: ...
    def clear(self) -> None: ...
    async def wait_idle(self) -> None: ...
