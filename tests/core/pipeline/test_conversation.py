"""One call's conversation (`Call`) on in-process fakes of the services and the media.

The same paths run against the real services in test_call_with_services.py and
tests/e2e; here each runs in milliseconds and each failure is injected exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.conversation import Call, CallState
from opensips_ai_core.pipeline.dtmf import MAX_DIGITS
from opensips_ai_core.pipeline.history import MAX_CONTENT_CHARS, MAX_MESSAGES, TRUNCATED
from opensips_ai_core.pipeline.turn import TurnState
from opensips_ai_core.signalling.base import CallInfo
from tests.core.pipeline.fakes import (
    FakeAsr,
    FakeLlm,
    FakeMedia,
    FakeTts,
    LlmPlan,
    fake_services,
    rpc_error,
)
from voiceai.asr.v1 import asr_pb2

pytestmark = [pytest.mark.timeout(20)]

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
GREETING = "Hello, this is the test bank."


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


@dataclass
class Harness:
    call: Call
    media: FakeMedia
    asr: FakeAsr
    llm: FakeLlm
    tts: FakeTts
    hangups: list[str]

    async def greeted(self) -> None:
        self.call.start()
        await self.call.turn.wait_for_work()
        self.media.play_out()

    async def reply_to(self, text: str) -> None:
        """The caller says `text`; wait for the reply's generation to end."""
        await self.asr.stream.final(text)
        await self.call.turn.wait_for_work()


@pytest.fixture
async def make_call() -> AsyncIterator[Callable[..., Harness]]:
    calls: list[Call] = []

    def make(bot: BotConfig | None = None, *, llm: FakeLlm | None = None,
             tts: FakeTts | None = None, autoplay: bool = False) -> Harness:
        media, asr = FakeMedia(autoplay=autoplay), FakeAsr()
        services = fake_services(llm or FakeLlm(), tts or FakeTts(), asr)
        hangups: list[str] = []

        async def hangup(call_id: str) -> None:
            hangups.append(call_id)

        call = Call(CallInfo("fake-1", "sip:caller@test", "sip:ai@test", "sip"), media,
                    services, bot or BotConfig(greeting=GREETING), hangup)
        calls.append(call)
        return Harness(call, media, asr, services.llm, services.tts, hangups)

    yield make
    for call in calls:
        await call.close("test over")


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


# ----------------------------------------------------------------------------- LLM failures
async def test_llm_restarting_is_retried_until_it_answers(make_call) -> None:
    restarting = rpc_error(UNAVAILABLE, "failed to connect to all addresses")
    h = make_call(llm=FakeLlm(plans=[LlmPlan(error=restarting), LlmPlan(error=restarting),
                                     LlmPlan(reply="Your balance is ten pounds.")]))
    await h.greeted()
    await h.reply_to("what is my balance")
    assert len(h.llm.requests) == 3
    assert h.call.history[-1] == ("assistant", "Your balance is ten pounds.")


async def test_llm_down_past_its_deadline_gets_the_apology(make_call) -> None:
    down = [LlmPlan(error=rpc_error(UNAVAILABLE, "connection refused")) for _ in range(50)]
    bot = BotConfig(greeting=GREETING)
    h = make_call(bot, llm=FakeLlm(timeout_s=0.5, plans=down))
    await h.greeted()
    await h.reply_to("what is my balance")
    assert 2 < len(h.llm.requests) < 50  # retried with backoff, then given up
    assert h.call.turn.reply == bot.apology and h.tts.texts[-1] == bot.apology
    assert h.call.history[-1] == ("assistant", bot.apology)
    assert h.call.state is CallState.ACTIVE


