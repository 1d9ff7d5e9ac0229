"""A scripted SIP caller for development, tests and benchmarks.

It dials the core's direct SIP port (or only speaks RTP, when signalling is done
by someone else), waits for the greeting to end, plays an utterance as paced
PCMU/PCMA RTP, records the bot's reply and measures the turn latency: from the
last frame of the utterance to the first non-silent reply packet. A minimal UAC
(INVITE/ACK/BYE, answering the bot's BYE) is enough here; the core's UAS is the
thing under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import re
import secrets
import struct
import time
from dataclasses import dataclass, field

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
        self.sending = True

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    async def open(self, host: str = "127.0.0.1") -> RtpPeer:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
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


SDP_TEMPLATE = (
    "v=0\r\no=caller {sid} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP {pts} 101\r\n{rtpmaps}"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\na=ptime:20\r\n"
)
RTPMAP = {"PCMU": "a=rtpmap:0 PCMU/8000\r\n", "PCMA": "a=rtpmap:8 PCMA/8000\r\n"}
PT = {"PCMU": 0, "PCMA": 8}


def make_sdp(ip: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
             direction: str = "sendrecv") -> str:
    return SDP_TEMPLATE.format(sid=secrets.randbelow(10**9), ip=ip, port=port,
                               pts=" ".join(str(PT[c]) for c in codecs),
                               rtpmaps="".join(RTPMAP[c] for c in codecs), direction=direction)


def parse_media_address(sdp: str) -> tuple[str, int, int]:
    """(ip, port, first payload type) of the first audio m-line of an SDP."""
    ip = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
    media = re.search(r"^m=audio (\d+) \S+ (\d+)", sdp, re.M)
    if ip is None or media is None:
        raise ValueError(f"no audio address in SDP: {sdp!r}")
    return ip.group(1), int(media.group(1)), int(media.group(2))


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: str


@dataclass
class SipRequest:
    method: str
    uri: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]] = field(default_factory=list)


def parse_sip(data: bytes) -> SipResponse | SipRequest | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    raw: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            raw.append((name.strip(), value.strip()))
    headers = {name.lower(): value for name, value in raw}
    first = lines[0].split(" ", 2)
    if first[0] == "SIP/2.0" and len(first) >= 2:
        return SipResponse(int(first[1]), first[2] if len(first) > 2 else "", headers, body)
    if len(first) == 3:
        return SipRequest(first[0], first[1], headers, raw)
    return None


class SipCaller(asyncio.DatagramProtocol):
    """A minimal UAC: one call, INVITE/ACK/BYE, answers the far end's BYE with 200."""

    def __init__(self, target: tuple[str, int], local_ip: str = "127.0.0.1",
                 user: str = "ai") -> None:
        self.target = target
        self.local_ip = local_ip
        self.uri = f"sip:{user}@{target[0]}:{target[1]}"
        self.call_id = f"{secrets.token_hex(8)}@{local_ip}"
        self.tag = secrets.token_hex(4)
        self.remote_tag = ""
        self.cseq = 1
        self.transport: asyncio.DatagramTransport | None = None
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.bye_received = asyncio.Event()
        self.remote_contact = self.uri

    async def open(self) -> SipCaller:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.local_ip, 0))
        return self

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_sip(data)
        if isinstance(message, SipResponse):
            self.responses.put_nowait(message)
        elif isinstance(message, SipRequest):
            self._answer(message, addr)

    def _answer(self, request: SipRequest, addr: tuple[str, int]) -> None:
        status = "200 OK" if request.method in ("BYE", "OPTIONS", "INVITE") else "405 Not Allowed"
        if request.method == "ACK":
            return
        lines = [f"SIP/2.0 {status}"]
        for name, value in request.raw_headers:
            if name.lower() in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"):
                lines.append(f"{name}: {value}")
        lines.append("Content-Length: 0")
        assert self.transport is not None
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)
        if request.method == "BYE":
            self.bye_received.set()

    def _request(self, method: str, cseq: int, body: str = "", to_tag: str = "",
                 in_dialog: bool = False) -> bytes:
        uri = self.uri if method == "INVITE" and not in_dialog else self.remote_contact
        to = f"<{self.uri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local_ip}:{self.port}"
            f";branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:caller@{self.local_ip}>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:caller@{self.local_ip}:{self.port}>",
            "User-Agent: opensips-ai-devcaller",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    async def invite(self, sdp: str, timeout: float = 30.0) -> SipResponse:
        """Send INVITE (retransmitted per T1 until a response), ACK a final response."""
        assert self.transport is not None
        message = self._request("INVITE", self.cseq, sdp)
        deadline = time.monotonic() + timeout
        interval, provisional = 0.5, False
        while True:
            if not provisional:
                self.transport.sendto(message, self.target)
            try:
                response = await asyncio.wait_for(self.responses.get(), interval)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError("no final response to INVITE") from None
                interval = min(interval * 2, 4.0)
                continue
            if response.status < 200:
                provisional = True
                continue
            self.remote_tag = _tag(response.headers.get("to", ""))
            contact = re.search(r"<([^>]+)>", response.headers.get("contact", ""))
            if contact:
                self.remote_contact = contact.group(1)
            if response.status >= 200:
                self.transport.sendto(self._request("ACK", self.cseq, to_tag=self.remote_tag),
                                      self.target)
            return response

    async def reinvite(self, sdp: str, timeout: float = 10.0) -> SipResponse:
        """A re-INVITE in the dialog (hold/resume); ACKs the final response."""
        assert self.transport is not None
        self.cseq += 1
        self.transport.sendto(self._request("INVITE", self.cseq, sdp, to_tag=self.remote_tag,
                                            in_dialog=True), self.target)
        while True:
            response = await asyncio.wait_for(self.responses.get(), timeout)
            if response.status >= 200 and response.headers.get("cseq", "").endswith("INVITE"):
                self.transport.sendto(self._request("ACK", self.cseq, to_tag=self.remote_tag),
                                      self.target)
                return response

    async def bye(self, timeout: float = 5.0) -> int | None:
        if self.bye_received.is_set():
            return None
        assert self.transport is not None
        self.cseq += 1
        self.transport.sendto(self._request("BYE", self.cseq, to_tag=self.remote_tag),
                              self.target)
        try:
            while True:
                response = await asyncio.wait_for(self.responses.get(), timeout)
                if response.headers.get("cseq", "").endswith("BYE"):
                    return response.status
        except TimeoutError:
            return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _tag(header: str) -> str:
    match = re.search(r";\s*tag=([^;>\s]+)", header)
    return match.group(1) if match else ""


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


async def speak_and_listen(peer: RtpPeer, utterance: np.ndarray, *, reply_timeout: float = 30.0,
                           quiet_s: float = 1.0) -> TurnResult:
    """Play `utterance`, then wait for the bot's reply and record it until it goes quiet."""
    peer.play(utterance)
    end = await peer.wait_played()
    first = await peer.wait_for_speech(end, reply_timeout)
    if first is None:
        return TurnResult(end, None, np.zeros(0, np.int16))
    last = await peer.wait_for_silence(first, quiet_s, reply_timeout)
    return TurnResult(end, first, peer.audio_between(first - 0.05, last + 0.05))
