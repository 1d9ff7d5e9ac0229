"""Whisper engine: faster-whisper (CTranslate2, int8) behind Silero VAD segmentation.

Whisper does not stream: it decodes a whole utterance (padded to 30 s, so ~0.6 CPU-s
whatever its length). The stream therefore cuts utterances itself, on Silero VAD frames
of 32 ms at 16 kHz (8 kHz input is resampled with soxr):

- SPEECH_START as soon as 2 frames (64 ms) are speech: barge-in needs no decode.
- partials (ASR_WHISPER_PARTIAL_INTERVAL_S, off by default) decode the utterance so
  far; each costs a full decode, which a 2-core machine running several calls cannot
  spare, so only SPEECH_START is prompt by default.
- PAUSE after ASR_PAUSE_S of silence: the utterance is decoded there and the PAUSE
  carries that hypothesis; the end-of-turn model (end_of_turn.py), if on, then sets how
  much more silence ends the turn (short after a finished sentence, long after "um").
- the final, at the endpoint, is the PAUSE's decode when nothing but silence came after
  it (no second decode, and the same text as the PAUSE); speech after the PAUSE drops
  that decode and the utterance goes on.
- an utterance longer than ASR_WHISPER_MAX_UTTERANCE_S is cut and decoded there, so a
  monologue costs bounded memory and one bounded decode per piece.

Decoding is at temperature 0 only: faster-whisper's default temperature fallback
re-decoded short clips for up to 8 s. A beam of 5 (the default) costs little more than
greedy (the encoder, on 30 s of padded audio, is most of a decode) and heard the
evaluation set better. The caller's phrase list is not used (Whisper has no grammar; a
prompt made of it makes tiny.en repeat the phrases); domain hints (prompt, hotwords)
come from the settings and only make their words likelier.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asr_service.engines.base import (
    Engine,
    EngineStream,
    EventKind,
    RecognitionEvent,
    StreamOptions,
    Word,
)
from asr_service.engines.end_of_turn import TEXT_COMPLETE_THRESHOLD, SmartTurn, text_ends_turn
from asr_service.engines.silero import FRAME_S, FRAME_SAMPLES, RATE, SileroStream, load_session
from asr_service.engines.whisper_decode import WINDOW_S, DecodeOptions, WindowedWhisper
from asr_service.engines.whisper_model import max_new_tokens, prompt_tokens

log = logging.getLogger("asr_service.engines.whisper")

# Frames of speech that start an utterance (64 ms; a "hi" is 250 ms long).
START_FRAMES = 2
# Audio kept before the start, so a word's onset is not cut.
PREROLL_S = 0.2
# Silero's own streaming rule: speech ends below the start threshold minus 0.15.
SILENCE_MARGIN = 0.15
# As pocketsphinx: the quick soxr returns each chunk at once. Its HQ stream holds audio
# back in ~50 ms batches (up to ~100 ms late: SPEECH_START and the PAUSE come later) and
# heard the evaluation set no better (within a point or two, either way).
RESAMPLE_QUALITY = "QQ"
# The decode starts after this much silence (two VAD frames), not at the PAUSE: most of
# it is done by the time the PAUSE is due. Speech before the PAUSE drops it (a decode
# costs ~0.2 CPU-s; gaps between words rarely reach the silence threshold for 64 ms).
SPECULATE_S = 0.064


@dataclass(frozen=True)
class WhisperConfig:
    model_path: Path
    threads: int = 2
    parallel: int = 1
    pause_s: float = 0.2
    endpoint_silence_s: float = 0.5
    partial_interval_s: float = 0.0
    max_utterance_s: float = 20.0
    vad_threshold: float = 0.5
    beam_size: int = 5
    # The encoder's window for an utterance that fits it (whisper_decode.py); 0: 30 s.
    window_s: float = WINDOW_S
    # Silence after which the utterance is decoded speculatively, before the PAUSE.
    speculate_s: float = SPECULATE_S
    # Domain hints (faster-whisper's initial_prompt and hotwords): they make the bot's
    # words likelier, they do not restrict what can be heard.
    prompt: str = ""
    hotwords: str = ""
    # None: a fixed endpoint (ASR_ENDPOINT_SILENCE_S).
    turn_model_path: Path | None = None
    turn_complete_threshold: float = 0.5
    turn_complete_silence_s: float = 0.2
    turn_incomplete_silence_s: float = 1.5


@dataclass(frozen=True)
class Hypothesis:
    text: str
    confidence: float
    words: tuple[Word, ...] = ()


def frames(seconds: float) -> int:
    return max(1, math.ceil(seconds / FRAME_S - 1e-9))


class WhisperEngine(Engine):
    name = "whisper"
    holds_gil = False  # CTranslate2 and onnxruntime release the GIL while they compute

    def __init__(self, config: WhisperConfig) -> None:
        self.config = config
        self.model: WindowedWhisper | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.vad_session: Any = None
        self.turn: SmartTurn | None = None
        self.multilingual = False
        self.prompt_length = 0

    def describe(self) -> str:
        turn = (f"end of turn by {self.config.turn_model_path}" if self.config.turn_model_path
                else f"fixed endpoint {self.config.endpoint_silence_s} s")
        hints = ", ".join(name for name, value in (("prompt", self.config.prompt),
                                                  ("hotwords", self.config.hotwords)) if value)
        return (f"faster-whisper {self.config.model_path} (int8, {self.config.threads} "
                f"threads, beam {self.config.beam_size}, temperature 0"
                f"{', hints: ' + hints if hints else ''}), Silero VAD, {turn}")

    def load(self) -> None:
        """Load the model, the VAD and the end-of-turn model; idempotent (create_engine
        loads once to report a corrupt model before the service starts)."""
        if self.model is not None:
            return
        model = WindowedWhisper(self.config.model_path, self.config.threads,
                                self.config.parallel, self.config.window_s)
        self.multilingual = model.multilingual
        self.prompt_length = prompt_tokens(model.model.hf_tokenizer, self.config.prompt,
                                           self.config.hotwords)
        self.vad_session = load_session()
        if self.config.turn_model_path is not None:
            self.turn = SmartTurn(self.config.turn_model_path)
        # Speculative decodes and smart-turn run here, beside the streams' own threads.
        self.pool = ThreadPoolExecutor(max_workers=2 * self.config.parallel + 2,
                                       thread_name_prefix="whisper-decode")
        self.model = model
        # One decode of silence: CTranslate2's first call allocates its buffers.
        self.decode(np.zeros(RATE // 2, dtype=np.float32), "", False, 0.0)

    def open_stream(self, options: StreamOptions) -> EngineStream:
        return WhisperStream(self, options)

    def decode(self, audio: np.ndarray, language: str, want_words: bool,
               offset_s: float) -> Hypothesis:
        """The transcript of float32 16 kHz `audio`; word times are shifted by `offset_s`."""
        lang = (language.partition("-")[0].lower() or None) if self.multilingual else "en"
        assert self.model is not None, "decode before load"
        decoded = self.model.decode(audio, DecodeOptions(
            lang, self.config.beam_size, self.config.prompt, self.config.hotwords, want_words,
            max_new_tokens(len(audio) / RATE, self.prompt_length)))
        logprobs = decoded.avg_logprobs
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        words = tuple(Word(w.text, offset_s + w.start_s, offset_s + w.end_s, w.probability)
                      for w in decoded.words)
        return Hypothesis(decoded.text, confidence, words)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None
        self.model = None
        self.turn = None
        self.vad_session = None


class WhisperStream(EngineStream):
    def __init__(self, engine: WhisperEngine, options: StreamOptions) -> None:
        import soxr

        config = engine.config
        self.engine = engine
        self.options = options
        self._vad = SileroStream(engine.vad_session)
        self._resampler = (
            soxr.ResampleStream(options.sample_rate_hz, RATE, 1, dtype="int16",
                                quality=RESAMPLE_QUALITY)
            if options.sample_rate_hz != RATE else None
        )
        self._speech_threshold = config.vad_threshold
        self._silence_threshold = config.vad_threshold - SILENCE_MARGIN
        self._pause_frames = frames(config.pause_s)
        self._speculate_frames = (min(frames(config.speculate_s), self._pause_frames)
                                  if config.speculate_s > 0 else 0)
        self._default_end_frames = frames(config.endpoint_silence_s)
        self._complete_end_frames = frames(max(config.turn_complete_silence_s, config.pause_s))
        self._incomplete_end_frames = frames(config.turn_incomplete_silence_s)
        self._max_frames = frames(config.max_utterance_s)
        self._partial_frames = (frames(config.partial_interval_s)
                                if config.partial_interval_s > 0 and options.interim_results
                                else 0)
        self._pending = np.zeros(0, dtype=np.int16)
        self._frames_seen = 0
        self._preroll: deque[np.ndarray] = deque(maxlen=frames(PREROLL_S) + START_FRAMES)
        self._start_run = 0
        self._utterance: list[np.ndarray] | None = None
        self._speech_start_s = 0.0
        self._silent_run = 0
        self._paused = False
        self._hypothesis: Hypothesis | None = None
        self._speculation: Future[Hypothesis] | None = None
        self._end_frames = self._default_end_frames
        self._next_partial = 0
        self._last_partial = ""

    # -- audio in ---------------------------------------------------------------------

    def accept(self, pcm: bytes) -> list[RecognitionEvent]:
        events: list[RecognitionEvent] = []
        self._feed(self._to_model_rate(pcm), events)
        self._maybe_partial(events)
        return events

    def finish(self) -> list[RecognitionEvent]:
        events: list[RecognitionEvent] = []
        if self._resampler is not None:
            self._feed(self._to_model_rate(b"", last=True), events)
        if self._utterance is not None:
            if len(self._pending) and self._hypothesis is None:
                # Less than a VAD frame is left; the decoder still hears it (after a
                # PAUSE it is silence, and the PAUSE's decode stands).
                self._utterance.append(self._pending)
            self._end(events)
        self._pending = np.zeros(0, dtype=np.int16)
        return events

    def close(self) -> None:
        self._drop_speculation()

    def _to_model_rate(self, pcm: bytes, last: bool = False) -> np.ndarray:
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples, last=last).astype(np.int16)

    def _feed(self, samples: np.ndarray, events: list[RecognitionEvent]) -> None:
        audio = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        count = len(audio) // FRAME_SAMPLES
        self._pending = audio[count * FRAME_SAMPLES:].copy()
        if count == 0:
            return
        batch = audio[:count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        probabilities = self._vad.probabilities(batch.astype(np.float32) / 32768.0)
        for frame, probability in zip(batch, probabilities, strict=True):
            self._step(frame, float(probability), events)

    # -- segmentation -----------------------------------------------------------------

    def _step(self, frame: np.ndarray, probability: float,
              events: list[RecognitionEvent]) -> None:
        self._frames_seen += 1
        if self._utterance is None:
            self._preroll.append(frame)
            self._start_run = self._start_run + 1 if probability >= self._speech_threshold else 0
            if self._start_run >= START_FRAMES:
                self._start(events)
            return
        self._utterance.append(frame)
        if probability < self._silence_threshold:
            self._silent_run += 1
            if (not self._paused and self._silent_run == self._speculate_frames
                    and self._speculation is None):
                self._speculation = self._submit_decode()
        else:
            self._silent_run = 0
            self._drop_speculation()
            if self._paused:
                # Speech after the PAUSE: its decode no longer covers the utterance.
                self._paused = False
                self._hypothesis = None
                self._end_frames = self._default_end_frames
        if not self._paused and self._silent_run >= self._pause_frames:
            self._pause(events)
        if self._paused and self._silent_run >= self._end_frames:
            self._end(events)
        elif len(self._utterance) >= self._max_frames:
            log.debug("utterance longer than %.1f s: cut", self.engine.config.max_utterance_s)
            self._end(events)

    def _now_s(self) -> float:
        return self._frames_seen * FRAME_S

    def _utterance_offset_s(self) -> float:
        assert self._utterance is not None
        return self._now_s() - len(self._utterance) * FRAME_S

    def _start(self, events: list[RecognitionEvent]) -> None:
        self._utterance = list(self._preroll)
        self._preroll.clear()
        self._speech_start_s = self._now_s() - self._start_run * FRAME_S
        self._start_run = 0
        self._silent_run = 0
        self._paused = False
        self._hypothesis = None
        self._drop_speculation()
        self._end_frames = self._default_end_frames
        self._next_partial = len(self._utterance) + self._partial_frames
        self._last_partial = ""
        events.append(RecognitionEvent(EventKind.SPEECH_START, start_s=self._speech_start_s,
                                       end_s=self._speech_start_s))

    def _audio(self) -> np.ndarray:
        assert self._utterance is not None
        return np.concatenate(self._utterance).astype(np.float32) / 32768.0

    def _decode(self) -> Hypothesis:
        return self.engine.decode(self._audio(), self.options.language,
                                  self.options.show_words, self._utterance_offset_s())

    def _submit_decode(self) -> Future[Hypothesis] | None:
        """The utterance so far decoded on the engine's pool (None: no pool)."""
        pool = self.engine.pool
        if pool is None:
            return None
        return pool.submit(self.engine.decode, self._audio(), self.options.language,
                           self.options.show_words, self._utterance_offset_s())

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation.cancel()  # a decode already running finishes, unused
            self._speculation = None

    def _pause(self, events: list[RecognitionEvent]) -> None:
        self._paused = True
        turn, pool = self.engine.turn, self.engine.pool
        # smart-turn hears the same audio as before (the PAUSE's silence included) and
        # runs beside the decode, which started at the speculation.
        judged = (pool.submit(turn.complete_probability, self._audio())
                  if turn is not None and pool is not None else None)
        speculation, self._speculation = self._speculation, None
        self._hypothesis = speculation.result() if speculation is not None else self._decode()
        if not self._hypothesis.text:
            if judged is not None:
                judged.cancel()
            return  # nothing was said (a cough, a click): the fixed endpoint ends it
        events.append(RecognitionEvent(EventKind.PAUSE, text=self._hypothesis.text,
                                       start_s=self._speech_start_s, end_s=self._now_s()))
        if turn is not None:
            complete = (judged.result() if judged is not None
                        else turn.complete_probability(self._audio()))
            threshold = self.engine.config.turn_complete_threshold
            if text_ends_turn(self._hypothesis.text):
                threshold = min(threshold, TEXT_COMPLETE_THRESHOLD)
            finished = complete >= threshold
            self._end_frames = self._complete_end_frames if finished else \
                self._incomplete_end_frames
            log.debug("end of turn: P(complete) %.2f for %r: end after %.2f s of silence",
                      complete, self._hypothesis.text, self._end_frames * FRAME_S)

    def _end(self, events: list[RecognitionEvent]) -> None:
        self._drop_speculation()
        hypothesis = self._hypothesis or self._decode()
        end_s = self._now_s() - self._silent_run * FRAME_S
        if hypothesis.text:
            events.append(RecognitionEvent(
                EventKind.FINAL, text=hypothesis.text, confidence=hypothesis.confidence,
                words=hypothesis.words, start_s=self._speech_start_s, end_s=end_s))
        events.append(RecognitionEvent(EventKind.SPEECH_END, start_s=end_s, end_s=end_s))
        self._utterance = None
        self._hypothesis = None
        self._paused = False
        self._silent_run = 0
        self._start_run = 0

    def _maybe_partial(self, events: list[RecognitionEvent]) -> None:
        if (not self._partial_frames or self._utterance is None or self._paused
                or len(self._utterance) < self._next_partial):
            return
        self._next_partial = len(self._utterance) + self._partial_frames
        text = self._decode().text
        if text and text != self._last_partial:
            self._last_partial = text
            events.append(RecognitionEvent(EventKind.PARTIAL, text=text,
                                           start_s=self._speech_start_s, end_s=self._now_s()))
