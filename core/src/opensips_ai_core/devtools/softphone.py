"""The caller's phone for development, tests and benchmarks: the audio side of a call.

`RtpPeer` waits for the greeting to end, plays an utterance as paced PCMU/PCMA RTP
(and RFC 4733 DTMF), records the bot's reply and measures the turn latency: from the
last frame of the utterance to the first non-silent reply packet. Signalling is
`devtools.sip_uac` (dialling the core's direct SIP port) or someone else's (OpenSIPS).
`synthesize` / `transcribe` make the caller's speech and read the bot's with the
TTS / ASR services.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import secrets
import struct
import time
from dataclasses import dataclass

import numpy as np

from opensips_ai_core.media.dtmf import DTMF_EVENTS, TelephoneEvent
from opensips_ai_core.media.g711 import codec_by_name
from opensips_ai_core.media.rtp import RtpPacket, seq_add, ts_add

FRAME = 160            # 20 ms at 8 kHz
FRAME_S = 0.02
SPEECH_RMS = 300.0     # a frame louder than this is speech, quieter is silence
SIOCGSTAMPNS = 0x8907  # Linux: the kernel's receive time of a socket's last datagram


def rms(pcm: np.ndarray) -> float:
    if pcm.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


@dataclass
class ReceivedFrame:
    at: float
    pcm: np.ndarray
    marker: bool


@dataclass
class TurnResult:
    utterance_end: float
    first_reply_at: float | None
    reply: np.ndarray
    transcript: str = ""

    @property
    def latency_s(self) -> float | None:
        if self.first_reply_at is None:
            return None
        return self.first_reply_at - self.utterance_end


class RtpPeer(asyncio.DatagramProtocol):
    """The caller's phone: sends paced audio (silence by default), records what comes back."""

    def __init__(self, codec: str = "PCMU", payload_type: int = 0) -> None:
        self.codec = codec_by_name(codec)
        self.payload_type = payload_type
        self.transport: asyncio.DatagramTransport | None = None
        self._fileno: int | None = None
        self.remote: tuple[str, int] | None = None
        self.frames: list[ReceivedFrame] = []
        self.sent = 0
        self._outgoing: list[np.ndarray] = []
        self._dtmf: list[tuple[bytes, bool]] = []  # (payload type + event, starts an event)
        self._seq = secrets.randbelow(1 << 16)
        self._ts = secrets.randbelow(1 << 32)
        self._ssrc = secrets.randbelow(1 << 32)
        self._task: asyncio.Task[None] | None = None
        self._queue_empty = asyncio.Event()
        self._queue_empty.set()
        self._dtmf_sent = asyncio.Event()
        self._dtmf_sent.set()
        self.sending = True

    def set_codec(self, codec: str, payload_type: int) -> None:
        """The codec the offer/answer chose (an answerer opens its port before it knows)."""
        self.codec = codec_by_name(codec)
        self.payload_type = payload_type

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    async def open(self, host: str = "127.0.0.1") -> RtpPeer:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        # Linux turns receive timestamps on for the whole stack from a work queue, after
        # the first SIOCGSTAMPNS (connection_made) returns: a datagram that arrives before
        # that work ran is not stamped, and the ioctl answers "now". Give it a moment so
        # the first packet of a call is stamped on arrival too (seen on a busy machine).
        if self._fileno is not None:
            await asyncio.sleep(0.1)
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        self._fileno = sock.fileno() if sock is not None else None
        if self._fileno is not None:
            # The first SIOCGSTAMPNS turns stamping on (and fails: nothing received yet);
            # asking now means the first datagram is stamped too.
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fileno, SIOCGSTAMPNS, bytes(16))

    def _arrival_time(self) -> float:
        """When the kernel received the datagram being handled (time.monotonic's clock).

        asyncio reads one datagram per callback, so SIOCGSTAMPNS names this one. Jitter is
        then the sender's and the network's, not this process's scheduling (the callers
        share the CPU with the system they measure). time.monotonic() where unsupported.
        """
        if self._fileno is not None:
            try:
                raw = fcntl.ioctl(self._fileno, SIOCGSTAMPNS, bytes(16))
                seconds, nanoseconds = struct.unpack("qq", raw)
                return seconds + nanoseconds / 1e9 - (time.time() - time.monotonic())
            except OSError:
                self._fileno = None
        return time.monotonic()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        at = self._arrival_time()
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        if packet.payload_type != self.payload_type:
            return
        self.frames.append(ReceivedFrame(at, self.codec.decode(packet.payload), packet.marker))

    def start(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        if self._task is None:
            self._task = asyncio.create_task(self._pace())

    def play(self, pcm: np.ndarray) -> None:
        """Queue PCM16 8 kHz audio to send after what is already queued."""
        pcm = np.asarray(pcm, dtype=np.int16)
        pad = (-len(pcm)) % FRAME
        if pad:
            pcm = np.concatenate([pcm, np.zeros(pad, np.int16)])
        self._outgoing.extend(pcm.reshape(-1, FRAME))
        self._queue_empty.clear()

    def send_dtmf(self, digit: str, payload_type: int = 101) -> None:
        """An RFC 4733 event: 3 start packets, then 3 end packets (as phones do)."""
        for i, end in ((1, False), (2, False), (3, False), (4, True), (4, True), (4, True)):
            event = TelephoneEvent(event=DTMF_EVENTS.index(digit), end=end, volume=10,
                                   duration=i * FRAME)
            self._dtmf.append((bytes([payload_type]) + event.serialize(), i == 1))
        self._dtmf_sent.clear()

    async def key_in(self, digits: str, payload_type: int = 101) -> float:
        """Key `digits` in, one RFC 4733 event each, back to back; returns when the last
        packet went out (the caller's end of input, as `wait_played` is for speech)."""
        unknown = sorted(set(digits) - set(DTMF_EVENTS))
        if unknown:
            raise ValueError(f"not DTMF keys: {''.join(unknown)!r} (keys: {DTMF_EVENTS})")
        for digit in digits:
            self.send_dtmf(digit, payload_type)
        await self._dtmf_sent.wait()
        return time.monotonic()

    async def wait_played(self) -> float:
        """Until the queued audio has been sent; returns when the last frame went out."""
        await self._queue_empty.wait()
        return time.monotonic()

    async def _pace(self) -> None:
        start = time.monotonic()
        n = 0
        dtmf_ts: int | None = None
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_S - time.monotonic()))
            if self.transport is None or self.remote is None or not self.sending:
                continue
            if self._dtmf:
                raw, starts = self._dtmf.pop(0)
                if starts or dtmf_ts is None:
                    # Every key press is its own event, with its own RTP timestamp.
                    dtmf_ts = self._ts
                    self._ts = ts_add(self._ts, 4 * FRAME)
                packet = RtpPacket(payload_type=raw[0], sequence_number=self._seq,
                                   timestamp=dtmf_ts, ssrc=self._ssrc, payload=raw[1:],
                                   marker=starts)
                if not self._dtmf:
                    self._dtmf_sent.set()
            else:
                frame = self._outgoing.pop(0) if self._outgoing else np.zeros(FRAME, np.int16)
                if not self._outgoing:
                    self._queue_empty.set()
                packet = RtpPacket(payload_type=self.payload_type, sequence_number=self._seq,
                                   timestamp=self._ts, ssrc=self._ssrc,
                                   payload=self.codec.encode(frame))
                self._ts = ts_add(self._ts, FRAME)
            self._seq = seq_add(self._seq, 1)
            self.transport.sendto(packet.serialize(), self.remote)
            self.sent += 1

    def speech_frames_after(self, since: float) -> list[ReceivedFrame]:
        return [f for f in self.frames if f.at >= since and rms(f.pcm) >= SPEECH_RMS]

    async def wait_for_speech(self, since: float, timeout: float) -> float | None:
        """Time of the first non-silent frame received after `since`, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames = self.speech_frames_after(since)
            if frames:
                return frames[0].at
            await asyncio.sleep(0.01)
        return None

    async def wait_for_silence(self, since: float, quiet_s: float, timeout: float) -> float:
        """After speech started, wait until `quiet_s` passed without speech; returns then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            speech = self.speech_frames_after(since)
            last = speech[-1].at if speech else since
            if time.monotonic() - last >= quiet_s:
                return last
            await asyncio.sleep(0.02)
        return time.monotonic()

    def audio_between(self, start: float, end: float) -> np.ndarray:
        chunks = [f.pcm for f in self.frames if start <= f.at <= end]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.transport is not None:
            self.transport.close()


