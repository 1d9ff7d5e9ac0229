"""One set of sentence rules: the core's streaming chunker and the TTS service's splitter
(voice_common.sentences) cut the same text at the same places."""

from __future__ import annotations

import pytest

from voice_common.sentences import SentenceChunker, split_sentences


def chunk_by_character(text: str) -> list[str]:
    chunker = SentenceChunker()
    out = [sentence for char in text for sentence in chunker.feed(char)]
    rest = chunker.flush()
    return [*out, rest] if rest else out


@pytest.mark.parametrize("text", [
    "Hello Mr. Smith, welcome back. How are you today? I am quite fine; thanks for asking!",
    "The U.S. Army met J. Smith at 3.14 p.m. today. See e.g. the manual for more.",
    "Your balance is one hundred dollars.\nIs there anything else I can do?",
    'He said "stop right there." Then he left the branch... And that was all of it',
])
def test_chunker_and_splitter_agree(text: str) -> None:
    # Each sentence here is long enough to be sent alone (MIN_CHUNK_CHARS).
    assert chunk_by_character(text) == split_sentences(text)


def test_chunker_joins_a_short_fragment_the_splitter_keeps() -> None:
    text = "Ok. Your card is blocked now."
    assert chunk_by_character(text) == ["Ok. Your card is blocked now."]
    assert split_sentences(text) == ["Ok.", "Your card is blocked now."]
