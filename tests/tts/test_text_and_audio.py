"""The sentence splitter and the audio helpers, on real inputs (no service needed)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from tts_service.audio import parse_wav, split_chunks, to_pcm16
from voice_common.sentences import split_first_clause, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello Mr. Smith. How are you? I am fine; thanks!",
         ["Hello Mr. Smith.", "How are you?", "I am fine;", "thanks!"]),
        ('He said "stop." Then he left... And then', ['He said "stop."', "Then he left...",
                                                       "And then"]),
        ("First line\nsecond line.", ["First line", "second line."]),
        ("The U.S. Army met J. Smith at 3.14 p.m. today.",
         ["The U.S. Army met J. Smith at 3.14 p.m. today."]),
        ("See e.g. the manual. Dr. Who agrees.", ["See e.g. the manual.", "Dr. Who agrees."]),
        ("Hi. ... Sure.", ["Hi. ...", "Sure."]),
        ("... Hello there.", ["... Hello there."]),
        ("No punctuation at all", ["No punctuation at all"]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_long_sentence_is_cut_at_clauses_within_the_limit() -> None:
    text = ", ".join(["a clause of several words"] * 40) + "."
    parts = split_sentences(text, max_chars=120)
    assert all(len(p) <= 120 for p in parts)
    assert " ".join(parts).split() == text.split()
    assert all(p.endswith((",", ".")) for p in parts)


def test_first_clause_is_cut_only_at_a_natural_pause() -> None:
    assert split_first_clause("Hello there, how can I help you today?") == [
        "Hello there,", "how can I help you today?"]
    assert split_first_clause("How can I help you today?") == ["How can I help you today?"]
    assert split_first_clause("Well, yes.") == ["Well, yes."]


def test_pcm16_resampling_keeps_duration_and_tone() -> None:
    native = 22050
    t = np.arange(native) / native
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)    # 1 s of 440 Hz
    for rate in (8000, 16000, 22050):
        pcm = np.frombuffer(to_pcm16(tone, native, rate), dtype="<i2")
        assert abs(len(pcm) - rate) <= 2
        spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
        assert abs(np.argmax(spectrum) * rate / len(pcm) - 440) < 2
        assert 0.45 < np.abs(pcm).max() / 32767 < 0.55


def test_chunks_hold_at_most_100_ms() -> None:
    pcm = bytes(2 * 8000 * 3 // 4)      # 750 ms at 8 kHz
    chunks = list(split_chunks(pcm, 8000))
    assert [len(c) for c in chunks] == [1600] * 7 + [800]
    assert list(split_chunks(b"", 8000)) == [b""]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_parse_wav_reads_espeak_streaming_output() -> None:
    out = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", "hello world"],
                         capture_output=True, check=True, timeout=30).stdout
    samples, rate = parse_wav(out)
    assert rate == 22050
    assert 0.4 < len(samples) / rate < 3.0
    assert np.sqrt(np.mean(samples ** 2)) > 0.01
    with pytest.raises(ValueError, match="RIFF"):
        parse_wav(b"not a wav file")
