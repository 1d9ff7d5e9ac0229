"""RFC 3550 parsing and serialisation against hand-made packets."""

from __future__ import annotations

import pytest

from opensips_ai_core.media.rtp import (
    RtpPacket,
    RtpParseError,
    seq_add,
    seq_diff,
    ts_add,
    ts_diff,
)

# V=2, no P/X, CC=0, M=1, PT=0, seq=0x1234, ts=0xDEADBEEF, SSRC=0x01020304, payload "abc".
PLAIN = bytes.fromhex("80 80 1234 DEADBEEF 01020304") + b"abc"
# V=2, CC=2, PT=8, seq=0xFFFF, ts=1, SSRC=2, CSRCs 0xAAAAAAAA and 0xBBBBBBBB, payload 0xD5 x 4.
WITH_CSRC = bytes.fromhex("82 08 FFFF 00000001 00000002 AAAAAAAA BBBBBBBB") + b"\xd5" * 4
# X=1: profile 0xBEDE, 2 words of extension data, then payload "xy".
WITH_EXTENSION = (bytes.fromhex("90 00 0001 00000064 00000007 BEDE 0002")
                  + bytes(range(8)) + b"xy")
# P=1: payload "hello" then 3 padding bytes (last holds the count).
WITH_PADDING = bytes.fromhex("A0 00 0002 000000C8 00000007") + b"hello" + b"\x00\x00\x03"
# Everything at once: P, X, CC=1, marker, PT 101.
ALL_FEATURES = (bytes.fromhex("B1 E5 0003 0000012C 00000007 CAFEBABE 1000 0001 01020304")
                + b"\x05\x8a\x03\x20" + b"\x00\x02")


def test_plain_packet() -> None:
    packet = RtpPacket.parse(PLAIN)
    assert packet.marker and packet.payload_type == 0
    assert (packet.sequence_number, packet.timestamp, packet.ssrc) == (0x1234, 0xDEADBEEF,
                                                                      0x01020304)
    assert packet.payload == b"abc" and packet.csrc == () and packet.padding == 0
    assert packet.extension_profile is None
    assert packet.serialize() == PLAIN


def test_csrc_list() -> None:
    packet = RtpPacket.parse(WITH_CSRC)
    assert packet.csrc == (0xAAAAAAAA, 0xBBBBBBBB)
    assert packet.payload == b"\xd5" * 4 and not packet.marker and packet.payload_type == 8
    assert packet.sequence_number == 0xFFFF
    assert packet.serialize() == WITH_CSRC


def test_header_extension() -> None:
    packet = RtpPacket.parse(WITH_EXTENSION)
    assert packet.extension_profile == 0xBEDE
    assert packet.extension == bytes(range(8))
    assert packet.payload == b"xy"
    assert packet.serialize() == WITH_EXTENSION


def test_padding_is_removed_from_the_payload() -> None:
    packet = RtpPacket.parse(WITH_PADDING)
    assert packet.payload == b"hello" and packet.padding == 3
    assert packet.serialize() == WITH_PADDING


def test_all_features_together() -> None:
    packet = RtpPacket.parse(ALL_FEATURES)
    assert packet.marker and packet.payload_type == 101
    assert packet.csrc == (0xCAFEBABE,)
    assert packet.extension_profile == 0x1000 and packet.extension == bytes.fromhex("01020304")
    assert packet.payload == b"\x05\x8a\x03\x20" and packet.padding == 2
    assert packet.serialize() == ALL_FEATURES


def test_serialize_then_parse_round_trip() -> None:
    packet = RtpPacket(payload_type=96, sequence_number=65535, timestamp=2**32 - 1, ssrc=42,
                       payload=b"\x01" * 160, marker=True, csrc=(1, 2, 3),
                       extension_profile=0xBEDE, extension=b"\x00" * 4, padding=4)
    assert RtpPacket.parse(packet.serialize()) == packet


@pytest.mark.parametrize(("data", "message"), [
    (b"", "too short: 0 bytes"),
    (PLAIN[:11], "too short: 11 bytes"),
    (b"\x40" + PLAIN[1:], "RTP version 1, expected 2"),
    (b"\x00" * 12, "RTP version 0"),
    (WITH_CSRC[:16], "CC=2 needs 20 bytes, got 16"),
    (WITH_EXTENSION[:13], "X bit set but no extension header"),
    (WITH_EXTENSION[:20], "extension of 2 words needs 24 bytes, got 20"),
    (WITH_PADDING[:-3] + b"\x00\x00\x09", "padding count 9 is invalid"),
    (WITH_PADDING[:-3] + b"\x00\x00\x00", "padding count 0 is invalid"),
    (bytes.fromhex("A0 00 0002 000000C8 00000007"), "P bit set but no padding count"),
    (b"INVITE sip:bot@example.com SIP/2.0\r\n", "RTP version 1"),
])
def test_garbage_and_truncated_packets_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        RtpPacket.parse(data)


def test_invalid_fields_are_refused_when_building() -> None:
    with pytest.raises(ValueError, match=r"payload_type must be 0\.\.127"):
        RtpPacket(payload_type=128, sequence_number=0, timestamp=0, ssrc=0)
    with pytest.raises(ValueError, match="sequence_number"):
        RtpPacket(payload_type=0, sequence_number=65536, timestamp=0, ssrc=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        RtpPacket(payload_type=0, sequence_number=0, timestamp=0, ssrc=0,
                  extension_profile=1, extension=b"abc")


def test_wrap_around_arithmetic() -> None:
    assert seq_add(65535, 1) == 0 and seq_add(65530, 10) == 4
    assert ts_add(2**32 - 80, 160) == 80
    assert seq_diff(2, 65534) == 4 and seq_diff(65534, 2) == -4 and seq_diff(7, 7) == 0
    assert ts_diff(80, 2**32 - 80) == 160 and ts_diff(2**32 - 80, 80) == -160
