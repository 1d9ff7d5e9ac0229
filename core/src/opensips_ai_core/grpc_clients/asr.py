"""ASR client: one streaming recognition session per call that survives ASR restarts.

Audio is pushed from the RTP receive path with `send()` (never blocks). A
background task keeps a `StreamingRecognize` stream open; if it breaks because
the service restarts, a new stream is opened with the same config and the audio
buffered meanwhile (bounded: the oldest is dropped first) is sent on it. The audio
already sent since the last final is kept too (same bound): when the break handler
asks for it, the utterance in progress is sent again first, so that it is recognised
on the new stream instead of lost with the old one.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from opensips_ai_core.grpc_clients.channel import is_retryable, open_channel
from voice_common import get_development_logger
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

log = get_development_logger(__name__)

ResponseHandler = Callable[[asr_pb2.RecognizeResponse], Awaitable[None]]
# The stream broke: True to send the utterance in progress again on the reopened one.
BreakHandler = Callable[[grpc.aio.AioRpcError], bool]


class AsrClient:
    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = open_channel(target)
        self.stub = asr_pb2_grpc.RecognizerStub(self.channel)

    def session(self, call_id: str, on_response: ResponseHandler, *, sample_rate: int = 8000,
                language: str = "", phrases: tuple[str, ...] = (),
                on_break: BreakHandler | None = None,
                max_buffer_s: float = 10.0) -> AsrSession:
        config = asr_pb2.StreamingConfig(
            sample_rate_hz=sample_rate, language=language, interim_results=True,
            phrases=list(phrases), call_id=call_id)
        return AsrSession(self, config, on_response, on_break=on_break,
                          max_buffer_s=max_buffer_s)

    async def close(self) -> None:
        await self.channel.close()


# The core owns the size of the chunks on the wire, and only that (the ASR engines frame
# the audio for their decoders whatever its chunking): at least 40 ms (two RTP frames),
# since each gRPC message holds the GIL for a while, and at one message per frame they
# were the core's largest cost with ten calls (profiled). The recognizer hears it at
# most 20 ms later.
MIN_CHUNK_S = 0.04
# ... and of at most 100 ms: joined small frames, split large parts. 100 ms is 3200 bytes
# at 16 kHz, far under the contract's 32000-byte limit whatever the RTP packet size.
MAX_CHUNK_S = 0.1


class AsrSession:
    """The call's recognition stream; reopened transparently when it breaks."""

    def __init__(self, client: AsrClient, config: asr_pb2.StreamingConfig,
                 on_response: ResponseHandler, *, max_buffer_s: float,
                 on_break: BreakHandler | None = None) -> None:
        self.client = client
        self.config = config
        self.on_response = on_response
        self.on_break = on_break
        bytes_per_s = config.sample_rate_hz * 2
        self.max_buffered = int(max_buffer_s * bytes_per_s)
        # (arrival time, audio): the time maps the stream's audio offsets onto the clock.
        self._pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self._pending_bytes = 0
        # What the current stream was sent since its last final: (offset, arrival, audio).
        self._sent: collections.deque[tuple[int, float, bytes]] = collections.deque()
        self._sent_bytes = 0  # the current stream's audio offset, in bytes
        self.replayed_bytes = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.dropped_bytes = 0
        # time.perf_counter() at which the current stream's audio offset 0 arrived.
        self.epoch: float | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"asr:{self.config.call_id}")

    def send(self, pcm16: bytes) -> None:
        """Queue audio for recognition (called from the RTP path; never blocks)."""
        if self._closed or not pcm16:
            return
        self._pending.append((time.perf_counter(), pcm16))
        self._pending_bytes += len(pcm16)
        while self._pending_bytes > self.max_buffered:
            _, old = self._pending.popleft()
            self._pending_bytes -= len(old)
            self.dropped_bytes += len(old)
        self._wakeup.set()

    async def _requests(self) -> AsyncIterator[asr_pb2.RecognizeRequest]:
        yield asr_pb2.RecognizeRequest(config=self.config)
        first = True
        min_bytes = int(self.config.sample_rate_hz * 2 * MIN_CHUNK_S)
        while not self._closed:
            if self._pending_bytes < min_bytes:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            chunk = self._next_chunk()
            if first:
                self.epoch, first = chunk[0], False
                self._sent.clear()
                self._sent_bytes = 0
            self._keep_sent(chunk)
            yield asr_pb2.RecognizeRequest(audio=chunk[1])

    def _next_chunk(self) -> tuple[float, bytes]:
        """Up to MAX_CHUNK_S of the pending audio, with the arrival time of its start: small
        RTP frames are joined and a large part is split, so that no chunk exceeds the
        service's limit (a 16001-byte G.711 payload is 32002 bytes of PCM16, over the
        contract's 32000: the service refused it and the stream died)."""
        limit = int(self.config.sample_rate_hz * 2 * MAX_CHUNK_S)
        chunk = bytearray()
        started = self._pending[0][0]
        while self._pending and len(chunk) < limit:
            arrived, part = self._pending.popleft()
            room = limit - len(chunk)
            if len(part) > room:
                room -= room % 2  # whole PCM16 samples
                self._pending.appendleft((arrived, part[room:]))
                part = part[:room]
            self._pending_bytes -= len(part)
            chunk += part
        return started, bytes(chunk)

    def _keep_sent(self, chunk: tuple[float, bytes]) -> None:
        self._sent.append((self._sent_bytes, *chunk))
        self._sent_bytes += len(chunk[1])
        while len(self._sent) > 1 and self._sent_bytes - self._sent[0][0] > self.max_buffered:
            self._sent.popleft()

    def _heard_up_to(self, final: asr_pb2.Transcript) -> None:
        """A final: the audio it covered needs no replay (all of it when the engine gives
        no end offset)."""
        if final.audio_end_s <= 0:
            self._sent.clear()
            return
        end = int(final.audio_end_s * self.config.sample_rate_hz) * 2
        while self._sent and self._sent[0][0] + len(self._sent[0][2]) <= end:
            self._sent.popleft()

    def _broke(self, err: grpc.aio.AioRpcError) -> None:
        """Ask the handler whether the utterance in progress goes again, ahead of the
        audio buffered since the break."""
        replay = self.on_break is not None and self.on_break(err)
        sent, self._sent = list(self._sent), collections.deque()
        if not replay:
            return
        for _, arrived, audio in reversed(sent):
            self._pending.appendleft((arrived, audio))
            self._pending_bytes += len(audio)
            self.replayed_bytes += len(audio)
        self._wakeup.set()

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closed:
            call = self.client.stub.StreamingRecognize(self._requests(), wait_for_ready=True)
            try:
                async for response in call:
                    backoff = 0.1
                    if response.WhichOneof("result") == "final":
                        self._heard_up_to(response.final)
                    await self.on_response(response)
                return  # the server ended the stream after our half-close
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as err:
                if self._closed:
                    return
                if not is_retryable(err) and err.code() != grpc.StatusCode.CANCELLED:
                    log.error("ASR stream of %s failed: %s %s", self.config.call_id,
                              err.code().name, err.details())
                    # Refused input or an engine error: retrying the same stream cannot help
                    # unless the service restarted; back off longer.
                    backoff = 2.0
                self.reconnects += 1
                try:
                    self._broke(err)
                except Exception:
                    log.exception("ASR break handler of %s", self.config.call_id)
                log.warning("ASR stream of %s broke (%s); reopening in %.1f s, %d bytes buffered",
                            self.config.call_id, err.code().name, backoff, self._pending_bytes)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            except Exception:
                log.exception("ASR session close")
