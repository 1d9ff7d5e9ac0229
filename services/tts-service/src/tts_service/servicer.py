"""The voiceai.tts.v1.Synthesizer servicer: validation, sentence pipeline, chunking."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np

from tts_service.audio import split_chunks, to_pcm16
from tts_service.engines import Engine, SynthesisError
from tts_service.voices import VoiceCatalog
from voice_common.devlogger import DevelopmentLogger
from voice_common.logs import call_id_var
from voice_common.sentences import has_speakable, split_first_clause, split_sentences
from voiceai.tts.v1 import tts_pb2, tts_pb2_grpc

log = logging.getLogger(__name__)

FIXED_RATES = (8000, 16000)
# C0 and C1 control characters but tab, line feed and carriage return.
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class RequestError(ValueError):
    """A request the contract refuses; the message goes back as INVALID_ARGUMENT."""


def output_rate(requested: int, native: int) -> int:
    if requested == 0:
        return native
    if requested in (*FIXED_RATES, native):
        return requested
    raise RequestError(
        f"sample_rate_hz={requested} is not supported: use 0 (the voice's native "
        f"{native} Hz), 8000, 16000 or {native}"
    )


class SynthesizerServicer(tts_pb2_grpc.SynthesizerServicer):
    def __init__(self, catalog: VoiceCatalog, max_text_chars: int,
                 debug_log: DevelopmentLogger) -> None:
        self.catalog = catalog
        self.max_text_chars = max_text_chars
        self.debug = debug_log

    def _validate(self, request: tts_pb2.SynthesizeRequest) -> tuple[Engine, int, list[str]]:
        text = request.text
        if not text.strip():
            raise RequestError("text is empty: give at least one word to speak")
        if len(text) > self.max_text_chars:
            raise RequestError(
                f"text is {len(text)} characters: the limit is {self.max_text_chars}"
            )
        control = CONTROL_CHARACTER.search(text)
        if control is not None:
            # A NUL reached the engines, which failed (INTERNAL): the request is at fault.
            raise RequestError(
                f"text has the control character U+{ord(control.group()):04X} at position "
                f"{control.start()}: send plain text (tabs and line breaks are fine)")
        if not has_speakable(text):
            raise RequestError("text has no letters or digits to speak")
        engine = self.catalog.get(request.voice)
        if engine is None:
            known = ", ".join(sorted(self.catalog.engines))
            raise RequestError(f"unknown voice {request.voice!r}: ListVoices offers {known}")
        rate = output_rate(request.sample_rate_hz, engine.voice.native_rate)
        sentences = split_sentences(text)
        # The first sentence's synthesis time is the time to first audio: start with
        # its first clause when it has a natural pause.
        sentences[:1] = split_first_clause(sentences[0])
        return engine, rate, sentences

    async def Synthesize(  # noqa: N802 - gRPC method name
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.AudioChunk]:
        if request.call_id:
            call_id_var.set(request.call_id)
        if not self.catalog.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "voices are still loading")
        try:
            engine, rate, sentences = self._validate(request)
        except RequestError as err:
            log.info("refused: %s", err)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        self.debug.debug_function_call(
            "Synthesize", kwargs={"voice": engine.voice.name, "rate": rate,
                                  "chars": len(request.text), "sentences": len(sentences)})
        started = time.perf_counter()
        total = len(sentences)
        done = 0
        # Synthesis of sentence i+1 runs while sentence i is being sent: one ahead,
        # no more, so a cancelled request wastes at most one sentence of work.
        pending: asyncio.Task[bytes] | None = asyncio.ensure_future(
            self._render(engine, sentences[0], rate, 0, total))
        try:
            for index, sentence in enumerate(sentences):
                assert pending is not None
                pcm = await pending
                pending = (asyncio.ensure_future(
                    self._render(engine, sentences[index + 1], rate, index + 1, total))
                    if index + 1 < total else None)
                pieces = list(split_chunks(pcm, rate))
                for number, piece in enumerate(pieces):
                    if index == 0 and number == 0:
                        self.debug.debug_performance("tts_first_audio", started,
                                                     time.perf_counter())
                    yield tts_pb2.AudioChunk(
                        audio=piece, sample_rate_hz=rate, sentence_index=index,
                        last_in_sentence=number == len(pieces) - 1,
                        sentence=sentence if number == 0 else "",
                    )
                done = index + 1
        except SynthesisError as err:
            log.error("synthesis failed at sentence %d/%d: %s", done + 1, total, err)
            await context.abort(grpc.StatusCode.INTERNAL, str(err))
        finally:
            if pending is not None:
                pending.cancel()
                # Its outcome no longer matters; retrieving it keeps asyncio from warning.
                pending.add_done_callback(lambda task: task.cancelled() or task.exception())
            if done < total:
                log.info("stopped after %d of %d sentences (client cancelled or error)",
                         done, total)
        self.debug.debug_performance(f"tts_request ({total} sentences)", started,
                                     time.perf_counter())

    async def _render(self, engine: Engine, sentence: str, rate: int, index: int,
                      total: int) -> bytes:
        started = time.perf_counter()
        audio: np.ndarray = await engine.synthesize(sentence)
        pcm = await asyncio.to_thread(to_pcm16, audio, engine.voice.native_rate, rate)
        self.debug.debug_performance(f"tts_sentence {index + 1}/{total} synthesized",
                                     started, time.perf_counter())
        return pcm

    async def ListVoices(  # noqa: N802 - gRPC method name
        self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.ListVoicesResponse:
        default = self.catalog.default_voice
        return tts_pb2.ListVoicesResponse(voices=[
            tts_pb2.Voice(name=v.name, engine=v.engine, language=v.language,
                          native_sample_rate_hz=v.native_rate, is_default=v.name == default)
            for v in self.catalog.voices()
        ])
