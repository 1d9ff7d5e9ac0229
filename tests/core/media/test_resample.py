"""Resampling with soxr: lengths, frequency preservation, streaming continuity."""

from __future__ import annotations

import numpy as np
import pytest

from opensips_ai_core.media.resample import Resampler, resample


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    window = np.hanning(pcm.size)
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * window))
    return float(np.fft.rfftfreq(pcm.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000),
                                                   (22050, 8000), (8000, 24000)])
def test_one_shot_length_dtype_and_frequency(in_rate: int, out_rate: int) -> None:
    out = resample(tone(1000, in_rate), in_rate, out_rate)
    assert out.dtype == np.int16
    assert abs(out.size - out_rate) <= 2
    assert abs(dominant_frequency(out, out_rate) - 1000) <= 2


def test_downsampling_removes_content_above_the_new_nyquist() -> None:
    # 6 kHz cannot exist at 8 kHz: it must be filtered out, not aliased to 2 kHz.
    out = resample(tone(6000, 16000), 16000, 8000)
    assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) < 100


def test_streaming_matches_one_shot_and_has_no_edge_clicks() -> None:
    source = tone(1000, 8000)
    stream = Resampler(8000, 16000)
    parts = [stream.process(source[i:i + 160]) for i in range(0, source.size, 160)]
    parts.append(stream.flush())
    streamed = np.concatenate(parts)
    assert abs(streamed.size - 16000) <= 2
    assert abs(dominant_frequency(streamed, 16000) - 1000) <= 2
    # A click would be a jump far larger than a 1 kHz sine's biggest step at 16 kHz.
    middle = streamed[400:-400].astype(np.int32)
    max_step = 10000 * 2 * np.pi * 1000 / 16000
    assert np.max(np.abs(np.diff(middle))) <= max_step * 1.1


def test_bytes_input_and_same_rate_passthrough() -> None:
    pcm = tone(440, 8000, 0.1)
    assert np.array_equal(resample(pcm.tobytes(), 8000, 8000), pcm)
    stream = Resampler(8000, 8000)
    assert np.array_equal(stream.process(pcm), pcm)
    assert stream.flush().size == 0
    assert resample(np.zeros(0, np.int16), 8000, 16000).size == 0


def test_bad_rates_and_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="in_rate must be a positive integer"):
        resample(tone(440, 8000, 0.1), 0, 16000)
    with pytest.raises(ValueError, match="out_rate"):
        Resampler(8000, -1)
    with pytest.raises(TypeError, match="int16"):
        resample(np.zeros(10, np.float32), 8000, 16000)
