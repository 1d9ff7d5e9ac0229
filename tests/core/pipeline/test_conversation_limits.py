"""The conversation at its limits (fakes): DTMF entries, the history sent to the LLM,
caller silence, the call's maximum duration, the bot's goodbye."""

from __future__ import annotations

import pytest

from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.dtmf import MAX_DIGITS
from opensips_ai_core.pipeline.history import MAX_CONTENT_CHARS, MAX_MESSAGES
from tests.core.pipeline.fakes import LlmPlan
from tests.core.pipeline.harness import GREETING, until

pytestmark = [pytest.mark.timeout(20)]


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


async def test_the_callers_goodbye_ends_the_call_once_the_reply_played(make_call) -> None:
    """A real model does not always say goodbye back (SmolLM2 answered "thank you
    goodbye" with an apology): the caller's own goodbye ends the call after the reply."""
    h = make_call()
    await h.greeted()
    h.llm.plans.append(LlmPlan(reply="You are welcome."))
    await h.reply_to("thank you goodbye")
    await until(lambda: h.call.ending, "the bot to start hanging up")
    h.media.play_out()
    await until(lambda: h.hangups == ["fake-1"], "the bot's hang-up")
    assert h.tts.texts[-1] == "You are welcome."


async def test_the_callers_goodbye_can_be_left_to_the_model(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, caller_goodbye_ends_call=False), autoplay=True)
    await h.greeted()
    h.llm.plans.append(LlmPlan(reply="You are welcome."))
    await h.reply_to("thank you goodbye")
    await until(lambda: len(h.call.turns_done) == 2, "the reply played")
    assert not h.call.ending and h.hangups == []


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
