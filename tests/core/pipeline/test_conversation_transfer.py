"""The conversation's transfer hook and an outbound call's wait for the callee's hello,
on the fakes of tests/core/pipeline/fakes.py.

The transfer callable stands for the call manager's `CallManager.transfer`: it records
the target and answers with a `TransferResult`; on success it ends the call as the
manager does (`end_call` -> `Call.close`). The REFER itself is tested against SIPp in
tests/core/signalling/test_sip_transfer.py and the manager in tests/core/test_call_transfer.py;
the same hooks run with the real services in test_call_transfer_hooks.py.
"""

from __future__ import annotations

import asyncio

import pytest

from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.conversation import Call, CallState
from opensips_ai_core.signalling.base import TransferResult
from tests.core.pipeline.fakes import FakeLlm, LlmPlan
from tests.core.pipeline.harness import GREETING, until

pytestmark = [pytest.mark.timeout(20)]

ADVISERS = "sip:advisers@127.0.0.1:5999"
SALES = "sip:sales@127.0.0.1:5998"
FAILED = "Sorry, I could not put you through."
TRANSFER_BOT = BotConfig(greeting=GREETING, transfer_to={"advisers": ADVISERS, "sales": SALES},
                         transfer_phrases=("transfer you to",), transfer_failed=FAILED)


class ManagerTransfer:
    """`CallManager.transfer` as the call sees it: a successful transfer ends the call."""

    def __init__(self, call: Call, result: TransferResult) -> None:
        self.call = call
        self.result = result
        self.targets: list[str] = []

    async def __call__(self, target: str) -> TransferResult:
        self.targets.append(target)
        if self.result.ok:
            await self.call.close("transferred")
        return self.result


async def settle() -> None:
    """Let the call's tasks run as far as they can without outside help."""
    for _ in range(10):
        await asyncio.sleep(0)


def replying(text: str) -> FakeLlm:
    return FakeLlm(plans=[LlmPlan(reply=text)])


# ----------------------------------------------------------------------------- transfer
async def test_transfer_starts_once_the_reply_played_and_success_ends_the_call(
        make_call) -> None:
    h = make_call(TRANSFER_BOT, llm=replying("One moment, please. [transfer:sales]"))
    transfer = ManagerTransfer(h.call, TransferResult(True, 200, "OK"))
    h.call.transfer = transfer
    await h.greeted()
    await h.reply_to("i want to buy a card")
    assert h.tts.texts[1:] == ["One moment, please."]  # the marker is not spoken
    await settle()
    assert transfer.targets == []  # the reply is still playing
    h.media.play_out()
    await until(lambda: h.call.state is CallState.CLOSED, "the transfer to end the call")
    assert transfer.targets == [SALES]  # the target named in the marker
    assert FAILED not in h.tts.texts and h.hangups == []  # no BYE of the bot's own


async def test_failed_transfer_is_said_and_the_conversation_goes_on(make_call) -> None:
    h = make_call(TRANSFER_BOT, autoplay=True,
                  llm=replying("Please hold while I transfer you to one of our advisers."))
    transfer = ManagerTransfer(h.call, TransferResult(False, 603, "REFER refused"))
    h.call.transfer = transfer
    await h.greeted()
    await h.reply_to("i want to talk to a person")
    await until(lambda: h.call.history[-1] == ("assistant", FAILED), "the failure said")
    assert transfer.targets == [ADVISERS]  # the target the reply mentions
    assert h.tts.texts[-1] == FAILED and h.call.turn.timer.kind == "prompt"
    assert h.call.state is CallState.ACTIVE and not h.call.ending and h.hangups == []
    await h.reply_to("what is my balance")
    assert h.call.history[-1] == ("assistant", "You said what is my balance. Anything else?")


async def test_a_transfer_comes_before_the_goodbye(make_call) -> None:
    h = make_call(TRANSFER_BOT, autoplay=True,
                  llm=replying("I will transfer you to our advisers. Goodbye!"))
    transfer = ManagerTransfer(h.call, TransferResult(False, 408, "no NOTIFY in time"))
    h.call.transfer = transfer
    await h.greeted()
    await h.reply_to("a person please")
    await until(lambda: h.tts.texts[-1] == FAILED, "the failure said")
    assert transfer.targets == [ADVISERS]
    assert h.hangups == [] and not h.call.ending  # the goodbye did not hang up


async def test_a_call_that_cannot_transfer_only_says_it(make_call) -> None:
    # No `transfer` (a backend without REFER): the reply is spoken, its goodbye counts.
    h = make_call(TRANSFER_BOT, autoplay=True,
                  llm=replying("[transfer] I will transfer you to our advisers. Goodbye!"))
    await h.greeted()
    await h.reply_to("a person please")
    await until(lambda: h.hangups == ["fake-1"], "the bot's hang-up")
    assert h.tts.texts[1:] == ["I will transfer you to our advisers.", "Goodbye!"]


# ----------------------------------------------------------------------------- outbound
async def test_outbound_call_waits_for_the_hello_and_the_greeting_answers_it(
        make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, outbound_greeting_wait_s=30),
                  direction="outbound")
    h.call.start()
    await settle()
    assert h.call.turn is None and h.call.awaiting_hello and h.tts.texts == []
    await h.asr.stream.pause("hello")
    assert h.call.prepared is None and h.llm.requests == []  # nothing prepared to it
    await h.asr.stream.final("hello")
    await h.call.turn.wait_for_work()
    assert not h.call.awaiting_hello and h.call.turn.timer.kind == "greeting"
    assert h.tts.texts == [GREETING] and h.llm.requests == []
    assert h.call.history == [("user", "hello"), ("assistant", GREETING)]
    h.media.play_out()
    await h.reply_to("who is this")
    assert h.llm.requests[-1][1:] == [("user", "hello"), ("assistant", GREETING),
                                      ("user", "who is this")]


async def test_outbound_call_greets_into_silence(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, outbound_greeting_wait_s=0.05),
                  direction="outbound")
    h.call.start()
    await until(lambda: h.call.turn is not None, "the greeting after the silence")
    await h.call.turn.wait_for_work()
    assert h.call.history == [("assistant", GREETING)] and not h.call.awaiting_hello


async def test_outbound_call_greets_when_words_began_but_no_transcript_came(
        make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, outbound_greeting_wait_s=0.05),
                  direction="outbound")
    h.call.start()
    await h.asr.stream.speech_start()
    await settle()
    assert h.call.awaiting_hello  # someone speaks: not into the silence
    await until(lambda: h.call.turn is not None, "the greeting anyway", timeout=10)
    await h.call.turn.wait_for_work()
    assert h.call.history == [("assistant", GREETING)]