async def test_llm_refusal_is_not_retried(make_call) -> None:
    bot = BotConfig(greeting=GREETING)
    h = make_call(bot, llm=FakeLlm(plans=[LlmPlan(
        error=rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad request"))]))
    await h.greeted()
    await h.reply_to("what is my balance")
    assert len(h.llm.requests) == 1 and h.call.turn.reply == bot.apology


async def test_llm_failing_mid_reply_is_not_repeated(make_call) -> None:
    bot = BotConfig(greeting=GREETING)
    h = make_call(bot, llm=FakeLlm(plans=[LlmPlan(
        reply="Your balance is ten pounds. It was paid in", error_after=rpc_error(UNAVAILABLE,
                                                                             "gone"))]))
    await h.greeted()
    await h.reply_to("what is my balance")
    assert len(h.llm.requests) == 1
    assert h.tts.texts[1:] == ["Your balance is ten pounds.", bot.apology]


# ----------------------------------------------------------------------------- TTS failures
async def test_tts_restarting_mid_turn_is_retried_with_backoff(make_call) -> None:
    """Issue #16 item 8: "voices are still loading" twice 8 ms apart lost the reply."""
    loading = [rpc_error(UNAVAILABLE, "voices are still loading") for _ in range(3)]
    tts = FakeTts()
    h = make_call(tts=tts)
    await h.greeted()
    tts.failures = loading
    await h.reply_to("hi")
    sentence = "You said hi."
    tries = [at for at, text in tts.attempts if text == sentence]
    assert len(tries) == 4 and sentence in tts.texts
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39  # 0.1, 0.2, 0.4 s
    assert h.call.history[-1] == ("assistant", "You said hi. Anything else?")


async def test_tts_down_past_its_deadline_skips_the_sentence_only(make_call) -> None:
    tts = FakeTts(timeout_s=0.5)
    h = make_call(tts=tts)
    await h.greeted()
    tts.failures = [rpc_error(UNAVAILABLE, "connection refused") for _ in range(50)]
    await h.reply_to("hi")
    assert "You said hi." not in tts.texts
    assert 2 < sum(text == "You said hi." for _, text in tts.attempts) < 50
    tts.failures.clear()
    await h.reply_to("what is my balance")
    assert tts.texts[-1] == "Anything else?" and h.call.state is CallState.ACTIVE


async def test_tts_refusal_is_not_retried(make_call) -> None:
    tts = FakeTts()
    h = make_call(tts=tts)
    await h.greeted()
    tts.failures = [rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "text is too long")]
    await h.reply_to("hi")
    assert [text for _, text in tts.attempts].count("You said hi.") == 1
    assert tts.texts[-1] == "Anything else?"


async def test_tts_failing_mid_sentence_is_not_repeated(make_call) -> None:
    tts = FakeTts()
    h = make_call(tts=tts)
    await h.greeted()
    tts.fail_after_first_chunk = rpc_error(UNAVAILABLE, "gone")
    await h.reply_to("hi")
    assert [text for _, text in tts.attempts].count("You said hi.") == 1
    assert tts.texts[-1] == "Anything else?"


# ----------------------------------------------------------------------------- DTMF
async def test_dtmf_digits_become_one_entry_after_a_pause(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, dtmf_flush_s=0.05))
    await h.greeted()
    for digit in "123":
        h.call.on_dtmf(digit)
    assert len(h.llm.requests) == 0
    await until(lambda: len(h.llm.requests) == 1, "the digits' entry")
    assert h.llm.requests[0][-1] == ("user", "[DTMF 123]")


async def test_dtmf_hash_ends_the_entry_at_once(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, dtmf_flush_s=60))
    await h.greeted()
    for digit in "42#":
        h.call.on_dtmf(digit)
    await until(lambda: len(h.llm.requests) == 1, "the digits' entry")
    assert h.llm.requests[0][-1] == ("user", "[DTMF 42#]")


async def test_a_flood_of_dtmf_does_not_poison_the_conversation(make_call) -> None:
    """Issue #16 item 4: 4100 digits then # made a 4108-character message; every later
    turn was refused and "goodbye" no longer ended the call."""
    h = make_call(BotConfig(greeting=GREETING, dtmf_flush_s=60), autoplay=True)
    await h.greeted()
    for digit in "1234567890" * 410 + "#":
        h.call.on_dtmf(digit)
    await until(lambda: len(h.llm.requests) == 1, "the digits' entry")
    await h.call.turn.wait_for_work()
    assert h.llm.requests[0][-1] == ("user", f"[DTMF {('1234567890' * 4)[:MAX_DIGITS]}#]")
    await h.reply_to("what is my balance")
    await h.reply_to("thank you goodbye")
    assert h.llm.refusals == []
    assert h.call.history[-1] == ("assistant", "Thank you for calling. Goodbye!")
    await until(lambda: h.hangups == ["fake-1"], "the bot's hang-up")


# ----------------------------------------------------------------------------- history
async def test_a_long_history_is_fitted_to_the_llm_limits(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, max_history_turns=100), autoplay=True)
    await h.greeted()
    for n in range(40):
        await h.reply_to(f"question number {n}")
    await h.reply_to("x" * 5000)  # one long utterance
    request = h.llm.requests[-1]
    assert h.llm.refusals == [] and h.call.turn.reply.startswith("You said xxx")
    assert len(request) == MAX_MESSAGES and request[0] == ("system", h.call.bot.system_prompt)
    assert request[-1][0] == "user" and len(request[-1][1]) == MAX_CONTENT_CHARS
    assert request[-2] == h.call.history[-3]  # the newest kept, the oldest left out
    assert len(h.call.history) == 83  # the call's own record keeps everything


