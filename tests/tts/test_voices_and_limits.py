"""ListVoices, the espeak-ng engine, and every refused request (the service stays up)."""

from __future__ import annotations

import grpc
import pytest

from voice_testkit.tts_client import list_voices, pcm_rms, pcm_seconds, stream, synthesize

RMS_FLOOR = 300.0


def test_list_voices_offers_piper_and_espeak_with_one_default(tts) -> None:
    voices = list_voices(tts.target)
    engines = {v.engine for v in voices}
    assert engines == {"piper", "espeak-ng"}
    defaults = [v for v in voices if v.is_default]
    assert len(defaults) == 1
    assert defaults[0].engine == "piper"
    assert defaults[0].name == "piper:en_US-joe-medium"
    assert "espeak-ng:en-us" in {v.name for v in voices}
    for voice in voices:
        assert voice.native_sample_rate_hz > 0
        assert voice.language


@pytest.mark.parametrize("voice", ["espeak-ng:en-us", "espeak-ng:en-gb"])
def test_espeak_voice_speaks(tts, voice: str) -> None:
    text = "Hello, this is the fallback voice speaking."
    pcm = synthesize(tts.target, text, 16000, voice=voice)
    words = len(text.split())
    assert 0.2 * words <= pcm_seconds(pcm, 16000) <= 1.0 * words
    assert pcm_rms(pcm) > RMS_FLOOR


def test_every_listed_voice_can_be_named(tts) -> None:
    for voice in list_voices(tts.target):
        pcm = synthesize(tts.target, "Yes.", 8000, voice=voice.name)
        assert pcm_rms(pcm) > RMS_FLOOR, voice.name


def _refusal(target: str, text: str, rate: int = 16000, voice: str = "") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        synthesize(target, text, rate, voice=voice)
    return err.value


@pytest.mark.parametrize(
    ("text", "rate", "voice", "expected"),
    [
        ("", 16000, "", "text is empty"),
        ("   \n\t ", 16000, "", "text is empty"),
        ("a" * 2001, 16000, "", "the limit is 2000"),
        ("... !!! ???", 16000, "", "no letters or digits"),
        # Regression: a NUL reached the engines and came back INTERNAL.
        ("Hello\x00world.", 16000, "", "control character U+0000 at position 5"),
        ("\x00", 16000, "", "control character U+0000 at position 0"),
        ("Bell\x07 rings.", 8000, "", "control character U+0007"),
        ("Hello.", 16000, "piper:nobody", "unknown voice 'piper:nobody'"),
        ("Hello.", 44100, "", "sample_rate_hz=44100 is not supported"),
        ("Hello.", -8000, "", "sample_rate_hz=-8000 is not supported"),
        ("Hello.", 12345, "espeak-ng:en-us", "sample_rate_hz=12345 is not supported"),
    ],
)
def test_bad_input_is_refused_clearly(tts, text: str, rate: int, voice: str,
                                      expected: str) -> None:
    err = _refusal(tts.target, text, rate, voice)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in err.details()
    # ... and the service still serves the next caller.
    assert pcm_rms(synthesize(tts.target, "Fine.", 8000)) > RMS_FLOOR


def test_text_at_the_limit_is_accepted(tts) -> None:
    text = ("Okay. " * 400)[:2000]
    assert len(text) == 2000
    chunks = stream(tts.target, text, 8000)
    # Accepted and streaming is what matters here; closing cancels the rest.
    first = next(chunks)
    chunks.close()
    assert first.chunk.sentence == "Okay."
    assert pcm_rms(first.chunk.audio) > RMS_FLOOR
