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
from opensips_ai_core.pipeline.call import TRUNCATED, Call, Services
from opensips_ai_core.signalling.base import CallInfo
from tests.support.stack import free_rtp_range, service

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
    media = await RtpSession.open("127.0.0.1", ports, on_audio=lambda _pcm: None)
    media.configure("127.0.0.1", phone.getsockname()[1], "PCMU", 0, None)
    services = Services(AsrClient(ai.asr.target), LlmClient(llm_target), TtsClient(ai.tts.target))
    hangups: list[str] = []

    async def hangup(call_id: str) -> None:
        hangups.append(call_id)

    call = Call(CallInfo("pipeline-1", "sip:caller@test", "sip:ai@test", "sip"), media,
                services, bot, hangup)
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
    cm = service("llm", tmp_path, VOICE_CACHE_DIR=str(ai.llm_cache), LLM_IGNORE_EOS="1",
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
