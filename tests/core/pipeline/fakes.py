"""In-process stand-ins for the ASR/LLM/TTS clients and the RTP session, for pipeline tests.

They have the shapes of `opensips_ai_core.pipeline.protocols` and fail the way the real
clients do (`grpc.aio.AioRpcError` with the services' status codes and details). The
LLM fake checks each request with the LLM service's own validation
(`llm_service.validation`), so a request the real service would refuse is refused here
with the same INVALID_ARGUMENT message. The real services are in
test_call_with_services.py and tests/e2e; these make the conversation's logic testable
in milliseconds, and its failures reproducible.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from llm_service.validation import InvalidRequestError, validate_messages, validate_tools
from opensips_ai_core.grpc_clients.llm import (
    ChatItem,
    GenerationResult,
    ToolCall,
    ToolSpec,
    build_request,
)
from opensips_ai_core.pipeline.protocols import AsrHandler, BreakHandler, Services
from voiceai.asr.v1 import asr_pb2


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


# ------------------------------------------------------------------------- media
class FakeMedia:
    """The RTP session's outbound queue. With `autoplay` audio is heard as soon as it is
    queued; without, it stays queued (the bot is speaking) until `play_out()`."""

    def __init__(self, autoplay: bool = False) -> None:
        self.autoplay = autoplay
        self.queued: list[bytes] = []
        self.played: list[bytes] = []
        self.clears = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def is_speaking(self) -> bool:
        return bool(self.queued)

    def enqueue(self, pcm16: np.ndarray | bytes) -> None:
        data = pcm16 if isinstance(pcm16, bytes) else np.asarray(pcm16, "<i2").tobytes()
        if self.autoplay:
            self.played.append(data)
            return
        self.queued.append(data)
        self._idle.clear()

    def play_out(self) -> None:
        self.played.extend(self.queued)
        self.queued.clear()
        self._idle.set()

    def clear(self) -> None:
        self.clears += 1
        self.queued.clear()
        self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


# ------------------------------------------------------------------------- ASR
class FakeAsrStream:
    """The call's recognition stream as `grpc_clients.asr.AsrSession` behaves: `fail()`
    breaks it with a real `AioRpcError`; the break handler decides whether the audio
    sent since the last final goes again on the reopened stream (`replayed`)."""

    def __init__(self, call_id: str, on_response: AsrHandler,
                 on_break: BreakHandler | None = None) -> None:
        self.call_id = call_id
        self.on_response = on_response
        self.on_break = on_break
        self.replayed: list[bytes] = []
        self._final_at = 0  # len(audio) at the last final
        self.epoch: float | None = None
        self.reconnects = 0
        self.audio = bytearray()
        self.started = False
        self.closed = False

    def start(self) -> None:
        self.started = True

    def send(self, pcm16: bytes) -> None:
        if not self.closed:
            self.audio += pcm16

    async def close(self) -> None:
        self.closed = True

    # What the recognizer says, as the real stream hands it over.
    def fail(self, error: grpc.aio.AioRpcError) -> None:
        """The stream breaks and is reopened at once."""
        self.reconnects += 1
        if self.on_break is not None and self.on_break(error):
            self.replayed.append(bytes(self.audio[self._final_at:]))
        self._final_at = len(self.audio)

    async def final(self, text: str) -> None:
        self._final_at = len(self.audio)
        await self.on_response(asr_pb2.RecognizeResponse(final=asr_pb2.Transcript(text=text)))

    async def partial(self, text: str) -> None:
        await self.on_response(asr_pb2.RecognizeResponse(
            partial=asr_pb2.Transcript(text=text)))

    async def pause(self, text: str) -> None:
        await self.on_response(asr_pb2.RecognizeResponse(speech=asr_pb2.SpeechEvent(
            kind=asr_pb2.SpeechEvent.PAUSE, text=text)))

    async def speech_start(self) -> None:
        await self.on_response(asr_pb2.RecognizeResponse(speech=asr_pb2.SpeechEvent(
            kind=asr_pb2.SpeechEvent.SPEECH_START)))


class FakeAsr:
    def __init__(self) -> None:
        self.streams: list[FakeAsrStream] = []

    def session(self, call_id: str, on_response: AsrHandler, *, sample_rate: int = 8000,
                language: str = "", phrases: tuple[str, ...] = (),
                on_break: BreakHandler | None = None) -> FakeAsrStream:
        stream = FakeAsrStream(call_id, on_response, on_break)
        self.streams.append(stream)
        return stream

    @property
    def stream(self) -> FakeAsrStream:
        return self.streams[-1]


# ------------------------------------------------------------------------- LLM
@dataclass
class LlmPlan:
    """One generation: `error` before any delta, else `reply`'s words as deltas (and
    `error_after` once they are out); `block` waits (until cancelled) before the rest."""

    reply: str = ""
    error: grpc.aio.AioRpcError | None = None
    error_after: grpc.aio.AioRpcError | None = None
    block: asyncio.Event | None = None
    tool_call: ToolCall | None = None  # called after `reply`'s words


def echo_reply(messages: Sequence[ChatItem]) -> str:
    item = messages[-1]
    last = item.result_json if not isinstance(item, tuple) else item[1]
    if "goodbye" in last.lower():
        return "Thank you for calling. Goodbye!"
    return f"You said {last[:40]}. Anything else?"


@dataclass
class FakeLlm:
    timeout_s: float = 5.0
    plans: list[LlmPlan] = field(default_factory=list)
    default: Callable[[Sequence[ChatItem]], str] = echo_reply
    requests: list[list[ChatItem]] = field(default_factory=list)
    offered: list[list[str]] = field(default_factory=list)  # tool names, per request
    refusals: list[str] = field(default_factory=list)
    cancelled: int = 0

    async def generate(self, messages: Sequence[ChatItem], *, call_id: str = "",
                       max_new_tokens: int = 0, temperature: float = 0.0,
                       result: GenerationResult | None = None,
                       tools: Sequence[ToolSpec] = ()) -> AsyncIterator[str]:
        self.requests.append(list(messages))
        self.offered.append([tool.name for tool in tools])
        request = build_request(messages, tools=tools)
        try:
            validate_messages(request)
            validate_tools(request)
        except InvalidRequestError as err:  # as the service answers it
            self.refusals.append(str(err))
            raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
        plan = self.plans.pop(0) if self.plans else LlmPlan(reply=self.default(messages))
        if plan.error is not None:
            raise plan.error
        try:
            words = plan.reply.split(" ") if plan.reply or plan.tool_call is None else []
            for index, word in enumerate(words):
                delta = word if index == 0 else " " + word
                if result is not None:
                    result.text += delta
                    result.deltas += 1
                yield delta
                await asyncio.sleep(0)
            if plan.tool_call is not None and result is not None:
                result.tool_calls.append(plan.tool_call)
            if plan.block is not None:
                await plan.block.wait()
            if plan.error_after is not None:
                raise plan.error_after
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


# ------------------------------------------------------------------------- TTS
@dataclass
class FakeTts:
    """20 ms of audio per character (in two chunks); `failures` are raised first, one per
    attempt; `block` holds synthesis (until cancelled) after the first chunk."""

    timeout_s: float = 5.0
    failures: list[grpc.aio.AioRpcError] = field(default_factory=list)
    fail_after_first_chunk: grpc.aio.AioRpcError | None = None
    block: asyncio.Event | None = None
    texts: list[str] = field(default_factory=list)
    attempts: list[tuple[float, str]] = field(default_factory=list)  # (loop time, text)
    cancelled: int = 0

    async def synthesize(self, text: str, *, sample_rate: int = 8000, voice: str = "",
                         call_id: str = "") -> AsyncIterator[bytes]:
        self.attempts.append((asyncio.get_running_loop().time(), text))
        if self.failures:
            raise self.failures.pop(0)
        self.texts.append(text)
        audio = bytes(320 * len(text))
        try:
            yield audio[: len(audio) // 2]
            if self.fail_after_first_chunk is not None:
                error, self.fail_after_first_chunk = self.fail_after_first_chunk, None
                raise error
            if self.block is not None:
                await self.block.wait()
            yield audio[len(audio) // 2:]
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


def fake_services(llm: FakeLlm | None = None, tts: FakeTts | None = None,
                  asr: FakeAsr | None = None) -> Services:
    return Services(asr or FakeAsr(), llm or FakeLlm(), tts or FakeTts())
