"""Speech audio for the ASR tests, made at test time with espeak-ng (nothing is committed)."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import soxr


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: str, directory: Path, name: str = "speech",
               words_per_minute: int = 175) -> Path:
    # 175 words a minute is espeak-ng's own default speed.
    """Speak `text` with espeak-ng into a WAV file in `directory`."""
    path = directory / f"{name}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
        check=True, timeout=30, capture_output=True,
    )
    return path


def read_pcm16(path: Path, rate: int, lead_silence_s: float = 0.3,
               tail_silence_s: float = 1.0) -> bytes:
    """A mono WAV file as PCM16 little-endian at `rate`, padded with silence on both sides."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit samples")
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        if wav.getnchannels() > 1:
            samples = samples.reshape(-1, wav.getnchannels())[:, 0]
        source_rate = wav.getframerate()
    if source_rate != rate:
        samples = soxr.resample(samples, source_rate, rate)
    lead = np.zeros(int(rate * lead_silence_s), dtype="<i2")
    tail = np.zeros(int(rate * tail_silence_s), dtype="<i2")
    return np.concatenate([lead, samples.astype("<i2"), tail]).tobytes()


def speech_pcm(text: str, voice: str, directory: Path, rate: int, name: str = "speech", *,
               words_per_minute: int = 175) -> bytes:
    return read_pcm16(synthesize(text, voice, directory, name, words_per_minute), rate)
