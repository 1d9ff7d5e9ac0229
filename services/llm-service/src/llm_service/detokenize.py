"""Turn a growing list of token ids into text deltas, and cut the text at stop strings.

Token pieces are not text: a byte-level token may hold half of a UTF-8 character,
and SentencePiece-style tokenizers merge or drop spaces depending on the
neighbouring token. So each step decodes a short window of recent tokens twice
(with and without the new ones) and emits the difference, holding text back while
it ends in an incomplete character (U+FFFD). This is the offset scheme vLLM and
text-generation-inference use: linear time, exact output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

REPLACEMENT_CHAR = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Feed token ids one at a time; get back the new text each made final."""

    def __init__(self, tokenizer: Decoder | Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0  # window start: context for spacing rules
        self._read_offset = 0  # tokens before this one are already emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(REPLACEMENT_CHAR):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full[len(prefix) :]
        return ""

    def flush(self) -> str:
        """What is still held back at the end (an incomplete character shows as U+FFFD)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full[len(prefix) :] if len(full) > len(prefix) else ""


class StopStringFilter:
    """Pass text through until a stop string appears; the stop string is not emitted.

    Text that could be the start of a stop string is held back until the next
    piece shows whether it is one.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped or not self._stops:
            return "" if self.stopped else text
        buffer = self._held + text
        cut = min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), 0, -1):
                if buffer.endswith(stop[:length]):
                    keep = max(keep, length)
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        held, self._held = ("" if self.stopped else self._held), ""
        return held


class SentenceLimit:
    """Pass text through until `count` sentences have ended; drop what follows.

    A sentence ends at ".", "!" or "?" followed by white space, so "1,250.40" or
    "a.m" inside a word do not count; the end shows only with the next piece, which
    is then cut at the boundary. 0: no limit.
    """

    def __init__(self, count: int) -> None:
        self._count = count
        self._ended = 0
        self._last = ""  # the previous piece's last character
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped or self._count <= 0 or not text:
            return "" if self.stopped else text
        previous = self._last
        self._last = text[-1]
        for index, char in enumerate(text):
            before = text[index - 1] if index else previous
            if char.isspace() and before in ".!?":
                self._ended += 1
                if self._ended >= self._count:
                    self.stopped = True
                    return text[:index]
        return text
