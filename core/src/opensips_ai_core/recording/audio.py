"""A call's audio as a stereo WAV: the caller left, the bot right, on one timeline.

The taps sit where the audio already flows: the caller's decoded RTP frames
(`RtpSession.inbound_tap`, on the event loop) and the bot's frames as the pacer sends
them (`RtpPacer.tap`, on the media clock's thread). A tap only appends (arrival time,
RTP timestamp, SSRC, samples) to a list, bounded in samples; where each frame goes is
worked out when the call has ended, in a worker thread (`render`).

A frame is placed by its RTP timestamp, the media clock of its stream, anchored at the
arrival time of the stream's first frame: the caller's silences (silence suppression
sends nothing, but the timestamps go on), the bot's pauses and a stalled pacer's
skipped frames all keep their length, and network jitter moves nothing. A new SSRC, or
a stream whose timestamps stray more than RESYNC_S from its arrival times, is anchored
again. Times are `time.perf_counter()` seconds, as the call's transcript uses, from
the call's start (`t0`): the WAV's offset 0 is the transcript's 0.
"""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from opensips_ai_core import metrics

SAMPLE_RATE = 8000
RESYNC_S = 1.0
CALLER, BOT = 0, 1

Frame = tuple[float, int, int, npt.NDArray[np.int16]]  # (perf_counter, RTP ts, SSRC, pcm)


class Track:
    """One channel's frames as they came; bounded to `max_samples`."""

    def __init__(self, max_samples: int) -> None:
        self.frames: list[Frame] = []
        self.max_samples = max_samples
        self.samples = 0
        self.dropped = 0

    def add(self, timestamp: int, ssrc: int, pcm: npt.NDArray[np.int16]) -> None:
        at = time.perf_counter()
        if self.samples + pcm.size > self.max_samples:
            self.dropped += pcm.size
            return
        self.samples += pcm.size
        self.frames.append((at, timestamp, ssrc, pcm))


class CallRecorder:
    """The two tracks of one call, from `t0` (time.perf_counter) on."""

    def __init__(self, t0: float, max_s: float) -> None:
        self.t0 = t0
        limit = int(max_s * SAMPLE_RATE)
        self.caller = Track(limit)
        self.bot = Track(limit)
        self.ended: float | None = None

    # The taps: as little work as possible (the bot's runs on the media clock's thread).
    def on_caller_frame(self, timestamp: int, ssrc: int, pcm: npt.NDArray[np.int16]) -> None:
        self.caller.add(timestamp, ssrc, pcm)

    def on_bot_frame(self, timestamp: int, ssrc: int, pcm: npt.NDArray[np.int16]) -> None:
        self.bot.add(timestamp, ssrc, pcm.copy())

    def end(self) -> None:
        """The call is over: nothing is added after this, the recording lasts until now."""
        if self.ended is None:
            self.ended = time.perf_counter()

    def render(self) -> npt.NDArray[np.int16]:
        """(samples, 2) PCM16: caller left, bot right (in a worker thread, after `end`)."""
        end = self.ended if self.ended is not None else time.perf_counter()
        dropped = self.caller.dropped + self.bot.dropped
        if dropped:
            metrics.RECORDING_DROPPED_SAMPLES.inc(dropped)
        placed = [list(place(self.caller.frames, self.t0)), list(place(self.bot.frames, self.t0))]
        length = max([round((end - self.t0) * SAMPLE_RATE)]
                     + [pos + pcm.size for track in placed for pos, pcm in track])
        out = np.zeros((max(0, length), 2), dtype=np.int16)
        for channel, track in enumerate(placed):
            for pos, pcm in track:
                start = max(0, pos)
                if start >= length:
                    continue
                chunk = pcm[start - pos:length - pos]
                out[start:start + chunk.size, channel] = chunk
        return out

    def wav_bytes(self) -> bytes:
        return wav_bytes(self.render())


def place(frames: Iterable[Frame], t0: float) -> Iterable[tuple[int, npt.NDArray[np.int16]]]:
    """(sample offset from t0, pcm) of each frame, by its RTP timestamp (module docstring)."""
    resync = int(RESYNC_S * SAMPLE_RATE)
    anchor: tuple[int, int, int] | None = None  # (ssrc, RTP timestamp, sample offset)
    for at, timestamp, ssrc, pcm in frames:
        arrival = round((at - t0) * SAMPLE_RATE)
        pos: int | None = None
        if anchor is not None and anchor[0] == ssrc:
            delta = (timestamp - anchor[1]) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            pos = anchor[2] + delta
            if abs(pos - arrival) > resync:
                pos = None
        if pos is None:
            anchor = (ssrc, timestamp, arrival)
            pos = arrival
        yield pos, pcm


def wav_bytes(stereo: npt.NDArray[np.int16]) -> bytes:
    """A 8 kHz 16-bit WAV file of (samples, channels) PCM."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(stereo.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(stereo.astype("<i2", copy=False).tobytes())
    return buffer.getvalue()
