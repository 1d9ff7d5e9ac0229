"""A `Call` on the fakes, and what its tests wait with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.conversation import Call
from opensips_ai_core.signalling.base import CallInfo
from tests.core.pipeline.fakes import FakeAsr, FakeLlm, FakeMedia, FakeTts, fake_services

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


def new_call(bot: BotConfig | None = None, *, llm: FakeLlm | None = None,
             tts: FakeTts | None = None, autoplay: bool = False,
             direction: str = "inbound") -> Harness:
    media, asr = FakeMedia(autoplay=autoplay), FakeAsr()
    services = fake_services(llm or FakeLlm(), tts or FakeTts(), asr)
    hangups: list[str] = []

    async def hangup(call_id: str) -> None:
        hangups.append(call_id)

    call = Call(CallInfo("fake-1", "sip:caller@test", "sip:ai@test", "sip",
                         direction=direction), media,
                services, bot or BotConfig(greeting=GREETING), hangup)
    return Harness(call, media, asr, services.llm, services.tts, hangups)
