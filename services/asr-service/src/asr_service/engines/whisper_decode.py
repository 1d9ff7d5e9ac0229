"""One Whisper decode of an utterance: a 10 s encoder window, text first, word timings after.

Whisper's encoder is trained on 30 s windows and faster-whisper pads every utterance to
30 s: the encoder (attention over 1500 positions) was ~440 of the ~580 CPU-ms of a
decode of a 3 s question. CTranslate2 encodes a shorter window as well, so an utterance
that fits in `WINDOW_S` less a margin is encoded over `WINDOW_S` only: ~180 CPU-ms a
decode, and on the evaluation set's 45 + 70 utterances the word error rate was no worse
(calibration 21.1% against 22.5%). Windows that hug the speech (its length + 2 s) made
tiny.en loop ("Balance. Balance. ..."); so does a window cut too short by any input, so a
hypothesis that repeats itself (faster-whisper's compression ratio above 2.4) is decoded
again over the full 30 s.

The text is decoded without timestamp tokens (they cost the evaluation set a point or
two of word error rate), and word timings, when the caller asks for them, come from
CTranslate2's cross-attention alignment of those tokens on the same encoder output
(faster-whisper's own `add_word_timestamps`): ~10-40 CPU-ms, no second decode.
"""

from __future__ import annotations

import re
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16000
FRAMES_PER_S = 100  # Whisper's log-mel frames (10 ms hop)
WINDOW_S = 12.0
# The utterance must end this long before the window does.
WINDOW_MARGIN_S = 2.0
# faster-whisper's compression_ratio_threshold: above it the text repeats itself.
MAX_COMPRESSION_RATIO = 2.4
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class DecodeOptions:
    language: str | None  # None: detect (a multilingual model)
    beam_size: int
    prompt: str = ""
    hotwords: str = ""
    want_words: bool = False
    # Bounds a decode that loops (whisper_model.max_new_tokens); None: faster-whisper's own.
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class DecodedWord:
    text: str
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True)
class Decoded:
    text: str
    avg_logprobs: tuple[float, ...]
    words: tuple[DecodedWord, ...]
    windowed: bool


# Words said twice in a row ("Okay Okay", a question asked again): what a short window
# made tiny.en do (a real "I, I can't" only costs a second decode).
_REPEAT = re.compile(r"\b(\w+(?:\W+\w+)*)\W+\1\b", re.IGNORECASE)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def looks_looped(text: str) -> bool:
    """The text repeats itself: decode it again over the full 30 s."""
    return compression_ratio(text) > MAX_COMPRESSION_RATIO or _REPEAT.search(text) is not None


def window_frames(samples: int, window_s: float) -> int:
    """Encoder frames to keep for an utterance of `samples` (0: the full 30 s)."""
    if window_s <= 0 or samples / RATE > window_s - WINDOW_MARGIN_S:
        return 0
    return round(window_s * FRAMES_PER_S)


class WindowedWhisper:
    """A faster-whisper model whose encoder sees a shorter window (thread-safe: the window
    and the last encoder output are per thread)."""

    def __init__(self, path: Path, threads: int, parallel: int,
                 window_s: float = WINDOW_S) -> None:
        from faster_whisper import WhisperModel

        local = threading.local()
        self._local = local
        self.window_s = window_s

        class Model(WhisperModel):
            def encode(self, features: np.ndarray) -> Any:
                frames = getattr(local, "frames", 0)
                if frames and features.shape[-1] > frames:
                    features = np.ascontiguousarray(features[..., :frames])
                local.encoded = super().encode(features)
                return local.encoded

        self.model = Model(str(path), device="cpu", compute_type="int8", cpu_threads=threads,
                           num_workers=parallel, local_files_only=True)
        self.multilingual = bool(self.model.model.is_multilingual)

    def decode(self, audio: np.ndarray, options: DecodeOptions) -> Decoded:
        frames = window_frames(len(audio), self.window_s)
        decoded = self._decode(audio, options, frames)
        if frames and looks_looped(decoded.text):
            decoded = self._decode(audio, options, 0)
        return decoded

    def _decode(self, audio: np.ndarray, options: DecodeOptions, frames: int) -> Decoded:
        self._local.frames = frames
        try:
            segments, info = self.model.transcribe(
                audio, language=options.language, beam_size=options.beam_size, best_of=1,
                temperature=0.0, condition_on_previous_text=False, without_timestamps=True,
                word_timestamps=False, vad_filter=False,
                initial_prompt=options.prompt or None, hotwords=options.hotwords or None,
                max_new_tokens=options.max_new_tokens)
            texts: list[str] = []
            logprobs: list[float] = []
            kept: list[Any] = []
            for segment in segments:
                if segment.seek != 0:
                    break  # an utterance (at most 28 s) fits the first window
                if segment.text.strip():
                    texts.append(segment.text.strip())
                    logprobs.append(segment.avg_logprob)
                    kept.append(segment)
            words = (self._words(kept, info.language, min(len(audio), 30 * RATE))
                     if options.want_words and kept else ())
        finally:
            self._local.frames = 0
        return Decoded(" ".join(texts).strip(), tuple(logprobs), words, bool(frames))

    def _words(self, segments: list[Any], language: str, samples: int
               ) -> tuple[DecodedWord, ...]:
        """Word timings of the decoded tokens on this thread's last encoder output."""
        from faster_whisper.tokenizer import Tokenizer

        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe",
                              language=language)
        subsegments = [{"seek": 0, "start": s.start, "end": s.end, "tokens": list(s.tokens)}
                       for s in segments]
        self.model.add_word_timestamps(
            [subsegments], tokenizer, self._local.encoded, samples // (RATE // FRAMES_PER_S),
            PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, last_speech_timestamp=0.0)
        return tuple(DecodedWord(w["word"].strip(), float(w["start"]), float(w["end"]),
                                 float(w["probability"]))
                     for s in subsegments for w in s.get("words", ()) if w["word"].strip())
