"""LLM client: stream text deltas for a chat; cancelling the iterator cancels the RPC.

Tool calls the model makes arrive in `GenerationResult.tool_calls` (the contract's
`tool_call` events); a conversation item may be a `ToolExchange` (the call and its
result), sent as the assistant's tool call followed by a TOOL message.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field

from opensips_ai_core.grpc_clients.channel import open_channel, responses
from voice_common import get_development_logger
from voiceai.llm.v1 import llm_pb2, llm_pb2_grpc

log = get_development_logger(__name__)

ROLES = {
    "system": llm_pb2.ChatMessage.SYSTEM,
    "user": llm_pb2.ChatMessage.USER,
    "assistant": llm_pb2.ChatMessage.ASSISTANT,
}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class ToolExchange:
    """A tool call the model made and the JSON result the core got for it."""

    call: ToolCall
    result_json: str


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters_json: str


ChatItem = tuple[str, str] | ToolExchange


@dataclass
class GenerationResult:
    """Filled while streaming; `timings` arrives with the last message."""

    text: str = ""
    timings: llm_pb2.GenerationTimings | None = None
    deltas: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)


def build_request(messages: Sequence[ChatItem], *, tools: Sequence[ToolSpec] = (),
                  call_id: str = "", max_new_tokens: int = 0, temperature: float = 0.0
                  ) -> llm_pb2.GenerateRequest:
    chat: list[llm_pb2.ChatMessage] = []
    for item in messages:
        if isinstance(item, ToolExchange):
            call = item.call
            chat.append(llm_pb2.ChatMessage(
                role=llm_pb2.ChatMessage.ASSISTANT, tool_calls=[llm_pb2.ToolCall(
                    id=call.id, name=call.name, arguments_json=call.arguments_json)]))
            chat.append(llm_pb2.ChatMessage(role=llm_pb2.ChatMessage.TOOL,
                                            tool_call_id=call.id, content=item.result_json))
        else:
            role, content = item
            chat.append(llm_pb2.ChatMessage(role=ROLES[role], content=content))
    return llm_pb2.GenerateRequest(
        messages=chat,
        tools=[llm_pb2.Tool(name=t.name, description=t.description,
                            parameters_json=t.parameters_json) for t in tools],
        params=llm_pb2.GenerationParams(max_new_tokens=max_new_tokens,
                                        temperature=temperature),
        call_id=call_id,
    )


class LlmClient:
    def __init__(self, target: str, *, timeout_s: float = 20.0) -> None:
        self.target = target
        self.channel = open_channel(target)
        self.stub = llm_pb2_grpc.LanguageModelStub(self.channel)
        # The whole generation, waiting for a restarting service included: the deadline
        # of one attempt, and of all the pipeline's attempts together (pipeline/retry.py).
        self.timeout_s = timeout_s

    async def generate(
        self,
        messages: Sequence[ChatItem],
        *,
        call_id: str = "",
        max_new_tokens: int = 0,
        temperature: float = 0.0,
        result: GenerationResult | None = None,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncIterator[str]:
        """Yield text deltas. Closing the generator early cancels the RPC at once. One
        attempt: a failure (`grpc.aio.AioRpcError`) is the caller's to retry."""
        request = build_request(messages, tools=tools, call_id=call_id,
                                max_new_tokens=max_new_tokens, temperature=temperature)
        # The generated stubs are untyped: name the response type here.
        calls: AsyncGenerator[llm_pb2.GenerateResponse, None] = responses(
            self.stub.Generate(request, wait_for_ready=True, timeout=self.timeout_s))
        try:
            async for response in calls:
                if response.HasField("delta"):
                    if result is not None:
                        result.text += response.delta
                        result.deltas += 1
                    yield response.delta
                elif response.HasField("tool_call") and result is not None:
                    call = response.tool_call
                    result.tool_calls.append(ToolCall(call.id, call.name, call.arguments_json))
                elif response.HasField("done") and result is not None:
                    result.timings = response.done
        except GeneratorExit:
            log.debug("LLM request of %s cancelled", call_id)
            raise
        finally:
            await calls.aclose()  # cancels the call if it is still running

    async def prime(self, request: llm_pb2.GenerateRequest) -> llm_pb2.GenerationTimings | None:
        """Send a prime (llm_prime.py) and wait for its `done`; any text is dropped (a
        server that predates primes answers one as a turn). One attempt, as `generate`."""
        calls: AsyncGenerator[llm_pb2.GenerateResponse, None] = responses(
            self.stub.Generate(request, wait_for_ready=True, timeout=self.timeout_s))
        done = None
        try:
            async for response in calls:
                if response.HasField("done"):
                    done = response.done
        finally:
            await calls.aclose()
        return done

    async def close(self) -> None:
        await self.channel.close()
