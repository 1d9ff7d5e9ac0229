"""The outbound RTP pacer: one packet every 20 ms, on a clock, for one call.

Deadlines are computed from the start time (`start + n * 20 ms` on the monotonic
clock), not by sleeping 20 ms after each packet, so the small lateness of every
wake-up does not add up into drift. If the process was stalled for more than a
few frames the pacer does not burst the missed packets out (the far end's jitter
buffer would overflow); it advances the RTP timestamp by the missed time and
restarts its clock from now.

Ticks run on the media clock's thread (clock.py), not on the event loop, so no
call's packets wait for the loop's work. Each tick does no more than encode one
frame (a table lookup) and send one datagram. The queue is shared with the loop
under a lock; what the loop waits for (idle, talkspurt start) is handed back to
it with call_soon_threadsafe.

The RTP clock keeps running while nothing is said (silence frames are sent)
and on hold (nothing is sent, but the timestamp advances and queued audio is
consumed in real time, so `wait_idle()` never waits for a resume that may not
come).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from opensips_ai_core.media.clock import MediaClock
from opensips_ai_core.media.g711 import Codec
from opensips_ai_core.media.pcm import PcmArray, as_pcm16
from opensips_ai_core.media.rtp import RtpPacket, seq_add, ts_add

log = logging.getLogger(__name__)

FRAME_MS = 20
# Lateness (in frames) after which the pacer resyncs its clock instead of catching up.
MAX_LATE_FRAMES = 4





class RtpPacer:
    """Paces one call's outbound audio as RTP.

    `send(datagram)` is called from the media clock's thread for every packet, so it
    must be thread-safe (a plain socket's sendto is). The other methods are called
    from the event loop's thread; `on_talkspurt_start` runs there too.
    """

    def __init__(
        self,
        codec: Codec,
        send: Callable[[bytes], None],
        *,
        payload_type: int | None = None,
        on_talkspurt_start: Callable[[], None] | None = None,
        ssrc: int | None = None,
        sequence_number: int | None = None,
        timestamp: int | None = None,
        frame_ms: int = FRAME_MS,
        max_late_frames: int = MAX_LATE_FRAMES,
    ) -> None:
        self._send = send
        self._on_talkspurt_start = on_talkspurt_start
        # Random initial values (RFC 3550 5.1) so streams of different calls cannot be confused.
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.sequence_number = secrets.randbits(16) if sequence_number is None else sequence_number
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp
        self.frame_ms = frame_ms
        self.max_late_frames = max_late_frames
        self.set_codec(codec, payload_type)

        self._queue: deque[PcmArray] = deque()
        self._head_offset = 0          # samples of _queue[0] already sent
        self._queued = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_talkspurt = False      # audio (not silence) is being sent
        self._talkspurt_announced = False
        self._marker_next = True        # first packet of the stream, or after a resume
        self._sending = True
        self._lock = threading.Lock()   # the queue, shared with the clock thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: MediaClock | None = None
        self._start = 0.0
        self._frames = 0
        self._closed = False
        self._send_error_logged = False

        # The call's recording (recording/audio.py): each audio frame sent, with its RTP
        # timestamp and SSRC. On the clock thread: it must only append.
        self.tap: Callable[[int, int, PcmArray], None] | None = None

        self.packets_sent = 0
        self.bytes_sent = 0
        self.resyncs = 0

    # --- configuration -------------------------------------------------------------------

    def set_codec(self, codec: Codec, payload_type: int | None = None) -> None:
        """Use `codec` (and the negotiated payload type) from the next frame on."""
        self.codec = codec
        self.payload_type = codec.payload_type if payload_type is None else payload_type
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload_type must be 0..127, got {self.payload_type}")
        self.frame_samples = codec.clock_rate * self.frame_ms // 1000
        self._silence = codec.silence(self.frame_samples)

    def set_sending(self, sending: bool) -> None:
        """Hold (False): send nothing at all. Resume (True): send again, marker set."""
        if sending and not self._sending:
            self._marker_next = True
            self._talkspurt_announced = False
        self._sending = sending

    @property
    def sending(self) -> bool:
        return self._sending

    # --- the outbound audio queue --------------------------------------------------------

    def enqueue(self, pcm: npt.ArrayLike | bytes) -> None:
        """Queue PCM16 audio at the codec's clock rate (8 kHz) to be sent after what is queued."""
        samples = as_pcm16(pcm, copy=True)
        if samples.size == 0 or self._closed:
            return
        with self._lock:
            self._queue.append(samples.copy())
            self._queued += samples.size
            self._idle.clear()

    def clear(self) -> None:
        """Barge-in: drop everything queued; the next frame sent is silence."""
        with self._lock:
            self._queue.clear()
            self._head_offset = 0
            self._queued = 0
            self._idle.set()

    @property
    def queued_samples(self) -> int:
        return self._queued

    @property
    def is_speaking(self) -> bool:
        return self._queued > 0

    async def wait_idle(self) -> None:
        """Return once all queued audio has been sent (or cleared, or the pacer stopped)."""
        await self._idle.wait()

    # --- the clock -----------------------------------------------------------------------

    def start(self, clock: MediaClock | None = None) -> None:
        if self._clock is None and not self._closed:
            self._loop = asyncio.get_running_loop()
            self._clock = clock if clock is not None else MediaClock.shared()
            self._start = time.monotonic()
            self._frames = 0
            self._clock.add(self, self._start)

    @property
    def running(self) -> bool:
        return self._clock is not None and not self._closed

    async def stop(self) -> None:
        self._closed = True
        clock, self._clock = self._clock, None
        if clock is not None:
            clock.remove(self)
        with self._lock:  # a tick in progress on the clock thread ends first
            pass
        self.clear()

    def on_clock(self, now: float) -> float | None:
        """The media clock's call: send the frame that is due; the next frame's time."""
        if self._closed:
            return None
        frame = self.frame_ms / 1000.0
        late = now - (self._start + self._frames * frame)
        if late > self.max_late_frames * frame:
            # The process was stalled: skip the missed frames rather than burst them.
            missed = int(late / frame + 1e-9)  # 0.38 / 0.02 is 18.999... in floats
            self.timestamp = ts_add(self.timestamp, missed * self.frame_samples)
            self.resyncs += 1
            # Once per call: a machine that keeps stalling would otherwise flood the log.
            if self.resyncs == 1:
                log.warning("RTP pacer was %.0f ms late (the process was stalled); "
                            "resynced its clock (logged once per call, see resyncs)",
                            late * 1000)
            self._start = now
            self._frames = 0
        try:
            with self._lock:
                if self._closed:
                    return None
                self._tick()
        except Exception:
            log.exception("RTP pacer stopped by an unexpected error")
            self._to_loop(self._idle.set)
            return None
        self._frames += 1
        return self._start + self._frames * frame

    def _to_loop(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop closed meanwhile, nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback)

    def _take_frame(self) -> PcmArray | None:
        if not self._queued:
            return None
        need = self.frame_samples
        parts: list[PcmArray] = []
        while need and self._queue:
            head = self._queue[0]
            chunk = head[self._head_offset:self._head_offset + need]
            parts.append(chunk)
            need -= chunk.size
            self._head_offset += chunk.size
            if self._head_offset >= head.size:
                self._queue.popleft()
                self._head_offset = 0
        taken = self.frame_samples - need
        self._queued -= taken
        if need:  # the end of an utterance: pad the last frame with silence
            parts.append(np.zeros(need, dtype=np.int16))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _tick(self) -> None:
        """One frame time: take 20 ms of audio (or silence), send it unless on hold."""
        pcm = self._take_frame()
        if pcm is None:
            payload = self._silence
            talkspurt_start = False
            self._in_talkspurt = False
        else:
            payload = self.codec.encode(pcm)
            talkspurt_start = not self._in_talkspurt
            self._in_talkspurt = True
            if talkspurt_start:
                self._talkspurt_announced = False
        if self._sending:
            marker = talkspurt_start or self._marker_next
            self._marker_next = False
            packet = RtpPacket(
                payload_type=self.payload_type,
                sequence_number=self.sequence_number,
                timestamp=self.timestamp,
                ssrc=self.ssrc,
                payload=payload,
                marker=marker,
            ).serialize()
            try:
                self._send(packet)
            except OSError as exc:
                if not self._send_error_logged:
                    log.warning("RTP send failed (logged once per call): %s", exc)
                    self._send_error_logged = True
            self.sequence_number = seq_add(self.sequence_number, 1)
            self.packets_sent += 1
            self.bytes_sent += len(packet)
            if pcm is not None and self.tap is not None:
                self._record(pcm)
            if pcm is not None and not self._talkspurt_announced:
                self._talkspurt_announced = True
                self._to_loop(self._fire_talkspurt_start)
        self.timestamp = ts_add(self.timestamp, self.frame_samples)
        if pcm is not None and not self._queued:
            self._to_loop(self._set_idle_if_empty)

    def _record(self, pcm: PcmArray) -> None:
        """The frame to the call's recording; a failing recording stops, the call goes on."""
        try:
            assert self.tap is not None
            self.tap(self.timestamp, self.ssrc, pcm)
        except Exception:
            self.tap = None
            log.exception("The call's recording failed and stops (the call goes on)")

    def _set_idle_if_empty(self) -> None:
        # On the loop, later: audio queued since the clock thread saw the queue empty wins.
        if not self._queued:
            self._idle.set()

    def _fire_talkspurt_start(self) -> None:
        if self._on_talkspurt_start is None:
            return
        try:
            self._on_talkspurt_start()
        except Exception:
            log.exception("on_talkspurt_start callback failed")
