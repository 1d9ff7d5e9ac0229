"""ASR client: one streaming recognition session per call that survives ASR restarts.

Audio is pushed from the RTP receive path with `send()` (never blocks). A
background task keeps a `StreamingRecognize` stream open; if it breaks because
the service restarts, a new stream is opened with the same config and the audio
buffered meanwhile (bounded: the oldest is dropped first) is sent on it.
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


class AsrClient:
    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = open_channel(target)
        self.stub = asr_pb2_grpc.RecognizerStub(self.channel)

    def session(self, call_id: str, on_response: ResponseHandler, *, sample_rate: int = 8000,
                language: str = "", phrases: tuple[str, ...] = (),
                max_buffer_s: float = 10.0) -> AsrSession:
        config = asr_pb2.StreamingConfig(
            sample_rate_hz=sample_rate, language=language, interim_results=True,
            phrases=list(phrases), call_id=call_id)
        return AsrSession(self, config, on_response, max_buffer_s=max_buffer_s)

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
                 on_response: ResponseHandler, *, max_buffer_s: float) -> None:
        self.client = client
        self.config = config
        self.on_response = on_response
        bytes_per_s = config.sample_rate_hz * 2
        self.max_buffered = int(max_buffer_s * bytes_per_s)
        # (arrival time, audio): the time maps the stream's audio offsets onto the clock.
        self._pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self._pending_bytes = 0
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

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closed:
            call = self.client.stub.StreamingRecognize(self._requests(), wait_for_ready=True)
            try:
                async for response in call:
                    backoff = 0.1
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
