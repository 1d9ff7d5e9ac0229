"""The debug output of a stream's audio: a summary per SUMMARY_AUDIO_S of audio, not a line
per chunk.

A live call sends a chunk every 20-40 ms; a DEBUG line for each engine call was 1500 lines
a minute per call, and buried the events (speech start, pause, final, end of turn), which
stay one line each (servicer.py, the engines). A summary line says what the chunks did:

    audio 5.0-10.0 s: 250 chunks, 80000 bytes, 250 engine calls (41.3 ms, max 2.1 ms),
    backlog max 0 chunks, level max -14 dBFS

and the stream's end gives its totals. The lines fall on the audio's own clock (seconds of
audio received), so a stream sent faster than real time gets as many as a live one.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from voice_common.devlogger import DevelopmentLogger

# Seconds of a stream's audio one summary line covers.
SUMMARY_AUDIO_S = 5.0
# The level of digital silence (an all-zero chunk), in dBFS.
SILENCE_DBFS = -120.0


def level_dbfs(pcm: bytes) -> float:
    """The RMS level of PCM16 audio, in dB relative to full scale."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    if not samples.size:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(samples * samples))) / 32768.0
    return max(SILENCE_DBFS, 20.0 * math.log10(rms)) if rms > 0 else SILENCE_DBFS


class _Window:
    """What the chunks of one summary (or of the whole stream) did."""

    def __init__(self) -> None:
        self.chunks = 0
        self.bytes = 0
        self.engine_calls = 0
        self.engine_ms = 0.0
        self.max_engine_ms = 0.0
        self.max_backlog = 0
        self.max_level = SILENCE_DBFS

    def add_batch(self, chunks: int, pcm: bytes, backlog: int, level: float) -> None:
        self.chunks += chunks
        self.bytes += len(pcm)
        self.max_backlog = max(self.max_backlog, backlog)
        self.max_level = max(self.max_level, level)

    def add_engine_call(self, ms: float) -> None:
        self.engine_calls += 1
        self.engine_ms += ms
        self.max_engine_ms = max(self.max_engine_ms, ms)

    def describe(self) -> str:
        return (f"{self.chunks} chunks, {self.bytes} bytes, {self.engine_calls} engine calls "
                f"({self.engine_ms:.1f} ms, max {self.max_engine_ms:.1f} ms), "
                f"backlog max {self.max_backlog} chunks, level max {self.max_level:.0f} dBFS")


class StreamSummary:
    """Counts one stream's audio and logs it on `log` every `every_s` seconds of audio.

    Costs an attribute check per chunk when the debug output is off."""

    def __init__(self, log: DevelopmentLogger, sample_rate_hz: int,
                 every_s: float = SUMMARY_AUDIO_S) -> None:
        self.log = log
        self.on = log.development and log.isEnabledFor(logging.DEBUG)
        self.bytes_per_s = 2 * sample_rate_hz
        self.every_bytes = max(2, int(every_s * self.bytes_per_s))
        self.window = _Window()
        self.total = _Window()
        self._window_start = 0  # bytes of audio before the current window
        self._ended = False

    def batch(self, chunks: int, pcm: bytes, backlog: int) -> None:
        """Audio handed to the engine: `chunks` requests joined into `pcm`, `backlog`
        requests still queued behind it."""
        if not self.on:
            return
        level = level_dbfs(pcm)
        self.window.add_batch(chunks, pcm, backlog, level)
        self.total.add_batch(chunks, pcm, backlog, level)

    def engine_call(self, ms: float) -> None:
        """An engine call (accept or finish) took `ms`; a line when the window is full."""
        if not self.on:
            return
        self.window.add_engine_call(ms)
        self.total.add_engine_call(ms)
        if self.window.bytes >= self.every_bytes:
            self._flush()

    def end(self, how: str) -> None:
        """The stream ended (`how`: "finished", "cancelled", an error): the rest and the
        totals. Once."""
        if not self.on or self._ended:
            return
        self._ended = True
        if self.window.chunks or self.window.engine_calls:
            self._flush()
        self.log.debug_output("stream %s: %.1f s of audio: %s", how,
                              self.total.bytes / self.bytes_per_s, self.total.describe())

    def _flush(self) -> None:
        start = self._window_start / self.bytes_per_s
        end = (self._window_start + self.window.bytes) / self.bytes_per_s
        self.log.debug_output("audio %.1f-%.1f s: %s", start, end, self.window.describe())
        self._window_start += self.window.bytes
        self.window = _Window()
