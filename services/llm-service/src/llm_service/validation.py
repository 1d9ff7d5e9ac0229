"""Check a GenerateRequest against the contract's limits (llm.proto header).

Each refusal names the limit, so a client author can fix the request from the
message alone.
"""

from __future__ import annotations

import math

from llm_service.engine import Message, SamplingParams
from llm_service.settings import MAX_NEW_TOKENS_LIMIT
from voiceai.llm.v1 import llm_pb2

MAX_MESSAGES = 64
MAX_CONTENT_CHARS = 4000
MAX_TOTAL_CHARS = 16000
MAX_TEMPERATURE = 2.0
# Not in the contract's header; bounded all the same so a request stays cheap to check.
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 200

_ROLES = {
    llm_pb2.ChatMessage.SYSTEM: "system",
    llm_pb2.ChatMessage.USER: "user",
    llm_pb2.ChatMessage.ASSISTANT: "assistant",
}


class InvalidRequestError(ValueError):
    pass


def validate_messages(request: llm_pb2.GenerateRequest) -> list[Message]:
    count = len(request.messages)
    if count == 0:
        raise InvalidRequestError("messages is empty: send 1 to 64 messages")
    if count > MAX_MESSAGES:
        raise InvalidRequestError(f"too many messages: {count} (at most {MAX_MESSAGES})")
    messages: list[Message] = []
    total = 0
    for index, message in enumerate(request.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise InvalidRequestError(
                f"messages[{index}].role is {message.role}: use SYSTEM, USER or ASSISTANT")
        length = len(message.content)
        if length > MAX_CONTENT_CHARS:
            raise InvalidRequestError(
                f"messages[{index}].content is {length} characters "
                f"(at most {MAX_CONTENT_CHARS} per message)")
        total += length
        messages.append(Message(role, message.content))
    if total > MAX_TOTAL_CHARS:
        raise InvalidRequestError(
            f"messages hold {total} characters in all (at most {MAX_TOTAL_CHARS})")
    if messages[-1].role != "user":
        raise InvalidRequestError(
            f"the last message must be from the user, not {messages[-1].role}")
    if not messages[-1].content.strip():
        raise InvalidRequestError("the last user message is empty")
    return messages


def validate_params(params: llm_pb2.GenerationParams, default_max_new_tokens: int
                    ) -> SamplingParams:
    if not 0 <= params.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
        raise InvalidRequestError(
            f"params.max_new_tokens is {params.max_new_tokens}: use 0 (server default) "
            f"to {MAX_NEW_TOKENS_LIMIT}")
    if not (math.isfinite(params.temperature) and 0 <= params.temperature <= MAX_TEMPERATURE):
        raise InvalidRequestError(
            f"params.temperature is {params.temperature}: use 0 (greedy) to {MAX_TEMPERATURE}")
    if not (math.isfinite(params.top_p) and 0 <= params.top_p <= 1):
        raise InvalidRequestError(f"params.top_p is {params.top_p}: use 0 to 1")
    if len(params.stop) > MAX_STOP_STRINGS:
        raise InvalidRequestError(
            f"params.stop has {len(params.stop)} strings (at most {MAX_STOP_STRINGS})")
    for index, stop in enumerate(params.stop):
        if not stop or len(stop) > MAX_STOP_CHARS:
            raise InvalidRequestError(
                f"params.stop[{index}] is {len(stop)} characters: use 1 to {MAX_STOP_CHARS}")
    return SamplingParams(
        max_new_tokens=params.max_new_tokens or default_max_new_tokens,
        temperature=float(params.temperature),
        top_p=float(params.top_p),
        seed=int(params.seed),
        stop=tuple(params.stop),
    )
