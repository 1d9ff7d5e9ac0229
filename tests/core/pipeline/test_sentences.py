"""The sentence chunker hands TTS whole sentences as soon as they are complete."""

from __future__ import annotations

from opensips_ai_core.pipeline.sentences import SentenceChunker


def feed_all(deltas: list[str]) -> list[str]:
    chunker = SentenceChunker()
    out: list[str] = []
    for delta in deltas:
        out += chunker.feed(delta)
    rest = chunker.flush()
    return [*out, rest] if rest else out


def test_first_sentence_is_released_before_the_stream_ends():
    chunker = SentenceChunker()
    assert chunker.feed("Your balance is ") == []
    assert chunker.feed("one hundred dollars. Anything") == ["Your balance is one hundred dollars."]
    assert chunker.feed(" else?") == []  # no whitespace after '?' yet: maybe more follows
    assert chunker.flush() == "Anything else?"


def test_token_sized_deltas_split_like_whole_text():
    text = "We open at nine. We close at five! Can I help with anything else? Thanks"
    by_char = feed_all(list(text))
    assert by_char == ["We open at nine.", "We close at five!",
                       "Can I help with anything else?", "Thanks"]
    assert feed_all([text]) == by_char


def test_abbreviations_and_short_fragments_do_not_split():
    out = feed_all(["Dr. Smith will call you back. Ok. ", "Bye now."])
    assert out == ["Dr. Smith will call you back.", "Ok. Bye now."]


def test_long_clause_is_cut_at_a_comma():
    long = "word " * 30 + ", " + "more " * 20
    out = feed_all([long])
    assert len(out) == 2
    assert out[0].endswith(",")


def test_empty_stream():
    assert feed_all([]) == []
    assert feed_all(["   "]) == []
