"""Hearing the caller: audio to the ASR stream, its events to what the caller did.

Frames of the caller's audio go to the call's recognition stream. Its responses
become four events for the conversation (`Listener`): speech started, words heard so
far (a partial: barge-in), a pause with the hypothesis so far (a reply may be prepared),
and a finished utterance (a final transcript, with the time the caller stopped talking).

Phones with silence suppression send no RTP while the caller is quiet; the recognizer
needs to hear that silence to end the utterance. After GAP_S without audio, up to
GAP_FILL_S of silence is fed to ASR in GAP_STEP_S steps.

Barge-in without partials: an engine that sends no partial transcripts (Whisper by
default) would leave the caller unable to interrupt at `barge_in_min_words >= 1`.
The stream shows which kind it is: once it sent a partial with words, partials decide
barge-in; once an utterance ended (a final) without any, its SPEECH_START does
(`speech_without_partials`). Until it is known, a SPEECH_START not followed by a
partial with words within PARTIAL_GRACE_S counts as one without partials.

A broken stream (the ASR session reopens it): a reply held for the PAUSE is committed
(`stream_broke`); else, if the caller was speaking since the last final, the
utterance's audio is sent again on the new stream, whose final answers it; if nobody
spoke nothing happens (`voice_asr_stream_breaks_total{outcome}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import grpc
import numpy as np

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.protocols import RecognitionStream, SpeechRecognizer
from opensips_ai_core.pipeline.timing import TurnTimer
from voice_common import get_development_logger
from voice_common.logs import call_id_var
from voiceai.asr.v1 import asr_pb2

SAMPLE_RATE = 8000
GAP_S = 0.2
GAP_STEP_S = 0.1
GAP_FILL_S = 1.5
# How long after a SPEECH_START a partial may take before the stream is taken for one
# that sends none (only while that is not known yet).
PARTIAL_GRACE_S = 0.3

log = get_development_logger("core.recognition")


class Listener(Protocol):
    def speech_started(self) -> None: ...
    def speech_without_partials(self) -> None:
        """The caller speaks on a stream that sends no partials: barge-in is due."""
        ...
    def stream_broke(self) -> bool:
        """The ASR stream broke: True when a reply held for a PAUSE was committed."""
        ...
    def words_heard(self, text: str) -> None: ...
    def paused(self, text: str) -> None: ...
    def utterance(self, text: str, heard: TurnTimer) -> None:
        """A final transcript; `heard` has its asr_final and speech_end times."""
        ...


class Recognition:
    def __init__(self, call_id: str, asr: SpeechRecognizer, bot: BotConfig,
                 listener: Listener) -> None:
        self.call_id = call_id
        self.asr = asr
        self.bot = bot
        self.listener = listener
        self.stream: RecognitionStream | None = None
        self._gaps: asyncio.Task[None] | None = None
        self._last_audio: float | None = None
        self._gap_filled_s = 0.0
        self._speech_end_hint: float | None = None
        self._speaking = False  # speech (or words) since the last final
        # Whether this stream sends partials with words: None until it shows it.
        self.streams_partials: bool | None = None
        self._partial_this_utterance = False
        self._grace: asyncio.TimerHandle | None = None

    @property
    def reconnects(self) -> int:
        return self.stream.reconnects if self.stream is not None else 0

    def start(self) -> None:
        self.stream = self.asr.session(
            self.call_id, self.on_response, sample_rate=SAMPLE_RATE,
            language=self.bot.asr_language, phrases=self.bot.asr_phrases,
            on_break=self.on_break)
        self.stream.start()
        self._gaps = asyncio.create_task(self._fill_audio_gaps(), name=f"gaps:{self.call_id}")

    async def close(self) -> None:
        stream, self.stream = self.stream, None
        self._cancel_grace()
        if self._gaps is not None:
            self._gaps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gaps
        if stream is not None:
            await stream.close()

    # ---------------------------------------------------------------- audio in
    def on_audio(self, pcm16: np.ndarray) -> None:
        """A decoded inbound frame (PCM16, 8 kHz) from the RTP session."""
        if self.stream is None:
            return
        self._last_audio = time.perf_counter()
        self._gap_filled_s = 0.0
        self.stream.send(pcm16.astype("<i2", copy=False).tobytes())

    async def _fill_audio_gaps(self) -> None:
        silence = bytes(int(SAMPLE_RATE * GAP_STEP_S) * 2)
        while True:
            await asyncio.sleep(GAP_STEP_S)
            last = self._last_audio
            if (self.stream is None or last is None or self._gap_filled_s >= GAP_FILL_S
                    or time.perf_counter() - last < GAP_S):
                continue
            self.stream.send(silence)
            self._gap_filled_s += GAP_STEP_S

    # ---------------------------------------------------------------- events out
    async def on_response(self, response: asr_pb2.RecognizeResponse) -> None:
        token = call_id_var.set(self.call_id)
        try:
            self._dispatch(response)
        finally:
            call_id_var.reset(token)

    def _dispatch(self, response: asr_pb2.RecognizeResponse) -> None:
        kind = response.WhichOneof("result")
        if kind == "speech":
            event = response.speech
            if event.kind == asr_pb2.SpeechEvent.SPEECH_START:
                self._speaking = True
                self.listener.speech_started()
                self._speech_started()
            elif event.kind == asr_pb2.SpeechEvent.SPEECH_END:
                self._speech_end_hint = time.perf_counter()
            elif event.kind == asr_pb2.SpeechEvent.PAUSE:
                self._speaking = self._speaking or bool(event.text.split())
                self.listener.paused(event.text)
        elif kind == "partial":
            if response.partial.text.split():
                self._speaking = True
                self.streams_partials = self._partial_this_utterance = True
                self._cancel_grace()
                self.listener.words_heard(response.partial.text)
        elif kind == "final":
            self._utterance_ended()
            text = response.final.text.strip()
            if not text:
                return
            now = time.perf_counter()
            heard = TurnTimer()
            heard.mark("asr_final", now)
            heard.speech_end = self._speech_end(response.final, now)
            self.listener.utterance(text, heard)

    # ---------------------------------------------------------------- barge-in
    def _speech_started(self) -> None:
        if self.streams_partials:
            return  # partials (and barge_in_min_words) decide
        if self.streams_partials is False:
            self.listener.speech_without_partials()
        elif self._grace is None:
            self._grace = asyncio.get_running_loop().call_later(
                PARTIAL_GRACE_S, self._grace_over)

    def _grace_over(self) -> None:
        self._grace = None
        if not self._partial_this_utterance and self.stream is not None:
            token = call_id_var.set(self.call_id)
            try:
                self.listener.speech_without_partials()
            finally:
                call_id_var.reset(token)

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _utterance_ended(self) -> None:
        if self.streams_partials is None and self._speaking:
            self.streams_partials = False  # an utterance went by without a partial
        self._speaking = self._partial_this_utterance = False
        self._cancel_grace()

    # ---------------------------------------------------------------- a broken stream
    def on_break(self, err: grpc.aio.AioRpcError) -> bool:
        """The stream broke: commit the held reply, or ask for the utterance again."""
        token = call_id_var.set(self.call_id)
        try:
            if self.listener.stream_broke():
                outcome, replay = "committed", False
            elif self._speaking:
                outcome, replay = "replayed", True
            else:
                outcome, replay = "idle", False
            log.warning("Call %s ASR stream broke (%s): %s", self.call_id, err.code().name,
                        outcome)
            metrics.ASR_STREAM_BREAKS.labels(outcome).inc()
            self._speaking = self._partial_this_utterance = False
            self._cancel_grace()
            return replay
        finally:
            call_id_var.reset(token)

    def _speech_end(self, final: asr_pb2.Transcript, fallback: float | None) -> float | None:
        """Wall time of the end of speech: the ASR's audio offset mapped onto arrival time."""
        epoch = self.stream.epoch if self.stream is not None else None
        if epoch is not None and final.audio_end_s > 0:
            estimate = epoch + final.audio_end_s
            if fallback is None or estimate <= fallback:
                return estimate
        hint, self._speech_end_hint = self._speech_end_hint, None
        return hint if hint is not None else fallback
