"""RTP packets (RFC 3550 section 5.1): parse and serialize, plus wrap-around arithmetic.

    0                   1                   2                   3
    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
   |V=2|P|X|  CC   |M|     PT      |       sequence number         |
   |                           timestamp                           |
   |           synchronization source (SSRC) identifier            |
   |            contributing source (CSRC) identifiers  (CC x 32)  |
   |   extension profile (X)       |   extension length in words   |
   |   payload ...                          | padding | pad count  |
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
HEADER_SIZE = 12
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
_HEADER = struct.Struct("!BBHII")


class RtpParseError(ValueError):
    """A datagram that is not a well-formed RTP packet."""


def seq_add(seq: int, delta: int) -> int:
    """Sequence number `delta` packets after `seq`, modulo 2^16."""
    return (seq + delta) % SEQ_MOD


def ts_add(ts: int, delta: int) -> int:
    """Timestamp `delta` ticks after `ts`, modulo 2^32."""
    return (ts + delta) % TS_MOD


def seq_diff(newer: int, older: int) -> int:
    """Signed distance newer - older across the 16-bit wrap, in [-2^15, 2^15)."""
    return (newer - older + (SEQ_MOD >> 1)) % SEQ_MOD - (SEQ_MOD >> 1)


def ts_diff(newer: int, older: int) -> int:
    """Signed distance newer - older across the 32-bit wrap, in [-2^31, 2^31)."""
    return (newer - older + (TS_MOD >> 1)) % TS_MOD - (TS_MOD >> 1)


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None  # None: no header extension (X bit clear)
    extension: bytes = b""                # extension data, a multiple of 4 bytes
    padding: int = 0                      # padding bytes after the payload, count included

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload_type must be 0..127, got {self.payload_type}")
        if not 0 <= self.sequence_number < SEQ_MOD:
            raise ValueError(f"sequence_number must be 0..65535, got {self.sequence_number}")
        if not 0 <= self.timestamp < TS_MOD:
            raise ValueError(f"timestamp must be 0..2^32-1, got {self.timestamp}")
        if not 0 <= self.ssrc < TS_MOD:
            raise ValueError(f"ssrc must be 0..2^32-1, got {self.ssrc}")
        if len(self.csrc) > 15:
            raise ValueError(f"at most 15 CSRCs fit the CC field, got {len(self.csrc)}")
        if len(self.extension) % 4:
            raise ValueError(f"extension length must be a multiple of 4, got {len(self.extension)}")
        if self.extension and self.extension_profile is None:
            raise ValueError("extension data needs an extension_profile")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"padding must be 0..255 bytes, got {self.padding}")

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse one datagram; raise RtpParseError saying what is wrong with it."""
        data = bytes(data)
        size = len(data)
        if size < HEADER_SIZE:
            raise RtpParseError(f"RTP packet too short: {size} bytes, the header needs 12")
        first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpParseError(f"RTP version {version}, expected 2")
        has_padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        csrc_count = first & 0x0F
        offset = HEADER_SIZE
        csrc_end = offset + 4 * csrc_count
        if size < csrc_end:
            raise RtpParseError(
                f"RTP packet truncated: CC={csrc_count} needs {csrc_end} bytes, got {size}"
            )
        csrc = struct.unpack_from(f"!{csrc_count}I", data, offset) if csrc_count else ()
        offset = csrc_end
        profile: int | None = None
        extension = b""
        if has_extension:
            if size < offset + 4:
                raise RtpParseError(
                    f"RTP packet truncated: X bit set but no extension header at byte {offset}"
                )
            profile, words = struct.unpack_from("!HH", data, offset)
            ext_end = offset + 4 + 4 * words
            if size < ext_end:
                raise RtpParseError(
                    f"RTP packet truncated: extension of {words} words needs {ext_end} bytes, "
                    f"got {size}"
                )
            extension = data[offset + 4:ext_end]
            offset = ext_end
        end = size
        padding = 0
        if has_padding:
            if size == offset:
                raise RtpParseError("RTP packet has the P bit set but no padding count byte")
            padding = data[-1]
            if padding == 0 or offset + padding > size:
                raise RtpParseError(
                    f"RTP padding count {padding} is invalid for {size - offset} bytes after "
                    "the header"
                )
            end = size - padding
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=data[offset:end],
            marker=bool(second & 0x80),
            csrc=tuple(csrc),
            extension_profile=profile,
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        """The packet on the wire (padding bytes are zeros ending with the count)."""
        has_extension = self.extension_profile is not None
        first = (RTP_VERSION << 6) | (0x20 if self.padding else 0) \
            | (0x10 if has_extension else 0) | len(self.csrc)
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if has_extension:
            assert self.extension_profile is not None
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)
