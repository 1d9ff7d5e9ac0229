"""RFC 4733 telephone-events: payload parsing and one report per key press."""

from __future__ import annotations

import pytest

from opensips_ai_core.media.dtmf import DtmfDetector, DtmfParseError, TelephoneEvent


def key_press(event: int, duration_steps: int = 3, volume: int = 10) -> list[bytes]:
    """The payloads a phone sends for one key press: updates, then the end packet 3 times."""
    updates = [TelephoneEvent(event, False, volume, 160 * i).serialize()
               for i in range(1, duration_steps + 1)]
    end = TelephoneEvent(event, True, volume, 160 * (duration_steps + 1)).serialize()
    return [*updates, end, end, end]


def test_payload_fields() -> None:
    event = TelephoneEvent.parse(bytes([0x05, 0x8A, 0x03, 0x20]))
    assert (event.event, event.end, event.volume, event.duration) == (5, True, 10, 800)
    assert event.digit == "5"
    assert TelephoneEvent.parse(bytes([0x0B, 0x3F, 0x00, 0xA0])).digit == "#"
    assert TelephoneEvent.parse(bytes([0x10, 0x00, 0x00, 0x00])).digit is None  # flash
    assert event.serialize() == bytes([0x05, 0x8A, 0x03, 0x20])


def test_short_payload_is_a_clear_error() -> None:
    with pytest.raises(DtmfParseError, match="too short: 3 bytes"):
        TelephoneEvent.parse(b"\x01\x02\x03")


def test_each_digit_reported_once_despite_three_end_packets() -> None:
    detector = DtmfDetector()
    digits: list[str] = []
    for i, event in enumerate(range(16)):
        for payload in key_press(event):
            digits += detector.feed(1000 + i * 8000, payload)
    assert "".join(digits) == "0123456789*#ABCD"


def test_same_digit_twice_is_two_presses() -> None:
    detector = DtmfDetector()
    digits: list[str] = []
    for timestamp in (16000, 24000):
        for payload in key_press(7):
            digits += detector.feed(timestamp, payload)
    assert digits == ["7", "7"]


def test_press_whose_end_packets_were_lost_is_reported_when_the_next_starts() -> None:
    detector = DtmfDetector()
    first = key_press(1)[:3]  # updates only: all three end packets lost
    digits: list[str] = []
    for payload in first:
        digits += detector.feed(100, payload)
    assert digits == []
    for payload in key_press(2):
        digits += detector.feed(9000, payload)
    assert digits == ["1", "2"]


def test_timestamp_wrap_between_presses() -> None:
    detector = DtmfDetector()
    digits: list[str] = []
    for timestamp, event in ((2**32 - 400, 3), (4000, 4)):
        for payload in key_press(event)[:2]:  # no end packets
            digits += detector.feed(timestamp, payload)
    assert digits == ["3"]  # the wrapped timestamp counts as newer
