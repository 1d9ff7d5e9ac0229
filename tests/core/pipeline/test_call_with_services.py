"""One call's pipeline (`Call`) with the real services, a real RTP session and a UDP phone."""

from __future__ import annotations

import asyncio

import pytest

from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.conversation import Call
from opensips_ai_core.pipeline.history import TRUNCATED
from tests.core.pipeline.harness import until
from tests.core.pipeline.live_call import open_call
from voice_testkit.stack import service
from voiceai.asr.v1 import asr_pb2

pytestmark = [pytest.mark.timeout(180)]


async def test_barge_in_cancels_a_reply_the_llm_is_still_writing(ai, tmp_path):
    # An LLM that writes until its token limit (512): the reply is still streaming when the
    # caller talks over it. The demo model is fast, so the barge-in comes right after the
    # first delta, as a caller's speech-start event would.
    cm = service("llm", tmp_path, VOICE_CACHE_DIR=str(ai.llm_cache), LLM_MODEL="demo", LLM_IGNORE_EOS="1",
                 LLM_ENABLE_DEBUG="1", DEVELOPMENT_MODE="1")
    slow_llm = await asyncio.to_thread(cm.__enter__)
    try:
        bot = BotConfig(greeting="Hi.", max_new_tokens=512)
        async with open_call(ai, bot, llm_target=slow_llm.target) as (call, media):
            call.start()
            greeting = call.turn
            await until(lambda: greeting.ended, "greeting", 30)
            call.caller_said("what is my balance")
            turn = call.turn
            await until(lambda: turn.timer.llm_first_token is not None, "the first delta", 30)
            assert turn.llm_active
            call.barge_in("test: caller speech")
            await asyncio.gather(turn.task, return_exceptions=True)
            assert turn.interrupted and turn.task.cancelled()
            assert not media.is_speaking
            assert call.history[-1][0] == "user" or call.history[-1][1].endswith(TRUNCATED)
        log_path = slow_llm.proc.log_path
        await until(lambda: "generation cancelled (pipeline-1)" in log_path.read_text(),
                    "the LLM service to see the cancellation", 30)
        line = next(x for x in log_path.read_text().splitlines()
                    if "generation cancelled (pipeline-1)" in x)
        assert "after" in line and "512 tokens" not in line, line
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)


async def test_tts_failure_is_survived_and_the_next_turn_is_spoken(ai):
    """An over-long sentence is refused by TTS (INVALID_ARGUMENT): the call goes on."""
    bot = BotConfig(greeting="x" * 2500)  # the TTS contract's limit is 2000 characters
    async with open_call(ai, bot) as (call, media):
        call.start()
        greeting = call.turn
        await until(lambda: greeting.ended, "greeting", 30)
        assert not media.is_speaking
        call.caller_said("what is my balance")
        await until(lambda: media.is_speaking, "the reply's audio", 30)
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
    await until(lambda: greeting.ended, "greeting", 30)
    await asyncio.wait_for(call.media.wait_idle(), 30)  # and heard to its end


async def test_reply_prepared_at_a_pause_is_held_then_played_when_the_final_agrees(ai):
    async with open_call(ai, BotConfig(greeting="Hi.")) as (call, media):
        await greeted(call)
        history = list(call.history)
        await call.recognition.on_response(pause("what is my balance"))
        prepared = call.prepared
        assert prepared is not None and prepared.held
        # LLM and TTS run to the end, but nothing is heard or recorded before the final.
        await until(prepared.task.done, "the prepared reply", 30)
        assert prepared.held_audio and not media.is_speaking
        assert call.history == history
        await call.recognition.on_response(final("What is my  balance"))
        assert call.prepared is None and call.turn is prepared and not prepared.held
        assert media.is_speaking
        # Its work had ended; the turn ends (its reply into the history) once the task's
        # done callback has run, which may be just after the commit.
        await until(lambda: prepared.ended, "the committed reply's end", 10)
        assert call.history[-2:] == [("user", "What is my  balance"),
                                     ("assistant", prepared.reply)]
        assert "balance" in prepared.reply.lower()
        timer = prepared.timer
        assert timer.llm_first_token < timer.asr_final  # it was ready before the final
        await until(lambda: timer.first_rtp is not None, "the first RTP packet", 10)
        assert timer.first_rtp >= timer.asr_final


async def test_prepared_reply_is_dropped_when_the_final_differs(ai):
    async with open_call(ai, BotConfig(greeting="Hi.")) as (call, _media):
        await greeted(call)
        await call.recognition.on_response(pause("what is my balance"))
        prepared = call.prepared
        await call.recognition.on_response(final("i lost my card"))
        await asyncio.gather(prepared.task, return_exceptions=True)
        assert prepared.discarded and call.turn is not prepared
        await until(lambda: call.turn.ended, "the reply to the final", 30)
        users = [text for role, text in call.history if role == "user"]
        assert users == ["i lost my card"]
        assert "balance" not in call.history[-1][1].lower()
        assert "card" in call.history[-1][1].lower()


async def test_prepared_reply_is_dropped_when_the_caller_speaks_on(ai):
    async with open_call(ai, BotConfig(greeting="Hi.")) as (call, media):
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
