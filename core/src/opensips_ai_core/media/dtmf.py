"""RFC 4733 telephone-event (DTMF) payloads and a receiver that reports each digit once.

    0                   1                   2                   3
    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
   |     event     |E|R| volume    |          duration             |

One key press is a run of packets sharing one RTP timestamp (the event's
start); the last is sent three times with the E (end) bit. The detector reports
a digit on its first end packet and remembers the timestamp so that the
retransmissions are ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from opensips_ai_core.media.rtp import ts_diff

# Events 0-15 of RFC 4733 section 3.2: the DTMF keys.
DTMF_EVENTS = "0123456789*#ABCD"
_PAYLOAD = struct.Struct("!BBH")


class DtmfParseError(ValueError):
    """A telephone-event payload that cannot be decoded."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int     # 0..63, in -dBm0
    duration: int   # in RTP timestamp units since the event's start

    @property
    def digit(self) -> str | None:
        """The DTMF key ("0".."9", "*", "#", "A".."D"), or None for other events."""
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> TelephoneEvent:
        if len(payload) < _PAYLOAD.size:
            raise DtmfParseError(
                f"telephone-event payload too short: {len(payload)} bytes, needs 4"
            )
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume must be 0..63, got {self.volume}")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


class DtmfDetector:
    """Turns a stream of telephone-event packets into digits, each reported once.

    A digit is reported on its first end packet. If every end packet of a key
    press is lost, the digit is still reported when the next event (a new
    timestamp) starts, so a press is never silently swallowed.
    """

    # Remember this many reported event timestamps (end packets come 3 times, in a row).
    _REMEMBER = 8

    def __init__(self) -> None:
        self._reported: list[int] = []
        self._pending: tuple[int, str] | None = None  # (timestamp, digit) seen without an end

    def feed(self, timestamp: int, payload: bytes | bytearray | memoryview) -> list[str]:
        """One telephone-event packet -> the digits it completes (usually zero or one).

        Raises DtmfParseError on a short payload.
        """
        event = TelephoneEvent.parse(payload)
        digits: list[str] = []
        if self._pending is not None and self._pending[0] != timestamp \
                and ts_diff(timestamp, self._pending[0]) > 0:
            # A new event started and the previous one never ended (its end packets were lost).
            self._report(self._pending[0])
            digits.append(self._pending[1])
            self._pending = None
        digit = event.digit
        if digit is None or timestamp in self._reported:
            return digits
        if event.end:
            self._report(timestamp)
            self._pending = None
            digits.append(digit)
        else:
            self._pending = (timestamp, digit)
        return digits

    def _report(self, timestamp: int) -> None:
        self._reported.append(timestamp)
        del self._reported[:-self._REMEMBER]
