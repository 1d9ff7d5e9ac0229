"""The conversation when the LLM or TTS fails (fakes): retried with backoff within the
deadline while nothing was said, then the apology (LLM) or the sentence skipped (TTS)."""

from __future__ import annotations

import itertools

import grpc
import pytest

from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.conversation import CallState
from tests.core.pipeline.fakes import FakeLlm, FakeTts, LlmPlan, rpc_error
from tests.core.pipeline.harness import GREETING

pytestmark = [pytest.mark.timeout(20)]

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


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
