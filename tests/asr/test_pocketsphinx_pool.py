"""pocketsphinx decoders are pooled between streams: one caller's audio must not change
what the next caller's stream hears (the live cepstral mean adapts to each line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_service.engines.base import EventKind, StreamOptions
from asr_service.engines.pocketsphinx_engine import PocketsphinxEngine
from tests.asr.conftest import requires_espeak
from voice_testkit.speech import speech_pcm

pytestmark = requires_espeak


def finals(engine: PocketsphinxEngine, pcm: bytes) -> list[str]:
    stream = engine.open_stream(StreamOptions(sample_rate_hz=16000, interim_results=True))
    events = []
    for i in range(0, len(pcm), 640):
        events += stream.accept(pcm[i:i + 640])
    events += stream.finish()
    stream.close()
    return [e.text for e in events if e.kind is EventKind.FINAL]


def test_a_pooled_decoder_starts_like_a_fresh_one(speech_dir: Path) -> None:
    engine = PocketsphinxEngine(pool_size=1)
    engine.load()
    hello = speech_pcm("hello world, please call my office tomorrow", "en-us", speech_dir,
                       16000, "pool-hello", words_per_minute=150)
    first = finals(engine, hello)
    pooled = engine._idle[0]
    # A loud, droning line: the cepstral mean moves far from speech.
    t = np.arange(16000 * 3) / 16000
    drone = (12000 * np.sin(2 * np.pi * 120 * t)).astype("<i2").tobytes()
    finals(engine, drone)
    assert engine._idle == [pooled]  # the same decoder served all three streams
    assert finals(engine, hello) == first
