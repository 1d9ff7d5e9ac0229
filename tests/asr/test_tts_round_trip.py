"""TTS -> ASR: pocketsphinx recognizes key words of English speech made by the TTS service."""

from __future__ import annotations

import pytest

from voice_testkit.asr_client import final_text, transcribe
from voice_testkit.tts_client import synthesize

pytestmark = [pytest.mark.timeout(180)]

SENTENCE = "Hello world. Please call my office tomorrow."


@pytest.mark.parametrize("rate", [16000, 8000])
def test_pocketsphinx_hears_piper(ai, rate):
    pcm = synthesize(ai.tts.target, SENTENCE, rate)
    pcm += bytes(rate)  # half a second of silence ends the utterance
    if rate == 16000:
        text = final_text(transcribe(ai.asr.target, pcm, rate, speed=0))
        assert {"office", "tomorrow"} <= set(text.split()), text
    else:
        # Telephone-band audio: the wideband model needs a restricted vocabulary.
        phrases = ["hello world", "please call my office", "tomorrow", "goodbye", "my balance"]
        text = final_text(transcribe(ai.asr.target, pcm, rate, phrases=phrases, speed=0))
        assert "please call my office" in text and "tomorrow" in text, text
