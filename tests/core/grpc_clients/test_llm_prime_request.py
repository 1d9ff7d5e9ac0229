"""The prime the core sends the LLM service (grpc_clients/llm_prime.py) is its bot's first
turn as a call sends it: core/bot.toml's system prompt with its knowledge, the greeting,
a caller's turn and the bot's tools, marked `prime`, one token."""

from __future__ import annotations

import pytest

from opensips_ai_core.config import BotConfig, load_bot_config
from opensips_ai_core.grpc_clients.llm_prime import CALL_ID, PRIME_TURN, prime_request
from opensips_ai_core.pipeline.history import History
from opensips_ai_core.pipeline.tools import request_tools
from voice_testkit.procs import ROOT
from voiceai.llm.v1 import llm_pb2


@pytest.fixture(scope="module")
def bot() -> BotConfig:
    return load_bot_config(ROOT / "core" / "bot.toml")


def test_the_prime_is_the_bots_first_turn_with_its_prompt_and_tools(bot: BotConfig) -> None:
    request = prime_request(bot)
    assert request.prime and request.call_id == CALL_ID
    assert request.params.max_new_tokens == 1
    system = request.messages[0]
    assert system.role == llm_pb2.ChatMessage.SYSTEM
    assert system.content == bot.llm_system_prompt()
    assert "\n\nFacts:\n- " in system.content  # the knowledge goes with it
    # What a call's first turn sends: the history with the greeting, then the caller.
    history = History(bot.llm_system_prompt(), bot.max_history_turns)
    history.add_assistant(bot.greeting)
    sent = [(m.role, m.content) for m in request.messages]
    roles = {"system": llm_pb2.ChatMessage.SYSTEM, "assistant": llm_pb2.ChatMessage.ASSISTANT,
             "user": llm_pb2.ChatMessage.USER}
    assert sent == [(roles[r], c) for r, c in history.for_llm(extra_user=PRIME_TURN)]
    # The tools a call's turns offer (pipeline/generation.py), the built-ins included.
    offered = [(t.name, t.description, t.parameters_json) for t in request.tools]
    assert offered == [(t.name, t.description, t.parameters_json) for t in request_tools(bot)]
    names = [t.name for t in request.tools]
    assert {tool.name for tool in bot.tools} <= set(names)
    assert {"transfer", "hang_up"} <= set(names)


def test_a_bot_without_tools_primes_without_any_as_its_calls_ask(bot: BotConfig) -> None:
    plain = bot.model_copy(update={"tools": []})
    request = prime_request(plain)
    assert list(request.tools) == [] == request_tools(plain)
    assert request.messages[0].content == plain.llm_system_prompt()
