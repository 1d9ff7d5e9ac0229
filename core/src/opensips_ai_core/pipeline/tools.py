"""Running the tools the LLM calls: check the arguments, POST them, bound the reply.

A configured tool (`BotConfig.tools`) is an HTTP endpoint: the arguments go as a JSON
body (POST), the JSON reply is the result the LLM reads. Every way it can go wrong
ends in a `ToolFailure` with one line saying why, never an exception out of the
call: arguments that are not a JSON object or fail the tool's JSON schema; no answer
within the tool's `timeout_s`; an HTTP status other than 2xx; a reply larger than
MAX_RESULT_BYTES or not JSON. The built-in `transfer` and `hang_up` are not run
here: generation.py maps them onto the call's transfer and hang-up paths.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonschema

from opensips_ai_core.config import BotConfig, ToolConfig, tool_url
from opensips_ai_core.grpc_clients.llm import ChatItem, ToolCall, ToolExchange, ToolSpec
from opensips_ai_core.pipeline.history import MAX_MESSAGES, MAX_TOTAL_CHARS
from voice_common import get_development_logger

log = get_development_logger("core.tools")

# A tool's reply goes into the LLM's context (4000 characters per message there).
MAX_RESULT_BYTES = 4000
TRANSFER, HANG_UP = "transfer", "hang_up"


@dataclass(frozen=True)
class ToolFailure:
    why: str


@dataclass(frozen=True)
class ToolSuccess:
    result_json: str  # compact JSON


def offered_tools(bot: BotConfig) -> list[ToolSpec]:
    """What the LLM is told it may call: the configured tools and the built-ins."""
    specs = [ToolSpec(t.name, t.description, json.dumps(t.parameters)) for t in bot.tools]
    if bot.transfer_to:
        specs.append(ToolSpec(TRANSFER, "Transfer the caller to a person.", json.dumps({
            "type": "object",
            "properties": {"target": {"type": "string", "enum": list(bot.transfer_to)}},
        })))
    specs.append(ToolSpec(HANG_UP, "End the call after saying goodbye.",
                          json.dumps({"type": "object", "properties": {}})))
    return specs


def request_tools(bot: BotConfig) -> list[ToolSpec]:
    """The tools a turn's LLM request offers: the built-ins only alongside configured
    tools, so a bot without tools sends no tool list, and a model whose template renders
    tools sees the prompt it always did."""
    return offered_tools(bot) if bot.tools else []


def parse_arguments(call: ToolCall, schema: dict[str, Any]) -> dict[str, Any] | ToolFailure:
    """The call's arguments, checked against `schema`."""
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except json.JSONDecodeError as err:
        return ToolFailure(f"arguments are not JSON: {err}")
    if not isinstance(arguments, dict):
        return ToolFailure("arguments are not a JSON object")
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        return ToolFailure(f"{where}: {error.message}")
    return arguments


def fit_exchanges(messages: list[ChatItem]) -> list[ChatItem]:
    """`messages` with tool exchanges added, fitted again to the LLM's limits (history.py:
    64 messages, a tool exchange being two, 16000 characters): the oldest dialogue after
    the system prompt goes first; the caller's last turn and the exchanges stay."""
    def size(item: ChatItem) -> int:
        if isinstance(item, ToolExchange):
            return len(item.result_json) + len(item.call.arguments_json)
        return len(item[1])

    def count(items: list[ChatItem]) -> int:
        return sum(2 if isinstance(item, ToolExchange) else 1 for item in items)

    fitted = list(messages)
    first_exchange = next((i for i, item in enumerate(fitted)
                           if isinstance(item, ToolExchange)), len(fitted))
    # Keep the system prompt [0] and the caller's turn just before the first exchange.
    while first_exchange > 2 and (count(fitted) > MAX_MESSAGES or
                                  sum(size(item) for item in fitted) > MAX_TOTAL_CHARS):
        del fitted[1]
        first_exchange -= 1
    return fitted


class ToolRunner:
    def __init__(self, call_id: str, tools: Sequence[ToolConfig], base_url: str = "") -> None:
        self.call_id = call_id
        self.tools = {tool.name: tool for tool in tools}
        self.base_url = base_url  # for tools whose url is a path (BotConfig.tools_base_url)

    async def run(self, call: ToolCall) -> ToolSuccess | ToolFailure:
        """Run one configured tool; cancelling the task cancels the HTTP request."""
        tool = self.tools.get(call.name)
        if tool is None:
            return self._failed(call, ToolFailure(f"no tool named {call.name!r}"))
        arguments = parse_arguments(call, tool.parameters)
        if isinstance(arguments, ToolFailure):
            return self._failed(call, arguments)
        try:
            async with asyncio.timeout(tool.timeout_s):
                outcome = await self._post(tool, arguments)
        except TimeoutError:
            outcome = ToolFailure(f"no answer within {tool.timeout_s:g} s")
        except aiohttp.ClientError as err:
            outcome = ToolFailure(f"HTTP request failed: {err!r}")
        if isinstance(outcome, ToolFailure):
            return self._failed(call, outcome)
        log.info("Call %s tool %s(%s) -> %s", self.call_id, call.name, call.arguments_json,
                 outcome.result_json)
        return outcome

    async def _post(self, tool: ToolConfig, arguments: dict[str, Any]
                    ) -> ToolSuccess | ToolFailure:
        async with aiohttp.ClientSession() as session, \
                session.post(tool_url(self.base_url, tool.url), json=arguments) as response:
            if not 200 <= response.status < 300:
                return ToolFailure(f"HTTP {response.status}")
            body = await response.content.read(MAX_RESULT_BYTES + 1)
        if len(body) > MAX_RESULT_BYTES:
            return ToolFailure(f"the reply is over {MAX_RESULT_BYTES} bytes")
        try:
            result = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return ToolFailure("the reply is not JSON")
        # ensure_ascii off: "\u00e9" escapes could make a 4000-byte reply too long for
        # the LLM's 4000-character message limit.
        return ToolSuccess(json.dumps(result, separators=(",", ":"), ensure_ascii=False))

    def _failed(self, call: ToolCall, failure: ToolFailure) -> ToolFailure:
        log.warning("Call %s tool %s(%.200s) failed: %s", self.call_id, call.name,
                    call.arguments_json, failure.why)
        return failure
