"""LLM client: stream text deltas for a chat; cancelling the iterator cancels the RPC."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

from opensips_ai_core.grpc_clients.channel import open_channel, stream_until_deadline
from voice_common import get_development_logger
from voiceai.llm.v1 import llm_pb2, llm_pb2_grpc

log = get_development_logger(__name__)

ROLES = {
    "system": llm_pb2.ChatMessage.SYSTEM,
    "user": llm_pb2.ChatMessage.USER,
    "assistant": llm_pb2.ChatMessage.ASSISTANT,
}


@dataclass
class GenerationResult:
    """Filled while streaming; `timings` arrives with the last message."""

    text: str = ""
    timings: llm_pb2.GenerationTimings | None = None
    deltas: int = 0


class LlmClient:
    def __init__(self, target: str, *, timeout_s: float = 20.0) -> None:
        self.target = target
        self.channel = open_channel(target)
        self.stub = llm_pb2_grpc.LanguageModelStub(self.channel)
        # The whole generation, waiting for a restarting service included.
        self.timeout_s = timeout_s

    async def generate(
        self,
        messages: Sequence[tuple[str, str]],
        *,
        call_id: str = "",
        max_new_tokens: int = 0,
        temperature: float = 0.0,
        result: GenerationResult | None = None,
    ) -> AsyncIterator[str]:
        """Yield text deltas. Closing the generator early cancels the RPC at once."""
        request = llm_pb2.GenerateRequest(
            messages=[llm_pb2.ChatMessage(role=ROLES[role], content=content)
                      for role, content in messages],
            params=llm_pb2.GenerationParams(max_new_tokens=max_new_tokens,
                                            temperature=temperature),
            call_id=call_id,
        )
        # The generated stubs are untyped: name the response type here.
        calls: AsyncGenerator[llm_pb2.GenerateResponse, None] = stream_until_deadline(
            lambda timeout: self.stub.Generate(request, wait_for_ready=True, timeout=timeout),
            self.timeout_s, "LLM")
        try:
            async for response in calls:
                if response.HasField("delta"):
                    if result is not None:
                        result.text += response.delta
                        result.deltas += 1
                    yield response.delta
                elif response.HasField("done") and result is not None:
                    result.timings = response.done
        except GeneratorExit:
            log.debug("LLM request of %s cancelled", call_id)
            raise
        finally:
            await calls.aclose()  # cancels the call if it is still running

    async def close(self) -> None:
        await self.channel.close()



