"""One call's pipeline (`Call`) with the real services, a real RTP session and a UDP phone."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest

from opensips_ai_core.config import BotConfig
from opensips_ai_core.grpc_clients.asr import AsrClient
from opensips_ai_core.grpc_clients.llm import LlmClient
from opensips_ai_core.grpc_clients.tts import TtsClient
from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.media.session import RtpSession
from opensips_ai_core.pipeline.conversation import Call
from opensips_ai_core.pipeline.history import TRUNCATED
from opensips_ai_core.pipeline.protocols import Services
from opensips_ai_core.signalling.base import CallInfo
from voice_testkit.stack import free_rtp_range, service
from voiceai.asr.v1 import asr_pb2

pytestmark = [pytest.mark.timeout(180)]


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def open_call(ai, llm_target: str, bot: BotConfig) -> AsyncIterator[tuple[Call, RtpSession]]:
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    ports = RtpPortAllocator(*free_rtp_range(10))
    calls: list[Call] = []

    def first_packet() -> None:  # the call is made after its media session
        calls[0].on_first_packet()

    media = await RtpSession.open("127.0.0.1", ports, on_audio=lambda _pcm: None,
                                  on_talkspurt_start=first_packet)
    media.configure("127.0.0.1", phone.getsockname()[1], "PCMU", 0, None)
    services = Services(AsrClient(ai.asr.target), LlmClient(llm_target), TtsClient(ai.tts.target))
    hangups: list[str] = []

    async def hangup(call_id: str) -> None:
        hangups.append(call_id)

    call = Call(CallInfo("pipeline-1", "sip:caller@test", "sip:ai@test", "sip"), media,
                services, bot, hangup)
    calls.append(call)
    try:
        yield call, media
    finally:
        await call.close("test over")
        await media.close()
        for client in (services.asr, services.llm, services.tts):
            await client.close()
        phone.close()


async def test_barge_in_cancels_a_reply_the_llm_is_still_writing(ai, tmp_path):
    # An LLM that writes until its token limit (512): the reply is still streaming when the
    # caller talks over it. The demo model is fast, so the barge-in comes right after the
    # first delta, as a caller's speech-start event would.
    cm = service("llm", tmp_path, VOICE_CACHE_DIR=str(ai.llm_cache), LLM_MODEL="demo", LLM_IGNORE_EOS="1",
                 LLM_ENABLE_DEBUG="1", DEVELOPMENT_MODE="1")
    slow_llm = await asyncio.to_thread(cm.__enter__)
    try:
        bot = BotConfig(greeting="Hi.", max_new_tokens=512)
        async with open_call(ai, slow_llm.target, bot) as (call, media):
            call.start()
            greeting = call.turn
            await wait_for(greeting.task.done, 30, "greeting")
            call.caller_said("what is my balance")
            turn = call.turn
            await wait_for(lambda: turn.timer.llm_first_token is not None, 30, "the first delta")
            assert turn.llm_active
            call.barge_in("test: caller speech")
            await asyncio.gather(turn.task, return_exceptions=True)
            assert turn.interrupted and turn.task.cancelled()
            assert not media.is_speaking
            assert call.history[-1][0] == "user" or call.history[-1][1].endswith(TRUNCATED)
        log_path = slow_llm.proc.log_path
        await wait_for(lambda: "generation cancelled (pipeline-1)" in log_path.read_text(),
                       10, "the LLM service to see the cancellation")
        line = next(x for x in log_path.read_text().splitlines()
                    if "generation cancelled (pipeline-1)" in x)
        assert "after" in line and "512 tokens" not in line, line
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)


async def test_tts_failure_is_survived_and_the_next_turn_is_spoken(ai):
    """An over-long sentence is refused by TTS (INVALID_ARGUMENT): the call goes on."""
    bot = BotConfig(greeting="x" * 2500)  # the TTS contract's limit is 2000 characters
    async with open_call(ai, ai.llm.target, bot) as (call, media):
        call.start()
        greeting = call.turn
        await wait_for(greeting.task.done, 30, "greeting")
        assert not media.is_speaking
        call.caller_said("what is my balance")
        await wait_for(lambda: media.is_speaking, 30, "the reply's audio")
        assert call.state == "active"


def pause(text: str) -> asr_pb2.RecognizeResponse:
    return asr_pb2.RecognizeResponse(speech=asr_pb2.SpeechEvent(
        kind=asr_pb2.SpeechEvent.PAUSE, audio_offset_s=1.2, text=text), engine="pocketsphinx")


def final(text: str) -> asr_pb2.RecognizeResponse:
    return asr_pb2.RecognizeResponse(final=asr_pb2.Transcript(
        text=text, audio_start_s=0.3, audio_end_s=1.0), engine="pocketsphinx")


def partial(text: str) -> asr_pb2.RecognizeResponse:
    return asr_pb2.RecognizeResponse(partial=asr_pb2.Transcript(text=text), engine="pocketsphinx")


async def greeted(call: Call) -> None:
    call.start()
    greeting = call.turn
    await wait_for(greeting.task.done, 30, "greeting")
    await asyncio.wait_for(call.media.wait_idle(), 30)  # and heard to its end


async def test_reply_prepared_at_a_pause_is_held_then_played_when_the_final_agrees(ai):
    async with open_call(ai, ai.llm.target, BotConfig(greeting="Hi.")) as (call, media):
        await greeted(call)
        history = list(call.history)
        await call.recognition.on_response(pause("what is my balance"))
        prepared = call.prepared
        assert prepared is not None and prepared.held
        # LLM and TTS run to the end, but nothing is heard or recorded before the final.
        await wait_for(prepared.task.done, 30, "the prepared reply")
        assert prepared.held_audio and not media.is_speaking
        assert call.history == history
        await call.recognition.on_response(final("What is my  balance"))
        assert call.prepared is None and call.turn is prepared and not prepared.held
        assert media.is_speaking
        assert call.history[-2:] == [("user", "What is my  balance"),
                                     ("assistant", prepared.reply)]
        assert "balance" in prepared.reply.lower()
        timer = prepared.timer
        assert timer.llm_first_token < timer.asr_final  # it was ready before the final
        await wait_for(lambda: timer.first_rtp is not None, 10, "the first RTP packet")
        assert timer.first_rtp >= timer.asr_final


async def test_prepared_reply_is_dropped_when_the_final_differs(ai):
    async with open_call(ai, ai.llm.target, BotConfig(greeting="Hi.")) as (call, _media):
        await greeted(call)
        await call.recognition.on_response(pause("what is my balance"))
        prepared = call.prepared
        await call.recognition.on_response(final("i lost my card"))
        await asyncio.gather(prepared.task, return_exceptions=True)
        assert prepared.discarded and call.turn is not prepared
        await wait_for(call.turn.task.done, 30, "the reply to the final")
        users = [text for role, text in call.history if role == "user"]
        assert users == ["i lost my card"]
        assert "balance" not in call.history[-1][1].lower()
        assert "card" in call.history[-1][1].lower()


async def test_prepared_reply_is_dropped_when_the_caller_speaks_on(ai):
    async with open_call(ai, ai.llm.target, BotConfig(greeting="Hi.")) as (call, media):
        await greeted(call)
        await call.recognition.on_response(pause("hello"))
        first = call.prepared
        await call.recognition.on_response(partial("hello"))  # the same words again: kept
        assert call.prepared is first
        await call.recognition.on_response(partial("hello i need help"))
        assert call.prepared is None and first.discarded
        await call.recognition.on_response(pause("hello i need help"))
        assert call.prepared is not None and call.prepared is not first
        await asyncio.gather(first.task, return_exceptions=True)
        assert (not media.is_speaking and first.held_audio == []) or not media.is_speaking
        assert [role for role, _ in call.history] == ["assistant"]  # the greeting only
