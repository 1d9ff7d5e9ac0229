"""The core's reply chunker: `voice_common.sentences.SentenceChunker` (one set of sentence
rules for the core and the TTS service), with the reply's first clause as its first chunk.

The caller hears nothing until the LLM has written the first chunk and TTS has
synthesized it, and both grow with its length: "I'm sorry for any misunderstanding, but
as a telephone assistant, I ..." (SmolLM2) is 25 tokens, ~2 s of generation on a busy
2-core machine, before its first audio. So the first chunk ends at the first clause
boundary (a comma, colon or dash and a space) once it has `FIRST_CLAUSE_MIN_WORDS`
words, the rest of the reply goes by whole sentences. A reply that arrives at once (a
knowledge line) is cut the same way only when at least three words follow the clause
(`split_first_clause`, the rule the TTS service applies to a request's first sentence).
"""

from __future__ import annotations

import re

from voice_common.sentences import (
    CLAUSE_BOUNDARY,
    MIN_REST_WORDS,
    SentenceChunker,
    split_first_clause,
)

__all__ = ["FIRST_CLAUSE_MIN_WORDS", "ReplyChunker", "SentenceChunker"]

FIRST_CLAUSE_MIN_WORDS = 3
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")


class ReplyChunker:
    """Streamed reply text in, chunks for TTS out: the first clause, then sentences."""

    def __init__(self, min_words: int = FIRST_CLAUSE_MIN_WORDS) -> None:
        self.min_words = min_words
        self._head = ""  # the reply until its first chunk is out
        self._first_out = False
        self._rest = SentenceChunker()

    def feed(self, delta: str) -> list[str]:
        if self._first_out:
            return self._rest.feed(delta)
        self._head += delta
        probe = SentenceChunker()
        sentences = probe.feed(self._head)
        if sentences:
            # A whole sentence (or more) is here: cut its first clause if the rest is long.
            self._first_out = True
            first = split_first_clause(sentences[0], min_words=self.min_words)
            return [*first, *sentences[1:], *self._rest.feed(probe.flush())]
        clause = self._first_clause(self._head)
        if clause is None:
            return []
        self._first_out = True
        head, tail = self._head[:clause].strip(), self._head[clause:]
        return [head, *self._rest.feed(tail)]

    def flush(self) -> str:
        """The unfinished rest at the end of the stream."""
        if not self._first_out:
            rest, self._head = self._head.strip(), ""
            return rest
        return self._rest.flush()

    def _first_clause(self, text: str) -> int | None:
        """Where the first clause of `text` ends (after its boundary's space), or None:
        no boundary yet, or the clause is shorter than `min_words`. Only a clause whose
        next word has begun is cut, so a reply that ends at the comma stays whole."""
        # CLAUSE_BOUNDARY needs the space after the comma: "1,250" is no boundary.
        for match in CLAUSE_BOUNDARY.finditer(text):
            tail = text[match.end():].strip()
            if len(text[:match.start()].split()) < self.min_words or not tail:
                continue
            if _SENTENCE_END.search(tail) and len(tail.split()) < MIN_REST_WORDS:
                return None  # "..., any day.": as split_first_clause, too short to cut off
            return match.end()
        return None