async def test_the_history_window_follows_the_bot_config(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, max_history_turns=1), autoplay=True)
    await h.greeted()
    await h.reply_to("one")
    await h.reply_to("two")
    assert h.llm.requests[-1] == [("system", h.call.bot.system_prompt),
                                  ("assistant", "You said one. Anything else?"), ("user", "two")]


# ----------------------------------------------------------------------------- limits
async def test_caller_silence_gets_a_prompt_then_goodbye(make_call) -> None:
    bot = BotConfig(greeting=GREETING, silence_timeout_s=0.1)
    h = make_call(bot, autoplay=True)
    await h.greeted()
    await until(lambda: h.hangups == ["fake-1"], "the bot's hang-up")
    assert h.tts.texts == [GREETING, bot.silence_prompt, bot.timeout_goodbye]
    assert [timer.kind for timer in h.call.turns_done] == ["greeting", "prompt", "goodbye"]


async def test_the_caller_speaking_resets_the_silence_prompt(make_call) -> None:
    bot = BotConfig(greeting=GREETING, silence_timeout_s=0.2)
    h = make_call(bot, autoplay=True)
    await h.greeted()
    await until(lambda: bot.silence_prompt in h.tts.texts, "the prompt")
    await h.reply_to("yes i am here")
    assert h.call.limits.silence_prompted is False
    await until(lambda: h.hangups == ["fake-1"], "the bot's hang-up")
    assert h.tts.texts.count(bot.silence_prompt) == 2


async def test_maximum_duration_says_goodbye_and_hangs_up(make_call) -> None:
    bot = BotConfig(greeting=GREETING, max_call_duration_s=0.2)
    h = make_call(bot, autoplay=True)
    await h.greeted()
    await h.asr.stream.partial("i keep talking")  # no silence: the duration ends it
    await until(lambda: h.hangups == ["fake-1"], "the bot's hang-up")
    assert h.tts.texts[-1] == bot.timeout_goodbye and h.call.ending


async def test_goodbye_reply_hangs_up_once_played(make_call) -> None:
    h = make_call()
    await h.greeted()
    await h.reply_to("goodbye")
    await until(lambda: h.call.ending, "the bot to start hanging up")
    assert h.hangups == []  # the goodbye is still being played
    await h.asr.stream.partial("wait what")  # too late to interrupt it
    assert h.media.is_speaking
    h.media.play_out()
    await until(lambda: h.hangups == ["fake-1"], "the bot's hang-up")


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
