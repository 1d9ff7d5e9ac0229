"""PCM16 sample-rate conversion (8 kHz <-> 16 kHz, or any pair) with soxr.

`resample` converts one complete buffer. `Resampler` keeps soxr's filter state
between chunks, so audio cut into 20 ms frames (RTP in, TTS chunks out) comes
out continuous, without the clicks that resampling each chunk on its own makes
at every chunk edge.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from opensips_ai_core.media.pcm import PcmArray, as_pcm16

# "HQ" is soxr's default; plenty for telephone audio and cheap at these rates.
DEFAULT_QUALITY = "HQ"


def _check_rates(in_rate: int, out_rate: int) -> None:
    for label, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"{label} must be a positive integer sample rate, got {rate!r}")




def resample(pcm: npt.ArrayLike | bytes, in_rate: int, out_rate: int,
             quality: str = DEFAULT_QUALITY) -> PcmArray:
    """One complete mono PCM16 buffer from `in_rate` to `out_rate` (int16 out)."""
    _check_rates(in_rate, out_rate)
    samples = as_pcm16(pcm)
    if in_rate == out_rate or samples.size == 0:
        return samples.copy()
    out = soxr.resample(samples, in_rate, out_rate, quality=quality)
    return np.asarray(out, dtype=np.int16)


class Resampler:
    """Streaming mono PCM16 resampler: feed chunks, get continuous output.

    Output lags input by the filter's delay; call `flush()` at the end of a
    stream to get the tail.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = DEFAULT_QUALITY) -> None:
        _check_rates(in_rate, out_rate)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._passthrough = in_rate == out_rate
        self._stream = (
            None if self._passthrough
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def process(self, pcm: npt.ArrayLike | bytes) -> PcmArray:
        """Resample one chunk; may return fewer samples than the rate ratio at first."""
        samples = as_pcm16(pcm)
        if self._stream is None:
            return samples.copy()
        return np.asarray(self._stream.resample_chunk(samples, last=False), dtype=np.int16)

    def flush(self) -> PcmArray:
        """The samples still inside the filter; the stream is finished afterwards."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        return np.asarray(
            self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True), dtype=np.int16
        )
