"""One call's conversation (`Call`) on in-process fakes of the services and the media:
turns, barge-in, replies prepared at a pause, the call's lifecycle.

The same paths run against the real services in test_call_with_services.py and
tests/e2e; here each runs in milliseconds and each failure is injected exactly.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.conversation import CallState
from opensips_ai_core.pipeline.history import TRUNCATED
from opensips_ai_core.pipeline.turn import TurnState
from tests.core.pipeline.fakes import FakeLlm, LlmPlan
from tests.core.pipeline.harness import GREETING, until
from voiceai.asr.v1 import asr_pb2

pytestmark = [pytest.mark.timeout(20)]


# ----------------------------------------------------------------------------- turns
async def test_greeting_then_a_reply_through_llm_and_tts(make_call) -> None:
    h = make_call()
    await h.greeted()
    assert h.tts.texts == [GREETING]
    assert h.call.history == [("assistant", GREETING)]
    await h.reply_to("what is my balance")
    turn = h.call.turn
    assert turn.state is TurnState.DONE
    assert h.llm.requests[-1] == [("system", h.call.bot.system_prompt),
                                  ("assistant", GREETING), ("user", "what is my balance")]
    assert turn.reply == "You said what is my balance. Anything else?"
    assert h.tts.texts[1:] == ["You said what is my balance.", "Anything else?"]
    assert h.call.history[-1] == ("assistant", turn.reply)
    assert len(h.media.queued) == 4 and h.call.bot_is_talking()
    assert len(h.call.turns_done) == 2


async def test_barge_in_cancels_a_reply_still_being_written(make_call) -> None:
    still_writing = asyncio.Event()
    h = make_call(llm=FakeLlm(plans=[LlmPlan(reply="Your balance is ten pounds. It was",
                                             block=still_writing)]))
    await h.greeted()
    await h.asr.stream.final("what is my balance")
    turn = h.call.turn
    await until(lambda: h.tts.texts[1:] == ["Your balance is ten pounds."], "the first sentence")
    assert turn.llm_active and turn.state is TurnState.PLAYING
    await h.asr.stream.partial("no wait")
    await turn.wait_for_work()
    assert turn.state is TurnState.INTERRUPTED and turn.task.cancelled()
    assert h.llm.cancelled == 1 and h.media.queued == [] and h.media.clears == 1
    assert h.call.history[-1] == ("assistant", "Your balance is ten pounds." + TRUNCATED)


async def test_barge_in_after_generation_marks_the_unheard_reply_cut_off(make_call) -> None:
    h = make_call()
    await h.greeted()
    await h.reply_to("what is my balance")
    assert h.media.is_speaking  # generated in full, still playing
    await h.asr.stream.partial("stop")
    assert h.media.queued == []
    assert h.call.history[-1][1].endswith(TRUNCATED)
    assert h.call.turn.state is TurnState.DONE


async def test_too_few_words_do_not_interrupt(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, barge_in_min_words=3))
    await h.greeted()
    await h.reply_to("what is my balance")
    await h.asr.stream.partial("uh huh")
    assert h.media.is_speaking and h.media.clears == 0
    await h.asr.stream.partial("no that is wrong")
    assert not h.media.is_speaking and h.media.clears == 1


async def test_speech_start_interrupts_when_no_words_are_required(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, barge_in_min_words=0))
    await h.greeted()
    await h.reply_to("what is my balance")
    await h.asr.stream.speech_start()
    assert not h.media.is_speaking and h.media.clears == 1


# ----------------------------------------------------------------------------- held replies
async def test_held_reply_is_committed_when_the_final_agrees(make_call) -> None:
    h = make_call()
    await h.greeted()
    await h.asr.stream.pause("what is my balance")
    prepared = h.call.prepared
    assert prepared is not None and prepared.state is TurnState.HELD
    await prepared.wait_for_work()
    assert prepared.held_audio and h.media.queued == []  # ready, nothing heard
    assert h.call.history == [("assistant", GREETING)]  # nothing recorded
    await h.asr.stream.final("What is my  balance")
    assert h.call.prepared is None and h.call.turn is prepared
    assert prepared.state is TurnState.DONE and len(h.media.queued) == 4
    assert h.call.history[-2:] == [("user", "What is my  balance"),
                                   ("assistant", prepared.reply)]
    assert len(h.llm.requests) == 1  # the prepared reply's, nothing more
    assert prepared.timer.asr_final is not None


async def test_held_reply_still_generating_plays_on_when_committed(make_call) -> None:
    more = asyncio.Event()
    h = make_call(llm=FakeLlm(plans=[LlmPlan(reply="Your balance is ten pounds. Goodbye now.",
                                             block=more)]))
    await h.greeted()
    await h.asr.stream.pause("balance")
    prepared = h.call.prepared
    await until(lambda: len(prepared.held_audio) == 2, "the held first sentence")
    await h.asr.stream.final("balance")
    assert prepared.state is TurnState.PLAYING and len(h.media.queued) == 2
    more.set()
    await prepared.wait_for_work()
    assert prepared.state is TurnState.DONE
    assert h.call.history[-1] == ("assistant", "Your balance is ten pounds. Goodbye now.")


async def test_held_reply_is_discarded_when_the_final_differs(make_call) -> None:
    h = make_call()
    await h.greeted()
    await h.asr.stream.pause("what is my balance")
    prepared = h.call.prepared
    await h.reply_to("i lost my card")
    assert prepared.state is TurnState.DISCARDED and h.call.turn is not prepared
    assert [t for r, t in h.call.history if r == "user"] == ["i lost my card"]
    assert "card" in h.call.history[-1][1]
    assert all(b"balance" not in chunk for chunk in h.media.queued)


async def test_held_reply_is_discarded_when_the_caller_speaks_on(make_call) -> None:
    h = make_call()
    await h.greeted()
    await h.asr.stream.pause("hello")
    first = h.call.prepared
    await h.asr.stream.partial("Hello")  # the same words: kept
    assert h.call.prepared is first
    await h.asr.stream.partial("hello i need help")
    assert h.call.prepared is None and first.state is TurnState.DISCARDED
    await h.asr.stream.pause("hello i need help")
    assert h.call.prepared is not None and h.call.prepared is not first
    assert h.call.history == [("assistant", GREETING)] and h.media.queued == []


async def test_nothing_is_prepared_when_turned_off(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, prepare_on_pause=False))
    await h.greeted()
    await h.asr.stream.pause("what is my balance")
    assert h.call.prepared is None and len(h.llm.requests) == 0


# ----------------------------------------------------------------------------- lifecycle
async def test_audio_goes_to_asr_and_gaps_are_filled_with_silence(make_call) -> None:
    h = make_call()
    await h.greeted()
    h.call.on_audio(np.full(160, 1000, np.int16))
    assert bytes(h.asr.stream.audio) == np.full(160, 1000, "<i2").tobytes()
    await until(lambda: len(h.asr.stream.audio) > 320, "silence for the recognizer")
    assert set(bytes(h.asr.stream.audio[320:])) == {0}


async def test_close_stops_everything_once(make_call) -> None:
    block = asyncio.Event()
    h = make_call(llm=FakeLlm(plans=[LlmPlan(reply="Let me see.", block=block)]))
    await h.greeted()
    await h.asr.stream.final("what is my balance")
    turn = h.call.turn
    await until(lambda: turn.llm_active, "the LLM request")
    await h.call.close("caller hung up")
    await h.call.close("again")
    assert turn.state is TurnState.INTERRUPTED and h.asr.stream.closed
    assert h.call.state is CallState.CLOSED
    h.call.on_audio(np.zeros(160, np.int16))
    h.call.caller_said("anyone there")
    assert h.call.turn is turn and len(h.asr.stream.audio) == 0


async def test_snapshot_describes_the_call(make_call) -> None:
    h = make_call()
    await h.greeted()
    await h.reply_to("what is my balance")
    snap = h.call.snapshot()
    assert snap["call_id"] == "fake-1" and snap["state"] == "active"
    assert snap["turns"] == 2 and snap["bot_talking"] is True
    assert snap["history"][-1] == {"role": "assistant",
                                   "content": "You said what is my balance. Anything else?"}


async def test_speech_end_is_the_asrs_audio_offset_on_the_arrival_clock(make_call) -> None:
    h = make_call()
    await h.greeted()
    h.asr.stream.epoch = time.perf_counter() - 2.0  # the stream's audio began 2 s ago
    await h.asr.stream.on_response(asr_pb2.RecognizeResponse(final=asr_pb2.Transcript(
        text="what is my balance", audio_end_s=1.5)))
    timer = h.call.turn.timer
    assert timer.speech_end == pytest.approx(h.asr.stream.epoch + 1.5)
    assert timer.speech_end < timer.asr_final
    await h.call.turn.wait_for_work()
    h.call.on_first_packet()
    assert timer.first_rtp is not None
    assert set(timer.breakdown_ms()) >= {"asr_final", "tts_first_audio", "first_rtp"}
