"""The Recognizer gRPC servicer: validates the stream, feeds an engine, streams results back.

Engines are CPU-bound and synchronous, so every engine call runs in a thread pool
with one worker per allowed stream: a stream never waits for another stream's
work and the event loop never waits for any. Calls for one stream are serialised
by a per-stream lock, so closing a cancelled stream waits for its last chunk.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc

from asr_service.engines import Engine, EngineStream, EventKind, RecognitionEvent, StreamOptions
from asr_service.settings import AsrSettings
from asr_service.validation import (
    InvalidRequestError,
    check_audio,
    check_config,
    first_request_config,
)
from voice_common.devlogger import get_development_logger
from voice_common.logs import call_id_var
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

log = logging.getLogger("asr_service.servicer")
results_log = get_development_logger("asr_service.results")

T = TypeVar("T")


class StreamSession:
    """One client stream's engine recognizer, only ever touched by one thread at a time."""

    def __init__(self, engine: Engine, options: StreamOptions, pool: ThreadPoolExecutor) -> None:
        self.engine = engine
        self.options = options
        self.pool = pool
        self._lock = threading.Lock()
        self._stream: EngineStream | None = None
        self._closed = False

    def _open_locked(self) -> None:
        with self._lock:
            if not self._closed:
                self._stream = self.engine.open_stream(self.options)

    def _timed_locked(self, work: Callable[[EngineStream], T]) -> tuple[T, float]:
        with self._lock:
            if self._stream is None:
                raise RuntimeError("recognizer is closed")
            started = time.perf_counter()
            result = work(self._stream)
            ended = time.perf_counter()
        results_log.debug_performance(f"asr_engine[{self.options.call_id}]", started, ended)
        return result, (ended - started) * 1000.0

    def _close_locked(self) -> None:
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:
                log.exception("closing a %s recognizer failed", self.engine.name)

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.pool, self._open_locked)

    async def accept(self, chunk: bytes) -> tuple[list[RecognitionEvent], float]:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, self._timed_locked, lambda stream: stream.accept(chunk))

    async def finish(self) -> tuple[list[RecognitionEvent], float]:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, self._timed_locked, lambda stream: stream.finish())

    def close_soon(self) -> None:
        """Close in the pool without waiting (safe from a cancelled coroutine's finally)."""
        try:
            self.pool.submit(self._close_locked)
        except RuntimeError:  # pool already shut down at process exit
            self._close_locked()


class RecognizerServicer(asr_pb2_grpc.RecognizerServicer):
    def __init__(self, engine: Engine, settings: AsrSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=settings.max_concurrent_streams,
                                       thread_name_prefix="asr-stream")
        self.active_streams = 0

    async def warm_up(self) -> None:
        """Load the model (health turns SERVING only after this returns)."""
        log.info("engine %s: %s", self.engine.name, self.engine.describe())
        started = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(self.pool, self.engine.load)
        log.info("engine %s loaded in %.0f ms: %s", self.engine.name,
                 (time.perf_counter() - started) * 1000, self.engine.describe())

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()

    async def StreamingRecognize(  # noqa: N802 - the gRPC method name
        self,
        request_iterator: AsyncIterator[asr_pb2.RecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[asr_pb2.RecognizeResponse]:
        limit = self.settings.max_concurrent_streams
        if self.active_streams >= limit:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many concurrent streams: limit {limit} (ASR_MAX_CONCURRENT_STREAMS)",
            )
        self.active_streams += 1
        session: StreamSession | None = None
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None:
                return
            try:
                config = first_request_config(first)
                check_config(config, self.settings)
            except InvalidRequestError as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            call_id_var.set(config.call_id or None)
            options = StreamOptions(
                sample_rate_hz=config.sample_rate_hz,
                interim_results=config.interim_results,
                phrases=tuple(config.phrases),
                show_words=self.settings.show_words,
                language=config.language,
                call_id=config.call_id,
            )
            log.debug("stream opened: %d Hz, interim %s, %d phrases", options.sample_rate_hz,
                      options.interim_results, len(options.phrases))
            session = StreamSession(self.engine, options, self.pool)
            try:
                await session.open()
            except Exception as err:
                if not options.phrases:
                    raise
                # Only a phrase list differs between streams: it is what the engine refused.
                log.warning("phrase list refused by %s: %s", self.engine.name, err)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"the phrase list cannot be compiled by {self.engine.name}: "
                                    f"{err}")
            async for request in request_iterator:
                kind = request.WhichOneof("request")
                try:
                    if kind == "config":
                        raise InvalidRequestError("a second StreamingConfig was sent: only the "
                                             "first request may carry the config")
                    if kind != "audio":
                        raise InvalidRequestError("a request carries neither config nor audio")
                    check_audio(request.audio, self.settings)
                except InvalidRequestError as err:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
                if not request.audio:
                    continue
                events, processing_ms = await session.accept(request.audio)
                for response in self._responses(events, processing_ms):
                    yield response
            # The client half-closed: flush the utterance in progress before ending the RPC.
            events, processing_ms = await session.finish()
            for response in self._responses(events, processing_ms):
                yield response
        finally:
            self.active_streams -= 1
            if session is not None:
                session.close_soon()

    def _responses(self, events: Iterable[RecognitionEvent],
                   processing_ms: float) -> Iterable[asr_pb2.RecognizeResponse]:
        engine = self.engine.name
        for event in events:
            if event.kind in (EventKind.SPEECH_START, EventKind.SPEECH_END):
                kind = (asr_pb2.SpeechEvent.SPEECH_START if event.kind is EventKind.SPEECH_START
                        else asr_pb2.SpeechEvent.SPEECH_END)
                if self.settings.enable_debug:
                    results_log.info("%s at %.2f s", event.kind.name, event.start_s)
                yield asr_pb2.RecognizeResponse(
                    speech=asr_pb2.SpeechEvent(kind=kind, audio_offset_s=event.start_s),
                    engine=engine)
                continue
            transcript = asr_pb2.Transcript(
                text=event.text,
                confidence=event.confidence,
                words=[asr_pb2.WordInfo(word=w.word, start_s=w.start_s, end_s=w.end_s,
                                        confidence=w.confidence) for w in event.words],
                audio_start_s=event.start_s,
                audio_end_s=event.end_s,
                processing_ms=processing_ms,
            )
            if self.settings.enable_debug:
                results_log.info("%s %r (confidence %.2f, audio %.2f-%.2f s, engine %.1f ms)",
                                 event.kind.value, event.text, event.confidence,
                                 event.start_s, event.end_s, processing_ms)
            if event.kind is EventKind.FINAL:
                yield asr_pb2.RecognizeResponse(final=transcript, engine=engine)
            else:
                yield asr_pb2.RecognizeResponse(partial=transcript, engine=engine)
