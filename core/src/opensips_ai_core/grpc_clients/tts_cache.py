"""The audio of sentences the bot says again and again, kept in the core.

A bot says its greeting, its prompts and the lines of its knowledge word for word, call
after call (the LLM service answers a question its knowledge covers with that line).
Synthesised once and kept here, they cost the TTS service nothing the next time and
play at once: with the default stack at 6 simultaneous calls, TTS was as much CPU as
speech recognition, most of it on such repeats (docs/benchmarks.md, the core's
benchmark). Bounded in bytes (least recently used out first); an entry expires after
`ttl_s`, so a TTS service restarted with another voice is heard within that time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# (text, voice, sample rate): what a synthesis depends on, as far as the core knows.
Key = tuple[str, str, int]


class AudioCache:
    def __init__(self, max_bytes: int, ttl_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[Key, tuple[float, tuple[bytes, ...]]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> tuple[bytes, ...] | None:
        """The chunks of a complete earlier synthesis, or None."""
        found = self._entries.get(key)
        if found is None:
            return None
        expires, chunks = found
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return chunks

    def put(self, key: Key, chunks: list[bytes]) -> None:
        """Keep a complete synthesis (one larger than the whole cache is not kept)."""
        size = sum(len(c) for c in chunks)
        if size == 0 or size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + self.ttl_s, tuple(chunks))
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: Key) -> None:
        _, chunks = self._entries.pop(key)
        self.bytes -= sum(len(c) for c in chunks)
