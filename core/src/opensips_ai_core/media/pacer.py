"""The outbound RTP pacer: one packet every 20 ms, on a clock, for one call.

Deadlines are computed from the start time (`start + n * 20 ms` on the event
loop's monotonic clock), not by sleeping 20 ms after each packet, so the small
lateness of every wake-up does not add up into drift. If the loop was blocked
for more than a few frames the pacer does not burst the missed packets out
(the far end's jitter buffer would overflow); it advances the RTP timestamp
by the missed time and restarts its clock from now.

Each tick does no more than encode one frame (a table lookup) and send one
datagram, so the pacers of many calls share one event loop without delaying
each other; anything heavy belongs in a thread.

The RTP clock keeps running while nothing is said (silence frames are sent)
and on hold (nothing is sent, but the timestamp advances and queued audio is
consumed in real time, so `wait_idle()` never waits for a resume that may not
come).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from opensips_ai_core.media.g711 import Codec
from opensips_ai_core.media.pcm import PcmArray, as_pcm16
from opensips_ai_core.media.rtp import RtpPacket, seq_add, ts_add

log = logging.getLogger(__name__)

FRAME_MS = 20
# Lateness (in frames) after which the pacer resyncs its clock instead of catching up.
MAX_LATE_FRAMES = 4





class RtpPacer:
    """Paces one call's outbound audio as RTP.

    `send(datagram)` is called from the event loop for every packet. All
    methods must be called from the event loop's thread.
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
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._send_error_logged = False

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
        self._queue.append(samples.copy())
        self._queued += samples.size
        self._idle.clear()

    def clear(self) -> None:
        """Barge-in: drop everything queued; the next frame sent is silence."""
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

    # --- the task ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rtp-pacer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # asyncio.wait neither raises the task's CancelledError nor swallows our own.
            await asyncio.wait([task])
        self.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        frame = self.frame_ms / 1000.0
        start = loop.time()
        n = 0
        try:
            while True:
                deadline = start + n * frame
                late = loop.time() - deadline
                if late > self.max_late_frames * frame:
                    # The loop was blocked: skip the missed frames rather than burst them.
                    missed = int(late / frame)
                    self.timestamp = ts_add(self.timestamp, missed * self.frame_samples)
                    self.resyncs += 1
                    # Once per call: a loop that keeps blocking would otherwise flood the log.
                    if self.resyncs == 1:
                        log.warning("RTP pacer was %.0f ms late (the event loop was blocked); "
                                    "resynced its clock (logged once per call, see resyncs)",
                                    late * 1000)
                    start = loop.time()
                    n = 0
                elif late < 0:
                    await asyncio.sleep(-late)
                self._tick()
                n += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("RTP pacer stopped by an unexpected error")
            self._idle.set()
            raise

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
            if pcm is not None and not self._talkspurt_announced:
                self._talkspurt_announced = True
                self._fire_talkspurt_start()
        self.timestamp = ts_add(self.timestamp, self.frame_samples)
        if pcm is not None and not self._queued:
            self._idle.set()

    def _fire_talkspurt_start(self) -> None:
        if self._on_talkspurt_start is None:
            return
        try:
            self._on_talkspurt_start()
        except Exception:
            log.exception("on_talkspurt_start callback failed")
