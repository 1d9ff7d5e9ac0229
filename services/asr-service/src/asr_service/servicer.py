"""The Recognizer gRPC servicer: validates the stream, feeds an engine, streams results back.

Engines are CPU-bound and synchronous, so every engine call runs off the event loop,
on a thread or in a worker process (workers.py, ASR_WORKERS): a stream never waits
for another stream's work and the event loop never waits for any.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import NoReturn

import grpc

from asr_service.engines import Engine, EventKind, RecognitionEvent, StreamOptions
from asr_service.settings import AsrSettings
from asr_service.stream_summary import StreamSummary
from asr_service.validation import (
    InvalidRequestError,
    check_audio,
    check_config,
    first_request_config,
)
from asr_service.workers import RecognizerStream, WorkerUnavailableError, create_recognizers
from voice_common.devlogger import get_development_logger
from voice_common.logs import call_id_var
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

log = logging.getLogger(__name__)
results_log = get_development_logger("asr_service.results")

# Audio chunks read ahead of the engine (flow control stays with gRPC beyond that), and
# the most audio handed to the engine at once when a backlog is joined.
QUEUED_CHUNKS = 64
MAX_BATCH_S = 0.5

SPEECH_EVENTS = {
    EventKind.SPEECH_START: asr_pb2.SpeechEvent.SPEECH_START,
    EventKind.SPEECH_END: asr_pb2.SpeechEvent.SPEECH_END,
    EventKind.PAUSE: asr_pb2.SpeechEvent.PAUSE,
}


class IdleStreamError(Exception):
    """A stream sent nothing for ASR_IDLE_TIMEOUT_S (answered DEADLINE_EXCEEDED)."""


class StreamHold:
    """What one stream holds: a slot of ASR_MAX_CONCURRENT_STREAMS and its recognizer.

    Released once: at the stream's end, or before its error is sent. gRPC sends an
    abort's status to the client before the code after `abort` runs, so a slot freed
    only then could still be held when a client that heard the error opens its next
    stream, which would be refused RESOURCE_EXHAUSTED.
    """

    def __init__(self, servicer: RecognizerServicer) -> None:
        self.servicer = servicer
        self.session: RecognizerStream | None = None
        self.held = True
        servicer.active_streams += 1

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self.servicer.active_streams -= 1
        session, self.session = self.session, None
        if session is not None:
            session.close_soon()

    async def abort(self, context: grpc.aio.ServicerContext, code: grpc.StatusCode,
                    details: str) -> NoReturn:
        """End the stream with an error, its slot and recognizer freed first."""
        self.release()
        await context.abort(code, details)


class RecognizerServicer(asr_pb2_grpc.RecognizerServicer):
    def __init__(self, engine: Engine, settings: AsrSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.recognizers = create_recognizers(engine, settings)
        self.active_streams = 0

    async def warm_up(self) -> None:
        """Load the model (health turns SERVING only after this returns)."""
        log.info("engine %s: %s; streams run in %s", self.engine.name, self.engine.describe(),
                 self.recognizers.describe())
        started = time.perf_counter()
        await self.recognizers.start()
        log.info("engine %s loaded in %.0f ms: %s", self.engine.name,
                 (time.perf_counter() - started) * 1000, self.engine.describe())

    async def close(self) -> None:
        await self.recognizers.close()

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
        hold = StreamHold(self)
        summary: StreamSummary | None = None
        how = "finished"
        try:
            requests = aiter(request_iterator)
            try:
                first = await self._next_request(requests)
            except IdleStreamError as err:
                await hold.abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, str(err))
            if first is None:
                return
            try:
                config = first_request_config(first)
                check_config(config, self.settings)
            except InvalidRequestError as err:
                await hold.abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
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
            session = hold.session = self.recognizers.new_stream(options)
            try:
                await session.open()
            except WorkerUnavailableError as err:
                await hold.abort(context, grpc.StatusCode.UNAVAILABLE, str(err))
            except Exception as err:
                if not options.phrases:
                    raise
                # Only a phrase list differs between streams: it is what the engine refused.
                log.warning("phrase list refused by %s: %s", self.engine.name, err)
                await hold.abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                                 f"the phrase list cannot be compiled by {self.engine.name}: "
                                 f"{err}")
            summary = StreamSummary(results_log, options.sample_rate_hz)
            async for audio in self._audio_batches(requests, context, options, hold, summary):
                try:
                    events, processing_ms = await session.accept(audio)
                except WorkerUnavailableError as err:
                    await hold.abort(context, grpc.StatusCode.UNAVAILABLE, str(err))
                summary.engine_call(processing_ms)
                for response in self._responses(events, processing_ms):
                    yield response
            # The client half-closed: flush the utterance in progress before ending the RPC.
            try:
                events, processing_ms = await session.finish()
            except WorkerUnavailableError as err:
                await hold.abort(context, grpc.StatusCode.UNAVAILABLE, str(err))
            summary.engine_call(processing_ms)
            for response in self._responses(events, processing_ms):
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            how = "cancelled"
            raise
        except BaseException as err:
            how = f"ended by {type(err).__name__}"
            raise
        finally:
            if summary is not None:
                summary.end(how)
            hold.release()

    async def _audio_batches(self, requests: AsyncIterator[asr_pb2.RecognizeRequest],
                             context: grpc.aio.ServicerContext, options: StreamOptions,
                             hold: StreamHold, summary: StreamSummary) -> AsyncIterator[bytes]:
        """The stream's audio, each request validated, in arrival order and never cut:
        framing is the engine's job (engines/base.py). Chunks that arrived while the
        engine was busy are joined into one engine call (up to MAX_BATCH_S): one worker
        round trip instead of one per chunk, which cost as much CPU as the decoding
        itself for a client sending faster than real time. A live call's chunks arrive
        one at a time and pass through unchanged. `summary` counts the batches."""
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(QUEUED_CHUNKS)

        async def read() -> None:
            try:
                while (request := await self._next_request(requests)) is not None:
                    kind = request.WhichOneof("request")
                    if kind == "config":
                        raise InvalidRequestError("a second StreamingConfig was sent: only "
                                                  "the first request may carry the config")
                    if kind != "audio":
                        raise InvalidRequestError("a request carries neither config nor audio")
                    check_audio(request.audio, self.settings)
                    if request.audio:
                        await queue.put(request.audio)
                await queue.put(None)
            except Exception as err:  # the processing side raises it, in order
                await queue.put(err)

        reader = asyncio.create_task(read(), name=f"asr-read:{options.call_id}")
        limit = int(options.sample_rate_hz * 2 * MAX_BATCH_S)
        try:
            item = await queue.get()
            while item is not None:
                if isinstance(item, InvalidRequestError):
                    await hold.abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(item))
                if isinstance(item, IdleStreamError):
                    await hold.abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, str(item))
                if isinstance(item, BaseException):
                    raise item
                batch = bytearray(item)
                joined = 1
                item = None
                while len(batch) < limit and not queue.empty():
                    following = queue.get_nowait()
                    if not isinstance(following, bytes):
                        item = following  # the end, or an error: after this batch
                        break
                    batch += following
                    joined += 1
                else:
                    item = b""  # nothing left over: wait for the next chunk below
                audio = bytes(batch)
                summary.batch(joined, audio, queue.qsize())
                yield audio
                if item == b"":
                    item = await queue.get()
        finally:
            reader.cancel()

    async def _next_request(self, requests: AsyncIterator[asr_pb2.RecognizeRequest]
                            ) -> asr_pb2.RecognizeRequest | None:
        """The stream's next request, None at its end; IdleStreamError when none comes
        within ASR_IDLE_TIMEOUT_S."""
        idle = self.settings.idle_timeout_s
        try:
            async with asyncio.timeout(idle or None):
                return await anext(requests)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise IdleStreamError(
                f"nothing received for {idle:g} s (ASR_IDLE_TIMEOUT_S): the stream is closed "
                f"so that it does not hold a stream slot; open a new one") from None

    def _responses(self, events: Iterable[RecognitionEvent],
                   processing_ms: float) -> Iterable[asr_pb2.RecognizeResponse]:
        engine = self.engine.name
        for event in events:
            if event.kind in SPEECH_EVENTS:
                offset = event.end_s if event.kind is EventKind.PAUSE else event.start_s
                results_log.debug_output("%s at %.2f s %s", event.kind.name, offset,
                                         event.text)
                yield asr_pb2.RecognizeResponse(
                    speech=asr_pb2.SpeechEvent(kind=SPEECH_EVENTS[event.kind],
                                               audio_offset_s=offset, text=event.text),
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
            results_log.debug_output(
                "%s %r (confidence %.2f, audio %.2f-%.2f s, engine %.1f ms)", event.kind.value,
                event.text, event.confidence, event.start_s, event.end_s, processing_ms)
            if event.kind is EventKind.FINAL:
                yield asr_pb2.RecognizeResponse(final=transcript, engine=engine)
            else:
                yield asr_pb2.RecognizeResponse(partial=transcript, engine=engine)
