"""Hearing the caller: audio to the ASR stream, its events to what the caller did.

Frames of the caller's audio go to the call's recognition stream. Its responses
become four events for the conversation (`Listener`): speech started, words heard so
far (a partial: barge-in), a pause with the hypothesis so far (a reply may be prepared),
and a finished utterance (a final transcript, with the time the caller stopped talking).

Phones with silence suppression send no RTP while the caller is quiet; the recognizer
needs to hear that silence to end the utterance. After GAP_S without audio, up to
GAP_FILL_S of silence is fed to ASR in GAP_STEP_S steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import numpy as np

from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.protocols import RecognitionStream, SpeechRecognizer
from opensips_ai_core.pipeline.timing import TurnTimer
from voice_common.logs import call_id_var
from voiceai.asr.v1 import asr_pb2

SAMPLE_RATE = 8000
GAP_S = 0.2
GAP_STEP_S = 0.1
GAP_FILL_S = 1.5


class Listener(Protocol):
    def speech_started(self) -> None: ...
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

    @property
    def reconnects(self) -> int:
        return self.stream.reconnects if self.stream is not None else 0

    def start(self) -> None:
        self.stream = self.asr.session(
            self.call_id, self.on_response, sample_rate=SAMPLE_RATE,
            language=self.bot.asr_language, phrases=self.bot.asr_phrases)
        self.stream.start()
        self._gaps = asyncio.create_task(self._fill_audio_gaps(), name=f"gaps:{self.call_id}")

    async def close(self) -> None:
        stream, self.stream = self.stream, None
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
                self.listener.speech_started()
            elif event.kind == asr_pb2.SpeechEvent.SPEECH_END:
                self._speech_end_hint = time.perf_counter()
            elif event.kind == asr_pb2.SpeechEvent.PAUSE:
                self.listener.paused(event.text)
        elif kind == "partial":
            if response.partial.text.split():
                self.listener.words_heard(response.partial.text)
        elif kind == "final":
            text = response.final.text.strip()
            if not text:
                return
            now = time.perf_counter()
            heard = TurnTimer()
            heard.mark("asr_final", now)
            heard.speech_end = self._speech_end(response.final, now)
            self.listener.utterance(text, heard)

    def _speech_end(self, final: asr_pb2.Transcript, fallback: float | None) -> float | None:
        """Wall time of the end of speech: the ASR's audio offset mapped onto arrival time."""
        epoch = self.stream.epoch if self.stream is not None else None
        if epoch is not None and final.audio_end_s > 0:
            estimate = epoch + final.audio_end_s
            if fallback is None or estimate <= fallback:
                return estimate
        hint, self._speech_end_hint = self._speech_end_hint, None
        return hint if hint is not None else fallback
