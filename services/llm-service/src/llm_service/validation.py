"""Check a GenerateRequest against the contract's limits (llm.proto header).

Each refusal names the limit, so a client author can fix the request from the
message alone.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from llm_service.engine import Message, SamplingParams, ToolCallRecord, ToolSpec
from llm_service.settings import MAX_NEW_TOKENS_LIMIT
from voiceai.llm.v1 import llm_pb2

MAX_MESSAGES = 64
MAX_CONTENT_CHARS = 4000
MAX_TOTAL_CHARS = 16000
MAX_TEMPERATURE = 2.0
# Not in the contract's header; bounded all the same so a request stays cheap to check.
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 200
MAX_TOOLS = 16
MAX_TOOL_DESCRIPTION_CHARS = 1000
MAX_TOOL_SCHEMA_CHARS = 4000
MAX_TOOL_CALLS_PER_MESSAGE = 16
MAX_TOOL_ARGUMENTS_CHARS = 4000
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

_ROLES = {
    llm_pb2.ChatMessage.SYSTEM: "system",
    llm_pb2.ChatMessage.USER: "user",
    llm_pb2.ChatMessage.ASSISTANT: "assistant",
    llm_pb2.ChatMessage.TOOL: "tool",
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
                f"messages[{index}].role is {message.role}: use SYSTEM, USER, ASSISTANT or TOOL")
        length = len(message.content)
        if length > MAX_CONTENT_CHARS:
            raise InvalidRequestError(
                f"messages[{index}].content is {length} characters "
                f"(at most {MAX_CONTENT_CHARS} per message)")
        total += length
        if role == "tool" and not message.tool_call_id:
            raise InvalidRequestError(
                f"messages[{index}] is a TOOL message without tool_call_id")
        if message.tool_calls and role != "assistant":
            raise InvalidRequestError(
                f"messages[{index}].tool_calls is set on a {role} message (ASSISTANT only)")
        calls = _tool_calls(index, message)
        total += sum(len(call.arguments_json) for call in message.tool_calls)
        messages.append(Message(role, message.content, message.tool_call_id, calls))
    if total > MAX_TOTAL_CHARS:
        raise InvalidRequestError(
            f"messages hold {total} characters in all (at most {MAX_TOTAL_CHARS})")
    if messages[-1].role not in ("user", "tool"):
        raise InvalidRequestError(
            f"the last message must be from the user or a tool, not {messages[-1].role}")
    if messages[-1].role == "user" and not messages[-1].content.strip():
        raise InvalidRequestError("the last user message is empty")
    return messages


def _json_object(text: str, what: str, limit: int) -> dict[str, Any]:
    if len(text) > limit:
        raise InvalidRequestError(f"{what} is {len(text)} characters (at most {limit})")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidRequestError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _tool_calls(index: int, message: llm_pb2.ChatMessage) -> tuple[ToolCallRecord, ...]:
    if len(message.tool_calls) > MAX_TOOL_CALLS_PER_MESSAGE:
        raise InvalidRequestError(
            f"messages[{index}].tool_calls has {len(message.tool_calls)} calls "
            f"(at most {MAX_TOOL_CALLS_PER_MESSAGE})")
    calls = []
    for number, call in enumerate(message.tool_calls):
        where = f"messages[{index}].tool_calls[{number}]"
        if not TOOL_NAME.fullmatch(call.name):
            raise InvalidRequestError(f"{where}.name {call.name!r}: use 1-64 of [A-Za-z0-9_-]")
        arguments = _json_object(call.arguments_json or "{}", f"{where}.arguments_json",
                                 MAX_TOOL_ARGUMENTS_CHARS)
        calls.append(ToolCallRecord(call.id, call.name, arguments))
    return tuple(calls)


def validate_tools(request: llm_pb2.GenerateRequest) -> tuple[ToolSpec, ...]:
    """The offered tools, each with its JSON schema parsed."""
    if len(request.tools) > MAX_TOOLS:
        raise InvalidRequestError(f"too many tools: {len(request.tools)} (at most {MAX_TOOLS})")
    tools: list[ToolSpec] = []
    seen: set[str] = set()
    for index, tool in enumerate(request.tools):
        if not TOOL_NAME.fullmatch(tool.name):
            raise InvalidRequestError(
                f"tools[{index}].name {tool.name!r}: use 1-64 characters of [A-Za-z0-9_-]")
        if tool.name in seen:
            raise InvalidRequestError(f"tools[{index}].name {tool.name!r} is offered twice")
        seen.add(tool.name)
        if len(tool.description) > MAX_TOOL_DESCRIPTION_CHARS:
            raise InvalidRequestError(
                f"tools[{index}].description is {len(tool.description)} characters "
                f"(at most {MAX_TOOL_DESCRIPTION_CHARS})")
        schema = _json_object(tool.parameters_json or '{"type": "object"}',
                              f"tools[{index}].parameters_json", MAX_TOOL_SCHEMA_CHARS)
        tools.append(ToolSpec(tool.name, tool.description, schema))
    return tuple(tools)


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
