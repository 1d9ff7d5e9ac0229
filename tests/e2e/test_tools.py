"""The demo bot's tools end to end: a direct SIP call, the real services, the real core
as a process, and the mock bank (opensips_ai_core.devtools.mock_bank) over HTTP on
127.0.0.1, which BOT_TOOLS_BASE_URL points core/bot.toml's get_balance and block_card at.

"What is my balance" asks for the account number; the caller keys it in (RFC 4733 DTMF,
then #) or says it digit by digit; the core calls `get_balance` and the bot speaks the
balance the bank returned. Spoken digits are recognized by Whisper (the ASR's default
engine): the demo's pocketsphinx hears the TTS voice's "two" and "five" as other words
even with the digit words in its phrases, so with it the test keys the number in.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.e2e.audio import is_account_question, is_bank_balance, speech_of, transcribe_reply
from tests.e2e.test_conversation import (
    ACCOUNT,
    ASK_ACCOUNT,
    BANK_BALANCE,
    ask,
    direct_call,
    enter,
    history_until,
    key_in,
    leave,
    reply_said,
    wait_greeting,
)
from voice_testkit.bank import mock_bank
from voice_testkit.stack import core, service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BLOCKED = ("One moment, please. I have blocked your card for your safety. A new card will "
           "arrive by mail within five working days.")
ASK_CARD_ACCOUNT = ("To block your card, please tell me your account number, or key it in "
                    "and press hash.")


async def test_the_balance_of_a_keyed_in_account_comes_from_the_bank(ai, start_core, tmp_path):
    with mock_bank(tmp_path) as base:
        cm = start_core(BOT_TOOLS_BASE_URL=base)
        server = await enter(cm)
        try:
            async with direct_call(server) as (_sip, rtp):
                await wait_greeting(rtp, server, time.monotonic() - 1)
                question = await ask(rtp, ai, "what is my balance")
                await history_until(server, ASK_ACCOUNT)
                answer = await key_in(rtp, server, ai, f"{ACCOUNT}#", BANK_BALANCE)
                history = await history_until(server, BANK_BALANCE)
            log = server.proc.output()
        finally:
            await leave(cm)
    assert is_account_question(question), question
    assert {"role": "user", "content": f"[DTMF {ACCOUNT}#]"} in history
    assert is_bank_balance(answer), answer
    assert f'tool get_balance({{"account":"{ACCOUNT}"}})' in log


async def test_a_lost_card_is_blocked_at_the_bank(ai, start_core, tmp_path):
    with mock_bank(tmp_path) as base:
        cm = start_core(BOT_TOOLS_BASE_URL=base)
        server = await enter(cm)
        try:
            async with direct_call(server) as (_sip, rtp):
                await wait_greeting(rtp, server, time.monotonic() - 1)
                await ask(rtp, ai, "i lost my card")
                await history_until(server, ASK_CARD_ACCOUNT)
                answer = await key_in(rtp, server, ai, "87654321#", BLOCKED)
        finally:
            await leave(cm)
    assert "blocked your card" in answer, answer
    assert "block_card 87654321" in (tmp_path / "bank.log").read_text()


async def test_a_spoken_account_number_with_whisper(ai, tmp_path):
    """The default ASR engine (Whisper tiny.en) hears the digits; the demo LLM calls the tool."""
    with (mock_bank(tmp_path) as base,
          service("asr", tmp_path, VOSK_SHOW_WORDS="1", ASR_ENABLE_DEBUG="1") as whisper,
          core(tmp_path, whisper.target, ai.llm.target, ai.tts.target,
               BOT_TOOLS_BASE_URL=base) as server):
        async with direct_call(server) as (_sip, rtp):
            await wait_greeting(rtp, server, time.monotonic() - 1)
            await ask(rtp, ai, "what is my balance")
            await history_until(server, ASK_ACCOUNT)
            digits = await asyncio.to_thread(speech_of, ai.tts.target, "1 2 3 4 5 6 7 8")
            rtp.play(digits)
            said = await rtp.wait_played()
            reply = await reply_said(rtp, server, said, BANK_BALANCE)
            history = await history_until(server, BANK_BALANCE)
    heard = [m["content"] for m in history if m["role"] == "user"]
    assert any("".join(c for c in text if c.isdigit()) == ACCOUNT for text in heard), heard
    assert is_bank_balance(await transcribe_reply(ai.asr.target, reply))
