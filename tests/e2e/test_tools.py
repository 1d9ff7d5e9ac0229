"""A tool call end to end: a direct SIP call, the real services (ASR, the demo LLM, TTS),
the real core as a process, and the demo's mock bank over HTTP on 127.0.0.1.

The bot is core/bot.toml with its commented `[[bot.tools]]` turned on (pointed at this
test's bank): "what is my balance" asks for the account number, the caller keys it in
(RFC 4733 DTMF, then #), the core calls `get_balance` and the bot speaks the balance.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from opensips_ai_core.config import DEFAULT_BOT_CONFIG
from tests.e2e.test_conversation import ask, direct_call, enter, leave, wait_greeting
from voice_testkit.bank import mock_bank

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ASK = "Please tell me your account number, or key it in and press hash."
BALANCE = "One moment, please. Your balance is 1,250.40 dollars."


def bank_bot_toml(base: str) -> str:
    text = DEFAULT_BOT_CONFIG.read_text()
    start = text.index("# [[bot.tools]]")
    enabled = text[:start] + re.sub(r"^# ?", "", text[start:], flags=re.MULTILINE)
    return enabled.replace("http://127.0.0.1:8090", base)


async def history_until(core, content: str, timeout: float = 90.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        calls = await asyncio.to_thread(core.calls)
        history = calls[0]["history"] if calls else []
        if {"role": "assistant", "content": content} in history:
            return history
        if time.monotonic() > deadline:
            raise AssertionError(f"no {content!r} in the history: {history}")
        await asyncio.sleep(0.2)


async def test_the_balance_of_a_keyed_in_account_comes_from_the_bank(ai, start_core, tmp_path):
    with mock_bank(tmp_path) as base:
        config = tmp_path / "bot.toml"
        config.write_text(bank_bot_toml(base))
        cm = start_core(CORE_BOT_CONFIG=str(config))
        core = await enter(cm)
        try:
            async with direct_call(core) as (_sip, rtp):
                await wait_greeting(rtp, time.monotonic() - 1)
                await ask(rtp, ai, "what is my balance")
                await history_until(core, ASK)
                keyed = time.monotonic()
                for digit in "12345678#":
                    rtp.send_dtmf(digit)
                history = await history_until(core, BALANCE)
                first = await rtp.wait_for_speech(keyed, 30)
                assert first is not None, "no spoken answer"
                last = await rtp.wait_for_silence(first, 1.5, 30)
                spoken = rtp.audio_between(first, last)
        finally:
            await leave(cm)
    assert {"role": "user", "content": "[DTMF 12345678#]"} in history
    # The filler and the answer went out as audio (Piper: well over 2 s of speech).
    assert len(spoken) / 8000 > 2.0
