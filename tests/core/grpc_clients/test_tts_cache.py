"""The core's cache of synthesised sentences (grpc_clients/tts_cache.py), on its own and
in the TTS client against the real TTS service (Piper) on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from opensips_ai_core.grpc_clients.tts import TtsClient
from opensips_ai_core.grpc_clients.tts_cache import AudioCache
from voice_testkit.stack import Service, service, stop


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_least_recently_used_goes_first_past_the_bound() -> None:
    cache = AudioCache(max_bytes=10)
    cache.put(("a", "", 8000), [b"1234"])
    cache.put(("b", "", 8000), [b"12", b"34"])
    assert cache.get(("a", "", 8000)) == (b"1234",)  # "a" is now the most recent
    cache.put(("c", "", 8000), [b"1234"])
    assert cache.get(("b", "", 8000)) is None
    assert cache.get(("a", "", 8000)) == (b"1234",)
    assert cache.get(("c", "", 8000)) == (b"1234",)
    assert cache.bytes == 8


def test_the_key_is_the_text_the_voice_and_the_rate() -> None:
    cache = AudioCache(max_bytes=100)
    cache.put(("hello", "", 8000), [b"x"])
    assert cache.get(("hello", "piper:other", 8000)) is None
    assert cache.get(("hello", "", 16000)) is None
    assert cache.get(("Hello", "", 8000)) is None


def test_an_entry_expires_and_an_oversized_or_empty_one_is_not_kept() -> None:
    clock = Clock()
    cache = AudioCache(max_bytes=8, ttl_s=60, clock=clock)
    cache.put(("a", "", 8000), [b"12"])
    clock.now = 59.0
    assert cache.get(("a", "", 8000)) == (b"12",)
    clock.now = 60.0
    assert cache.get(("a", "", 8000)) is None
    assert (len(cache), cache.bytes) == (0, 0)
    cache.put(("big", "", 8000), [b"123456789"])
    cache.put(("empty", "", 8000), [])
    assert len(cache) == 0


def test_a_replaced_entry_is_counted_once() -> None:
    cache = AudioCache(max_bytes=100)
    cache.put(("a", "", 8000), [b"1234"])
    cache.put(("a", "", 8000), [b"12"])
    assert (len(cache), cache.bytes) == (1, 2)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_sentence_said_before_plays_without_the_service(tmp_path: Path) -> None:
    """Complete syntheses are kept; one closed part-way is not; with the service stopped,
    the kept sentence still plays (the same audio) and any other fails as before."""
    said = "Our branches are open Monday to Friday from 9 am to 5 pm."
    other = "If your card is lost or stolen, freeze it in the app."

    async def run(target: str, tts: Service) -> tuple[bytes, bytes, bytes, str]:
        client = TtsClient(target, timeout_s=5, cache_bytes=1024 * 1024)
        try:
            first = b"".join([pcm async for pcm in client.synthesize(said, call_id="cache-first")])
            again = b"".join([pcm async for pcm in client.synthesize(said, call_id="cache-again")])
            partial = client.synthesize(other, call_id="cache-cut")
            cut = await anext(partial)
            await partial.aclose()  # a barge-in: the rest is never heard
            await asyncio.to_thread(stop, tts)
            cached = b"".join([pcm async for pcm in client.synthesize(said, call_id="cache-stopped")])
            try:
                _ = [pcm async for pcm in client.synthesize(other, call_id="cache-other")]
                failure = ""
            except grpc.aio.AioRpcError as err:
                failure = err.code().name
            assert cut
            return first, again, cached, failure
        finally:
            await client.close()

    with service("tts", tmp_path) as tts:
        first, again, cached, failure = asyncio.run(run(tts.target, tts))
        log = tts.log_path.read_text(errors="replace")  # stopped: its whole log
    assert len(first) > 8000  # half a second of 8 kHz PCM16 at least
    assert again == first and cached == first
    # The service synthesised the sentence once: the second and third came from the cache.
    assert '"call_id": "cache-first"' in log, log[-3000:]
    assert "cache-again" not in log and "cache-stopped" not in log, log[-3000:]
    assert failure in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
