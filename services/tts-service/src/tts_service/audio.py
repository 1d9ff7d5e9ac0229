"""Engine audio (float, native rate) to PCM16 at the requested rate, in playback-sized chunks."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
import soxr

# The most audio one AudioChunk carries, so a client can start playback early.
CHUNK_MS = 100
_INT16_MAX = 32767.0


def to_pcm16(audio: np.ndarray, native_rate: int, target_rate: int) -> bytes:
    """Resample one sentence's float audio (-1..1) with soxr and encode PCM16 little-endian."""
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    if target_rate != native_rate and samples.size:
        samples = soxr.resample(samples, native_rate, target_rate, quality="HQ")
    pcm = np.clip(samples * _INT16_MAX, -_INT16_MAX, _INT16_MAX).astype("<i2")
    return pcm.tobytes()


def split_chunks(pcm: bytes, sample_rate: int, chunk_ms: int = CHUNK_MS) -> Iterator[bytes]:
    """`pcm` in pieces of at most `chunk_ms` of audio; one empty piece if `pcm` is empty."""
    step = max(2, sample_rate * chunk_ms // 1000 * 2)
    if not pcm:
        yield b""
        return
    for offset in range(0, len(pcm), step):
        yield pcm[offset:offset + step]


class WavError(ValueError):
    pass


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Float samples and rate of a PCM16 mono WAV as espeak-ng writes it to stdout.

    espeak-ng streams, so its RIFF and data sizes are placeholders (0x7ffff000):
    the data chunk is taken to run to the end of the bytes actually received.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE stream")
    offset = 12
    rate = channels = bits = 0
    while offset + 8 <= len(data):
        tag, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if tag == b"fmt ":
            _fmt, channels, rate, _byte_rate, _align, bits = struct.unpack_from(
                "<HHIIHH", data, body
            )
        elif tag == b"data":
            if rate == 0 or bits != 16:
                raise WavError(f"unsupported WAV format: {bits}-bit, rate {rate}")
            payload = data[body:]
            payload = payload[: len(payload) - len(payload) % (2 * max(channels, 1))]
            samples = np.frombuffer(payload, dtype="<i2").astype(np.float32) / _INT16_MAX
            if channels > 1:
                samples = samples.reshape(-1, channels).mean(axis=1)
            return samples, rate
        offset = body + size + (size & 1)
    raise WavError("no data chunk")
