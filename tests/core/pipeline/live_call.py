"""A `Call` on the real services (the session's `ai` fixture), a real RTP session and a UDP phone."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

from opensips_ai_core.config import BotConfig
from opensips_ai_core.grpc_clients.asr import AsrClient
from opensips_ai_core.grpc_clients.llm import LlmClient
from opensips_ai_core.grpc_clients.tts import TtsClient
from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.media.session import RtpSession
from opensips_ai_core.pipeline.conversation import Call
from opensips_ai_core.pipeline.protocols import Services
from opensips_ai_core.signalling.base import CallInfo
from tests.conftest import AiServices
from voice_testkit.stack import free_rtp_range


@contextlib.asynccontextmanager
async def open_call(ai: AiServices, bot: BotConfig, *, llm_target: str | None = None,
                    call_id: str = "pipeline-1", direction: str = "inbound",
                    ) -> AsyncIterator[tuple[Call, RtpSession]]:
    """The call as the core makes it (its media's first packet starts its timers), with
    `ai`'s LLM unless `llm_target` names another; closed with everything it opened."""
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    calls: list[Call] = []

    def first_packet() -> None:  # the call is made after its media session
        calls[0].on_first_packet()

    media = await RtpSession.open("127.0.0.1", RtpPortAllocator(*free_rtp_range(10)),
                                  on_audio=lambda _pcm: None, on_talkspurt_start=first_packet)
    media.configure("127.0.0.1", phone.getsockname()[1], "PCMU", 0, None)
    services = Services(AsrClient(ai.asr.target), LlmClient(llm_target or ai.llm.target),
                        TtsClient(ai.tts.target))

    async def hangup(_call_id: str) -> None:
        pass

    call = Call(CallInfo(call_id, "sip:caller@test", "sip:ai@test", "sip", direction=direction),
                media, services, bot, hangup)
    calls.append(call)
    try:
        yield call, media
    finally:
        await call.close("test over")
        await media.close()
        for client in (services.asr, services.llm, services.tts):
            await client.close()
        phone.close()