async def transcribe(asr_target: str, pcm: np.ndarray, sample_rate: int = 8000,
                     timeout: float = 60.0) -> str:
    """Final transcripts of `pcm` from the ASR service, joined."""
    import grpc

    from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

    async def requests():
        yield asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(
            sample_rate_hz=sample_rate, interim_results=False))
        data = np.asarray(pcm, dtype="<i2").tobytes()
        step = sample_rate // 5 * 2
        for i in range(0, len(data), step):
            yield asr_pb2.RecognizeRequest(audio=data[i:i + step])

    async with grpc.aio.insecure_channel(asr_target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        texts = []
        async for response in stub.StreamingRecognize(requests(), timeout=timeout):
            if response.HasField("final") and response.final.text.strip():
                texts.append(response.final.text.strip())
        return " ".join(texts)


async def synthesize(tts_target: str, text: str, sample_rate: int = 8000,
                     timeout: float = 60.0) -> np.ndarray:
    """PCM16 of `text` from the TTS service."""
    import grpc

    from voiceai.tts.v1 import tts_pb2, tts_pb2_grpc

    async with grpc.aio.insecure_channel(tts_target) as channel:
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        chunks = [c.audio async for c in stub.Synthesize(
            tts_pb2.SynthesizeRequest(text=text, sample_rate_hz=sample_rate), timeout=timeout)]
    return np.frombuffer(b"".join(chunks), dtype="<i2").copy()


async def listen_after(peer: RtpPeer, end: float, *, reply_timeout: float = 30.0,
                       quiet_s: float = 1.0) -> TurnResult:
    """The bot's reply to input that ended at `end`, recorded until it goes quiet."""
    first = await peer.wait_for_speech(end, reply_timeout)
    if first is None:
        return TurnResult(end, None, np.zeros(0, np.int16))
    last = await peer.wait_for_silence(first, quiet_s, reply_timeout)
    return TurnResult(end, first, peer.audio_between(first - 0.05, last + 0.05))


async def key_and_listen(peer: RtpPeer, digits: str, *, reply_timeout: float = 30.0,
                         quiet_s: float = 1.0) -> TurnResult:
    """Key `digits` in (RFC 4733), then wait for the bot's reply and record it."""
    end = await peer.key_in(digits)
    return await listen_after(peer, end, reply_timeout=reply_timeout, quiet_s=quiet_s)


async def speak_and_listen(peer: RtpPeer, utterance: np.ndarray, *, reply_timeout: float = 30.0,
                           quiet_s: float = 1.0) -> TurnResult:
    """Play `utterance`, then wait for the bot's reply and record it until it goes quiet."""
    peer.play(utterance)
    end = await peer.wait_played()
    return await listen_after(peer, end, reply_timeout=reply_timeout, quiet_s=quiet_s)
