"""The caller's turn as meant (llm_service/disfluency.py): fillers, restarts and lead-ins out,
numbers and meaning kept, never an empty turn. Pure text: no model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_service.disfluency import FILLERS, LEAD_INS, NUMBER_WORDS, TOKEN, clean_turn


@pytest.mark.parametrize(("heard", "meant"), [
    # fillers, with the commas that set them off
    ("Um, what time do you close?", "what time do you close?"),
    ("What are the, er, opening hours?", "What are the opening hours?"),
    ("Uhm I need, erm, a new card", "I need a new card"),
    ("Hmm... is the branch open?", "is the branch open?"),
    ("(um) what is the rate?", "what is the rate?"),
    # set-off "you know" / "I mean"; inside a clause they are words
    ("I lost my card, you know, on the bus.", "I lost my card, on the bus."),
    ("I mean, what are your hours?", "what are your hours?"),
    ("Do you know my balance?", "Do you know my balance?"),
    ("What I mean is the savings rate.", "What I mean is the savings rate."),
    # restarts: a repeated run of one to three words, a cut-off word
    ("Can, can I see my balance?", "can I see my balance?"),
    ("Where's the, where's the nearest branch?", "where's the nearest branch?"),
    ("I want to, I want to report a card", "I want to report a card"),
    ("Is it, um, is it open today?", "is it open today?"),
    ("wh- what's the interest rate", "what's the interest rate"),
    ("I'd like to, to, to send some money", "I'd like to send some money"),
    # lead-ins a speaker (or the recognizer) starts with, while two words remain
    ("Or hold on a moment.", "hold on a moment."),
    ("So, what's my balance?", "what's my balance?"),
    ("Well, okay, so how do I open an account?", "how do I open an account?"),
    ("Right, thanks for your help.", "thanks for your help."),
    ("Alright then.", "Alright then."),
    ("All right. So where's my nearest branch?", "where's my nearest branch?"),
    ("All right then.", "All right then."),
    ("ok. then.", "ok. then."),
    ("Well, thanks", "Well, thanks"),
    # words that only look like fillers stay
    ("Oh no, my card is gone.", "Oh no, my card is gone."),
    ("A follow-up question about twenty-five dollars", "A follow-up question about "
                                                       "twenty-five dollars"),
    # as it was when there is nothing to take out
    ("What is my balance?", "What is my balance?"),
    ("Can I send $500 today?", "Can I send $500 today?"),
    ("Is it 3.5% a year?", "Is it 3.5% a year?"),
])
def test_a_turn_as_meant(heard: str, meant: str):
    assert clean_turn(heard) == meant


@pytest.mark.parametrize("heard", ["Um.", "Hmm, er...", "er", "  uh, um  ", "You know.",
                                   "Okay.", "So.", "um um um"])
def test_a_turn_of_nothing_but_filler_is_kept_as_it_was(heard: str):
    assert clean_turn(heard) == heard.strip()


@pytest.mark.parametrize("heard", [
    "my account number is two two three three", "It's 4 4 7 1 9 0 2 3.",
    "oh seven seven one two three", "Send 10,000 dollars, 10,000.",
    "one one one, um, one one one", "double seven, double seven two", "twenty- twenty-five",
])
def test_numbers_are_never_dropped_nor_collapsed(heard: str):
    assert numbers(clean_turn(heard)) == numbers(heard)


def numbers(text: str) -> list[str]:
    """The number tokens of `text`: digits and number words, in order."""
    out = []
    for token in TOKEN.findall(text):
        key = token.lower().rstrip("-")
        if token[0].isdigit() or any(part in NUMBER_WORDS for part in key.split("-")):
            out.append(key)
    return out


# Words as a recognizer writes them: fillers, lead-ins, numbers, ordinary words, punctuation.
VOCABULARY = sorted(FILLERS) + sorted(LEAD_INS) + sorted(NUMBER_WORDS) + [
    "my", "card", "balance", "what's", "is", "the", "you", "know", "I", "mean", "open",
    "wh-", "account", "12", "3.5", "10,000", "$", "bye", "please", "hang", "on",
]
PUNCTUATION = [",", ".", "?", "...", " -", "!"]
turns = st.lists(st.tuples(st.sampled_from(VOCABULARY),
                           st.sampled_from(["", "", "", *PUNCTUATION])),
                 min_size=1, max_size=14).map(
    lambda words: " ".join(word + mark for word, mark in words))


@settings(max_examples=400, deadline=None)
@given(turns)
def test_never_empty_and_numbers_kept_whatever_the_turn(heard: str):
    meant = clean_turn(heard)
    assert any(ch.isalnum() for ch in meant) == any(ch.isalnum() for ch in heard)
    assert numbers(meant) == numbers(heard)
    assert clean_turn(meant) == meant  # nothing left to take out
