"""G.711 PCMU (mu-law) and PCMA (A-law) with numpy lookup tables.

`audioop` is gone in Python 3.13, so the tables are built once at import from
the ITU-T G.711 reference algorithm (the same one as Sun's public-domain g711.c):
a 65,536-entry encode table indexed by the int16 sample seen as uint16, and a
256-entry decode table. Encoding/decoding a 20 ms frame is then one fancy-index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from opensips_ai_core.media.pcm import PcmArray, as_pcm16

_QUANT_MASK = 0x0F
_SEG_SHIFT = 4
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # in 14-bit units (after >> 2)
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], np.int32)


def _all_int16() -> npt.NDArray[np.int32]:
    # Index i of an encode table is the uint16 view of an int16 sample.
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 2
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")  # first seg with mag <= end
    uval = (np.minimum(seg, 7) << _SEG_SHIFT) | ((mag >> (np.minimum(seg, 7) + 1)) & _QUANT_MASK)
    uval = np.where(seg >= 8, 0x7F, uval)
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = ((u & _QUANT_MASK) << 3) + _ULAW_BIAS
    t = t << ((u & 0x70) >> _SEG_SHIFT)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 3
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    mag = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    segc = np.minimum(seg, 7)
    shift = np.where(segc < 2, 1, segc)
    aval = (segc << _SEG_SHIFT) | ((mag >> shift) & _QUANT_MASK)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & _QUANT_MASK) << 4
    seg = (a & 0x70) >> _SEG_SHIFT
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


ULAW_ENCODE_TABLE = _build_ulaw_encode()
ULAW_DECODE_TABLE = _build_ulaw_decode()
ALAW_ENCODE_TABLE = _build_alaw_encode()
ALAW_DECODE_TABLE = _build_alaw_decode()
for _table in (ULAW_ENCODE_TABLE, ULAW_DECODE_TABLE, ALAW_ENCODE_TABLE, ALAW_DECODE_TABLE):
    _table.setflags(write=False)




def ulaw_encode(pcm: npt.ArrayLike | bytes) -> bytes:
    """PCM16 samples (int16 array, or little-endian bytes) -> mu-law bytes."""
    return ULAW_ENCODE_TABLE[as_pcm16(pcm).view(np.uint16)].tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> PcmArray:
    """Mu-law bytes -> int16 samples."""
    return ULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: npt.ArrayLike | bytes) -> bytes:
    """PCM16 samples (int16 array, or little-endian bytes) -> A-law bytes."""
    return ALAW_ENCODE_TABLE[as_pcm16(pcm).view(np.uint16)].tobytes()


def alaw_decode(data: bytes | bytearray | memoryview) -> PcmArray:
    """A-law bytes -> int16 samples."""
    return ALAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


@dataclass(frozen=True)
class Codec:
    """An 8 kHz G.711 codec: one byte per sample, static RTP payload type."""

    name: ClassVar[str] = ""
    payload_type: ClassVar[int] = -1
    clock_rate: ClassVar[int] = 8000

    def encode(self, pcm: npt.ArrayLike | bytes) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes | bytearray | memoryview) -> PcmArray:
        raise NotImplementedError

    def silence(self, samples: int) -> bytes:
        """The codec's encoding of `samples` zero samples (what an idle line sends)."""
        return self.encode(np.zeros(samples, dtype=np.int16))


@dataclass(frozen=True)
class PcmuCodec(Codec):
    name: ClassVar[str] = "PCMU"
    payload_type: ClassVar[int] = 0

    def encode(self, pcm: npt.ArrayLike | bytes) -> bytes:
        return ulaw_encode(pcm)

    def decode(self, data: bytes | bytearray | memoryview) -> PcmArray:
        return ulaw_decode(data)


@dataclass(frozen=True)
class PcmaCodec(Codec):
    name: ClassVar[str] = "PCMA"
    payload_type: ClassVar[int] = 8

    def encode(self, pcm: npt.ArrayLike | bytes) -> bytes:
        return alaw_encode(pcm)

    def decode(self, data: bytes | bytearray | memoryview) -> PcmArray:
        return alaw_decode(data)


CODECS: dict[str, Codec] = {"PCMU": PcmuCodec(), "PCMA": PcmaCodec()}


def codec_by_name(name: str) -> Codec:
    """"PCMU"/"PCMA" (case-insensitive, as in SDP rtpmap) -> the codec."""
    try:
        return CODECS[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported codec {name!r}; supported: {', '.join(CODECS)}") from None
