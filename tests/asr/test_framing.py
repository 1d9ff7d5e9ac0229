"""The engines own the audio framing: what they recognise does not depend on how the
audio was chunked on the wire (the core's 40-100 ms) or joined by the servicer (a backlog
of up to 500 ms)."""

from __future__ import annotations

from pathlib import Path

from asr_service.engines.base import EventKind, FrameBuffer, StreamOptions
from asr_service.engines.pocketsphinx_engine import PocketsphinxEngine
from tests.asr.conftest import requires_espeak
from voice_testkit.speech import speech_pcm


def test_frame_buffer_keeps_every_byte_in_order() -> None:
    frames = FrameBuffer(4)
    data = bytes(range(23))
    out = frames.push(data[:3]) + frames.push(data[3:10]) + frames.push(data[10:])
    assert all(len(frame) == 4 for frame in out)
    assert b"".join(out) + frames.take_rest() == data
    assert frames.take_rest() == b""


@requires_espeak
def test_pocketsphinx_hears_the_same_whatever_the_chunking(speech_dir: Path) -> None:
    engine = PocketsphinxEngine(pool_size=1)
    engine.load()
    pcm = speech_pcm("please call my office tomorrow", "en-us", speech_dir, 8000,
                     "framing", words_per_minute=150)

    def events(chunk_bytes: int) -> list[tuple[EventKind, str]]:
        stream = engine.open_stream(StreamOptions(sample_rate_hz=8000, interim_results=False))
        out = []
        for offset in range(0, len(pcm), chunk_bytes):
            out += stream.accept(pcm[offset:offset + chunk_bytes])
        out += stream.finish()
        stream.close()
        return [(e.kind, e.text) for e in out]

    # 20 ms RTP frames, the core's 100 ms chunks, a 500 ms backlog, an odd size.
    results = [events(size) for size in (320, 1600, 8000, 1234)]
    assert any(kind is EventKind.FINAL and text for kind, text in results[0]), results[0]
    assert all(result == results[0] for result in results[1:]), results
