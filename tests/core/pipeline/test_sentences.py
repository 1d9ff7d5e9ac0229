"""The sentence chunker hands TTS whole sentences as soon as they are complete."""

from __future__ import annotations

from opensips_ai_core.pipeline.sentences import ReplyChunker, SentenceChunker


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


def reply_chunks(deltas: list[str]) -> list[str]:
    chunker = ReplyChunker()
    out: list[str] = []
    for delta in deltas:
        out += chunker.feed(delta)
    rest = chunker.flush()
    return [*out, rest] if rest else out


def test_a_streamed_reply_starts_with_its_first_clause():
    """The first chunk goes to TTS at the first clause boundary (3 words or more); the
    rest of the reply goes by whole sentences."""
    chunker = ReplyChunker()
    assert chunker.feed("I'm sorry for any misunderstanding,") == []  # the next word: not yet
    assert chunker.feed(" but as a") == ["I'm sorry for any misunderstanding,"]
    assert chunker.feed(" bank, I can't. Is there") == ["but as a bank, I can't."]
    assert chunker.flush() == "Is there"
    text = ("Our branches are open Monday to Friday from 9 am to 5 pm, and Saturday from "
            "9 am to noon. Anything else?")
    expected = ["Our branches are open Monday to Friday from 9 am to 5 pm,",
                "and Saturday from 9 am to noon.", "Anything else?"]
    assert reply_chunks(list(text)) == expected
    # Arriving at once (a knowledge line): the same chunks.
    assert reply_chunks([text]) == expected


def test_short_first_clauses_and_numbers_stay_whole():
    assert reply_chunks(list("One moment, please.")) == ["One moment, please."]
    assert reply_chunks(["Yes, of course."]) == ["Yes, of course."]
    assert reply_chunks(list("Your balance is 1,250.40 dollars. Bye.")) == [
        "Your balance is 1,250.40 dollars.", "Bye."]
    # At once, a clause with fewer than three words after it is not cut.
    assert reply_chunks(["You can reach us by phone, any day."]) == [
        "You can reach us by phone, any day."]
    assert reply_chunks(list("Thank you for calling")) == ["Thank you for calling"]
