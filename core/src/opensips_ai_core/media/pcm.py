"""PCM16 samples as the media layer passes them around: 1-D int16 numpy arrays."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

PcmArray = npt.NDArray[np.int16]


def as_pcm16(pcm: npt.ArrayLike | bytes, *, copy: bool = False) -> PcmArray:
    """int16 samples, or little-endian PCM16 bytes -> a 1-D int16 array.

    `copy=True` when the result is kept: the caller may reuse its own buffer.
    """
    if isinstance(pcm, bytes | bytearray | memoryview):
        if len(pcm) % 2:
            raise ValueError(f"PCM16 bytes must have an even length, got {len(pcm)}")
        return np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=copy)
    array = np.asarray(pcm)
    if array.dtype != np.int16:
        raise TypeError(f"PCM16 samples must be int16, got {array.dtype}")
    return array.reshape(-1).copy() if copy else array.reshape(-1)
