"""The audio of sentences the bot says again and again, kept in the core.

A bot says its greeting, its prompts and the lines of its knowledge word for word, call
after call (the LLM service answers a question its knowledge covers with that line).
Synthesised once and kept here, they cost the TTS service nothing the next time and
play at once: with the default stack at 6 simultaneous calls, TTS was as much CPU as
speech recognition, most of it on such repeats (docs/benchmarks.md, the core's
benchmark). Bounded in bytes (least recently used out first); an entry expires after
`ttl_s`, so a TTS service restarted with another voice is heard within that time.
The bound, the order and the expiry are cachetools' TTLCache, sized by the audio's bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

# (text, voice, sample rate): what a synthesis depends on, as far as the core knows.
Key = tuple[str, str, int]
# One synthesis: its PCM chunks in order (named apart from AudioCache.bytes, the size).
Pcm = bytes
Chunks = tuple[Pcm, ...]


def _audio_bytes(chunks: Chunks) -> int:
    return sum(len(c) for c in chunks)


class AudioCache:
    def __init__(self, max_bytes: int, ttl_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._entries: TTLCache[Key, Chunks] = TTLCache(
            maxsize=max_bytes, ttl=ttl_s, timer=clock, getsizeof=_audio_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The audio kept, in bytes (expired entries no longer counted)."""
        return int(self._entries.currsize)

    def get(self, key: Key) -> Chunks | None:
        """The chunks of a complete earlier synthesis, or None."""
        return self._entries.get(key)

    def put(self, key: Key, chunks: list[Pcm]) -> None:
        """Keep a complete synthesis (one larger than the whole cache is not kept)."""
        kept = tuple(chunks)
        size = _audio_bytes(kept)
        if size == 0 or size > self.max_bytes:
            return
        self._entries[key] = kept
