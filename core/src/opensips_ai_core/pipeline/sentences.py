"""Split a stream of LLM text deltas into sentences for TTS, as early as possible.

The first sentence is handed to TTS as soon as it is complete, so the caller
hears the start of the reply while the LLM is still writing the rest.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? (and closing quotes/brackets) followed by whitespace.
_END = re.compile(r"[.!?…]+[\"')\]]*\s")
# Words that end with a period but do not end a sentence.
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "no.", "e.g.", "i.e.", "etc.",
                            "vs.", "approx.", "jr.", "sr."})
MIN_CHARS = 12      # never send a tiny fragment like "Hi." alone unless it is all there is
MAX_CHARS = 200     # a clause this long is cut at a comma so TTS can start


class SentenceChunker:
    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """Add text; return the sentences it completed (possibly none)."""
        self._buffer += delta
        out: list[str] = []
        start = 0
        for match in _END.finditer(self._buffer):
            end = match.end()
            candidate = self._buffer[start:end].strip()
            last_word = candidate.rsplit(None, 1)[-1].lower() if candidate else ""
            if last_word in _ABBREVIATIONS or len(candidate) < MIN_CHARS:
                continue
            out.append(candidate)
            start = end
        self._buffer = self._buffer[start:]
        if len(self._buffer) > MAX_CHARS:
            cut = self._buffer.rfind(", ", 0, MAX_CHARS)
            if cut > MIN_CHARS:
                out.append(self._buffer[: cut + 1].strip())
                self._buffer = self._buffer[cut + 2:]
        return out

    def flush(self) -> str:
        """The unfinished rest at the end of the stream."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest
