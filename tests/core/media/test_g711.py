"""G.711 against ITU-T reference values, and round trips of every code."""

from __future__ import annotations

import numpy as np
import pytest

from opensips_ai_core.media import g711
from opensips_ai_core.media.g711 import (
    alaw_decode,
    alaw_encode,
    codec_by_name,
    ulaw_decode,
    ulaw_encode,
)

ALL_CODES = bytes(range(256))

# (code, linear) pairs from the G.711 decode tables (ITU-T G.711 / G.191 reference).
ULAW_REFERENCE = [(0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124), (0xFE, 8),
                  (0x7E, -8), (0xF0, 120), (0xEF, 132), (0xCE, 988), (0x8F, 16764)]
ALAW_REFERENCE = [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24),
                  (0xC5, 264), (0xFA, 1008), (0x7A, -1008)]


@pytest.mark.parametrize(("code", "linear"), ULAW_REFERENCE)
def test_ulaw_decodes_reference_values(code: int, linear: int) -> None:
    assert ulaw_decode(bytes([code])).tolist() == [linear]


@pytest.mark.parametrize(("code", "linear"), ALAW_REFERENCE)
def test_alaw_decodes_reference_values(code: int, linear: int) -> None:
    assert alaw_decode(bytes([code])).tolist() == [linear]


def test_encoders_map_reference_linear_values_to_their_codes() -> None:
    pcm = np.array([0, 32767, -32768, 1000, -1000, 8, -9], dtype=np.int16)
    assert ulaw_encode(pcm) == bytes([0xFF, 0x80, 0x00, 0xCE, 0x4E, 0xFE, 0x7D])
    assert alaw_encode(pcm) == bytes([0xD5, 0xAA, 0x2A, 0xFA, 0x7A, 0xD5, 0x55])


def test_ulaw_round_trip_of_all_256_codes() -> None:
    decoded = ulaw_decode(ALL_CODES)
    reencoded = ulaw_encode(decoded)
    # 0x7F is mu-law's "negative zero": it decodes to 0, which encodes as 0xFF.
    assert [i for i in range(256) if reencoded[i] != i] == [0x7F]
    assert np.array_equal(ulaw_decode(reencoded), decoded)


def test_alaw_round_trip_of_all_256_codes() -> None:
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode),
                                                (alaw_encode, alaw_decode)])
def test_quantisation_error_is_small_relative_to_the_signal(encode, decode) -> None:
    pcm = np.arange(-32768, 32768, 7, dtype=np.int32).astype(np.int16)
    error = np.abs(decode(encode(pcm)).astype(np.int32) - pcm.astype(np.int32))
    magnitude = np.abs(pcm.astype(np.int32))
    # Logarithmic companding: the step is at most ~1/16 of the magnitude (plus the smallest step).
    assert np.all(error <= magnitude / 16 + 16)


def test_decoders_return_int16_and_accept_bytes_forms() -> None:
    for data in (b"\x00\xff", bytearray(b"\x00\xff"), memoryview(b"\x00\xff")):
        out = ulaw_decode(data)
        assert out.dtype == np.int16 and out.size == 2


def test_encoders_accept_little_endian_bytes_and_reject_wrong_input() -> None:
    pcm = np.array([1000, -1000], dtype=np.int16)
    assert ulaw_encode(pcm.astype("<i2").tobytes()) == ulaw_encode(pcm)
    with pytest.raises(ValueError, match="even length"):
        ulaw_encode(b"\x00")
    with pytest.raises(TypeError, match="int16"):
        alaw_encode(np.zeros(4, dtype=np.float32))


def test_codec_objects() -> None:
    pcmu, pcma = codec_by_name("PCMU"), codec_by_name("pcma")
    assert (pcmu.name, pcmu.payload_type, pcmu.clock_rate) == ("PCMU", 0, 8000)
    assert (pcma.name, pcma.payload_type, pcma.clock_rate) == ("PCMA", 8, 8000)
    assert pcmu.silence(160) == b"\xff" * 160
    assert pcma.silence(160) == b"\xd5" * 160
    tone = (3000 * np.sin(np.arange(160) / 5)).astype(np.int16)
    assert np.array_equal(pcmu.decode(pcmu.encode(tone)), ulaw_decode(ulaw_encode(tone)))
    with pytest.raises(ValueError, match="unsupported codec 'G729'"):
        codec_by_name("G729")


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError):
        g711.ULAW_DECODE_TABLE[0] = 1
