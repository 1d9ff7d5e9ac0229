"""The conversation's transfer and outbound-greeting hooks, with the real services.

The demo model answers "talk to a person" with "... while I transfer you to one of our
advisers": the bot config's phrase makes that a transfer to the `advisers` target once
the reply has played. The signalling side is a recorded callable here (the REFER itself
is tested against SIPp in tests/core/signalling/test_sip_transfer.py).
"""

from __future__ import annotations

import asyncio

import pytest

from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.conversation import Call
from opensips_ai_core.signalling.base import TransferResult
from tests.core.pipeline.harness import until
from tests.core.pipeline.live_call import open_call
from voiceai.asr.v1 import asr_pb2

pytestmark = [pytest.mark.timeout(180)]

ADVISERS = "sip:advisers@127.0.0.1:5999"
TRANSFER_BOT = {"greeting": "Hi.", "transfer_to": {"advisers": ADVISERS},
                "transfer_phrases": ("transfer you to",),
                "transfer_failed": "Sorry, I could not put you through."}


async def talk_to_a_person(call: Call, result: TransferResult) -> list[str]:
    targets: list[str] = []

    async def transfer(target: str) -> TransferResult:
        targets.append(target)
        return result

    call.transfer = transfer
    call.start()
    await until(lambda: call.turn is not None and call.turn.ended, "greeting", 30)
    call.caller_said("i want to talk to a person")
    await until(lambda: bool(targets), "the transfer", 30)
    return targets


async def test_failed_transfer_is_said_and_the_call_goes_on(ai) -> None:
    bot = BotConfig.model_validate(TRANSFER_BOT)
    async with open_call(ai, bot, call_id="hooks-1") as (call, _media):
        targets = await talk_to_a_person(call, TransferResult(False, 603, "REFER refused"))
        assert targets == [ADVISERS]
        assert "transfer you to" in call.history[-1][1]
        await until(lambda: call.history[-1] == ("assistant", bot.transfer_failed), "the failure to be said", 30)
        assert call.state == "active"


async def test_successful_transfer_says_nothing_more(ai) -> None:
    bot = BotConfig.model_validate(TRANSFER_BOT)
    async with open_call(ai, bot, call_id="hooks-1") as (call, _media):
        await talk_to_a_person(call, TransferResult(True, 200, "OK"))
        reply_turn = call.turn
        for _ in range(3):  # let the hook run past the transfer's answer
            await asyncio.sleep(0)
        assert call.turn is reply_turn  # no "could not put you through" turn
        assert all(text != bot.transfer_failed for _role, text in call.history)


async def test_without_targets_the_reply_only_says_it(ai) -> None:
    async with open_call(ai, BotConfig(greeting="Hi."), call_id="hooks-1") as (call, _media):
        called: list[str] = []

        async def transfer(target: str) -> TransferResult:
            called.append(target)
            return TransferResult(True, 200, "OK")

        call.transfer = transfer
        call.start()
        await until(lambda: call.turn is not None and call.turn.ended, "greeting", 30)
        call.caller_said("i want to talk to a person")
        turn = call.turn
        await until(lambda: turn.ended, "the reply", 30)
        assert "transfer you to" in turn.reply and called == []


async def test_outbound_call_greets_after_the_callees_hello(ai) -> None:
    bot = BotConfig(greeting="Hello, this is Example Bank.", outbound_greeting_wait_s=30)
    async with open_call(ai, bot, direction="outbound", call_id="hooks-1") as (call, _media):
        call.start()
        await asyncio.sleep(0.3)
        assert call.turn is None and call.awaiting_hello  # silent until the callee speaks
        await call.recognition.on_response(asr_pb2.RecognizeResponse(final=asr_pb2.Transcript(
            text="hello", audio_start_s=0.1, audio_end_s=0.6), engine="pocketsphinx"))
        assert call.history[0] == ("user", "hello")
        await until(lambda: call.turn is not None and call.turn.ended, "greeting", 30)
        assert call.turn.timer.kind == "greeting"
        assert call.history[-1] == ("assistant", bot.greeting)


async def test_outbound_call_greets_into_silence(ai) -> None:
    bot = BotConfig(greeting="Hello, this is Example Bank.", outbound_greeting_wait_s=0.5)
    async with open_call(ai, bot, direction="outbound", call_id="hooks-1") as (call, _media):
        call.start()
        await until(lambda: call.turn is not None, "the greeting after the silence", 10)
        await until(lambda: call.turn.ended, "greeting", 30)
        assert call.history == [("assistant", bot.greeting)]
