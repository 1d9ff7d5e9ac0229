"""SDP (RFC 4566) model, parser and serializer for G.711 voice.

Only what a voice bot needs is modelled as fields (origin, connection, media with
payload types, rtpmap/fmtp, direction, ptime); every other line is kept verbatim
so that a parsed description serializes back without losing information.

`SdpError` (a ValueError) is the only exception `parse_sdp` raises for any text:
numbers are ASCII decimals of bounded length (never `int()` on `²` or on 5000
digits), RTP payload types are 0..127 (RFC 3550 5.1: 7 bits). The offer/answer
step (RFC 3264) is offer_answer.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# Static payload types (RFC 3551) that may appear without an rtpmap line.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    18: ("G729", 8000),
}
TELEPHONE_EVENT = "telephone-event"
MAX_SDP_CHARS = 16384
MAX_PAYLOAD_TYPE = 127
_DECIMAL = re.compile(r"[0-9]{1,20}")


class SdpError(ValueError):
    """The text is not a usable SDP; the message names the offending line."""


@dataclass
class Origin:
    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    net_type: str = "IN"
    addr_type: str = "IP4"
    address: str = "127.0.0.1"

    def to_line(self) -> str:
        return (f"o={self.username} {self.session_id} {self.session_version} "
                f"{self.net_type} {self.addr_type} {self.address}")


@dataclass
class RtpMap:
    encoding: str
    clock_rate: int
    channels: int | None = None

    def to_value(self) -> str:
        text = f"{self.encoding}/{self.clock_rate}"
        return f"{text}/{self.channels}" if self.channels else text


@dataclass
class MediaDescription:
    media: str                      # "audio", "video", ...
    port: int
    proto: str                      # "RTP/AVP", ...
    formats: list[str]              # payload types as written (strings: non-RTP protos use names)
    connection: str | None = None   # media-level c= address
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str | None = None    # media-level direction attribute, None when absent
    ptime: int | None = None
    attributes: list[str] = field(default_factory=list)  # other a= values, verbatim
    other_lines: list[str] = field(default_factory=list)  # other lines (i=, b=, k=), verbatim

    @property
    def payload_types(self) -> list[int]:
        return [pt for f in self.formats
                if (pt := _decimal(f)) is not None and pt <= MAX_PAYLOAD_TYPE]

    def codec_of(self, payload_type: int) -> RtpMap | None:
        """The rtpmap for a payload type, falling back to the static table (PT 0, 8, ...)."""
        if payload_type in self.rtpmap:
            return self.rtpmap[payload_type]
        static = STATIC_PAYLOAD_TYPES.get(payload_type)
        return RtpMap(static[0], static[1]) if static else None


@dataclass
class SessionDescription:
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: str | None = None   # session-level c= address
    timing: str = "0 0"
    direction: str | None = None    # session-level direction attribute
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)

    def connection_for(self, media: MediaDescription) -> str | None:
        return media.connection or self.connection

    def direction_for(self, media: MediaDescription) -> str:
        return media.direction or self.direction or "sendrecv"

    def to_text(self) -> str:
        lines = ["v=0", self.origin.to_line(), f"s={self.session_name or '-'}"]
        lines += self.other_lines
        if self.connection:
            lines.append(f"c=IN {addr_type(self.connection)} {self.connection}")
        lines.append(f"t={self.timing}")
        lines += [f"a={a}" for a in self.attributes]
        if self.direction:
            lines.append(f"a={self.direction}")
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            lines += m.other_lines
            if m.connection:
                lines.append(f"c=IN {addr_type(m.connection)} {m.connection}")
            for pt in m.payload_types:
                if pt in m.rtpmap:
                    lines.append(f"a=rtpmap:{pt} {m.rtpmap[pt].to_value()}")
                if pt in m.fmtp:
                    lines.append(f"a=fmtp:{pt} {m.fmtp[pt]}")
            if m.ptime is not None:
                lines.append(f"a=ptime:{m.ptime}")
            lines += [f"a={a}" for a in m.attributes]
            if m.direction:
                lines.append(f"a={m.direction}")
        return "\r\n".join(lines) + "\r\n"


def addr_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _parse_connection(value: str, lineno: int) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"line {lineno}: malformed c= line {value!r} (expected 'IN IP4 <address>')")
    # Multicast forms carry /ttl: the address is what we need.
    return parts[2].split("/")[0]


def _decimal(text: str) -> int | None:
    """ASCII digits only (at most 20): `str.isdigit()` and `int()` accept more than SDP does."""
    return int(text) if _DECIMAL.fullmatch(text) else None


def _parse_int(text: str, what: str, lineno: int) -> int:
    value = _decimal(text)
    if value is None:
        raise SdpError(f"line {lineno}: {what} {text[:30]!r} is not a decimal number")
    return value


def _parse_payload_type(text: str, lineno: int) -> int:
    value = _parse_int(text, "payload type", lineno)
    if value > MAX_PAYLOAD_TYPE:
        raise SdpError(f"line {lineno}: payload type {value} is over {MAX_PAYLOAD_TYPE}")
    return value


def parse_sdp(text: str) -> SessionDescription:
    """Parse SDP text (CRLF or LF line ends); raise SdpError naming the bad line."""
    if len(text) > MAX_SDP_CHARS:
        raise SdpError(f"SDP of {len(text)} characters exceeds the {MAX_SDP_CHARS} limit")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise SdpError("empty SDP")
    if lines[0].strip() != "v=0":
        raise SdpError(f"line 1: SDP must start with 'v=0', got {lines[0][:40]!r}")
    sdp = SessionDescription()
    seen_origin = False
    current: MediaDescription | None = None
    for lineno, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"line {lineno}: not a '<type>=<value>' line: {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError(f"line {lineno}: malformed o= line {value!r} (expected 6 fields)")
            sdp.origin = Origin(parts[0], _parse_int(parts[1], "session id", lineno),
                                _parse_int(parts[2], "session version", lineno),
                                parts[3], parts[4], parts[5])
            seen_origin = True
        elif kind == "s" and current is None:
            sdp.session_name = value
        elif kind == "t" and current is None:
            sdp.timing = value
        elif kind == "c":
            address = _parse_connection(value, lineno)
            if current is None:
                sdp.connection = address
            else:
                current.connection = address
        elif kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"line {lineno}: malformed m= line {value!r} "
                               "(expected '<media> <port> <proto> <fmt> ...')")
            port_text = parts[1].split("/")[0]  # "<port>/<count>" form
            port = _parse_int(port_text, "media port", lineno)
            if not 0 <= port <= 65535:
                raise SdpError(f"line {lineno}: media port {port} out of range")
            if parts[2].upper().startswith("RTP/"):
                for fmt in parts[3:]:
                    _parse_payload_type(fmt, lineno)
            current = MediaDescription(parts[0], port, parts[2], parts[3:])
            sdp.media.append(current)
        elif kind == "a":
            _parse_attribute(sdp, current, value, lineno)
        elif current is None:
            sdp.other_lines.append(line)
        else:
            current.other_lines.append(line)
    if not seen_origin:
        raise SdpError("missing o= line")
    return sdp


def _parse_attribute(sdp: SessionDescription, current: MediaDescription | None,
                     value: str, lineno: int) -> None:
    name, _, arg = value.partition(":")
    if name in DIRECTIONS and not arg:
        if current is None:
            sdp.direction = name
        else:
            current.direction = name
        return
    if current is None:
        sdp.attributes.append(value)
        return
    if name == "rtpmap":
        pt_text, _, mapping = arg.partition(" ")
        pieces = mapping.strip().split("/")
        if len(pieces) < 2 or not pieces[0]:
            raise SdpError(f"line {lineno}: malformed rtpmap {value[:60]!r} "
                           "(expected 'rtpmap:<pt> <encoding>/<rate>')")
        payload_type = _parse_payload_type(pt_text, lineno)
        channels = _parse_int(pieces[2], "channel count", lineno) if len(pieces) > 2 else None
        current.rtpmap[payload_type] = RtpMap(
            pieces[0], _parse_int(pieces[1], "clock rate", lineno), channels)
    elif name == "fmtp":
        pt_text, _, params = arg.partition(" ")
        if _decimal(pt_text) is None:
            # Non-numeric formats (e.g. T.38) keep their fmtp verbatim.
            current.attributes.append(value)
            return
        current.fmtp[_parse_payload_type(pt_text, lineno)] = params.strip()
    elif name == "ptime":
        current.ptime = _parse_int(arg.strip(), "ptime", lineno)
    else:
        current.attributes.append(value)
