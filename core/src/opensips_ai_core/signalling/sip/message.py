"""SIP message parsing and serialization (RFC 3261 section 7), bounded and strict enough.

Tolerated: compact header names, folded (continuation) header lines, several
values in one Via/Route/Record-Route/Contact line, LF-only line ends, no blank
line after the headers of a body-less datagram. Refused with a `SipParseError`
whose `kind` names the problem: oversized datagrams, binary garbage, a bad start
line or header line, a SIP version other than 2.0 (`unsupported_version`, the
transport answers 505), a missing mandatory header, a bad CSeq, and a
Content-Length that is invalid, over the limit or longer than the datagram
(RFC 3261 18.3). The error carries whatever headers were parsed so that the
transport can still answer 400 when enough of them are present.

`SipParseError` (a ValueError) is the only exception these functions raise for
any input: numbers are read with `decimal`, which takes ASCII digits only (so
neither `²` nor a 5000-digit string reaches `int()`). Method names are
case-sensitive (RFC 3261 7.1): `options` is not OPTIONS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from opensips_ai_core.signalling.headers import canonical_name

MAX_MESSAGE_SIZE = 32 * 1024
SIP_VERSION = "SIP/2.0"
MANDATORY_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

# Headers whose comma-separated values are separate entries (RFC 3261 7.3.1).
MULTI_VALUE = {"Via", "Route", "Record-Route", "Contact"}
TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_VERSION = re.compile(r"SIP/[0-9]{1,3}\.[0-9]{1,3}", re.IGNORECASE)  # RFC 3261 7.1
_DECIMAL = re.compile(r"[0-9]{1,10}")


class SipParseError(ValueError):
    """A datagram that is not a usable SIP message. `partial` holds what could be parsed."""

    def __init__(self, kind: str, detail: str, partial: SipMessage | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.partial = partial


@dataclass
class SipMessage:
    """A request (method + uri) or a response (status + reason), headers in order."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        key = canonical_name(name).lower()
        return next((v for k, v in self.headers if k.lower() == key), None)

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name).lower()
        return [v for k, v in self.headers if k.lower() == key]

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence of a header by one value (appended when absent)."""
        key = canonical_name(name).lower()
        kept = [(k, v) for k, v in self.headers if k.lower() != key]
        self.headers = [*kept, (canonical_name(name), value)]

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical_name(name), value))

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = parse_cseq(self.get("CSeq") or "")
        return number, method

    def to_bytes(self) -> bytes:
        if self.is_request:
            start = f"{self.method} {self.uri} {SIP_VERSION}"
        else:
            start = f"{SIP_VERSION} {self.status} {self.reason}"
        lines = [start]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def split_values(value: str) -> list[str]:
    """Split a header value on commas outside quotes and <...> (for Via, Route, Contact)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    previous = ""
    for char in value:
        if char == '"' and previous != "\\":
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(0, depth - 1)
        if char == "," and not quoted and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        previous = char
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def decimal(text: str) -> int | None:
    """A non-negative decimal of ASCII digits (at most 10 of them), else None.

    `str.isdigit()` accepts `²` and other Unicode digits that `int()` refuses, and
    `int()` refuses more than 4300 digits: neither may turn into an exception here.
    """
    return int(text) if _DECIMAL.fullmatch(text) else None


def parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    number = decimal(parts[0]) if len(parts) == 2 else None
    if number is None or not TOKEN.match(parts[1]):
        raise SipParseError("bad_cseq", f"CSeq {value[:60]!r} is not '<number> <method>'")
    if number >= 2**31:
        raise SipParseError("bad_cseq", f"CSeq number {number} is over 2**31")
    return number, parts[1]


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = data.find(separator)
        if index >= 0:
            return data[:index], data[index + len(separator):]
    return data, b""


def parse_message(data: bytes, max_size: int = MAX_MESSAGE_SIZE) -> SipMessage:
    """Parse one datagram; raise SipParseError(kind, ...) when it is unusable."""
    if len(data) > max_size:
        # Parse the head anyway (bounded) so that the caller may answer 513.
        partial = _try_partial(data[: min(len(data), 8192)])
        raise SipParseError("oversized", f"{len(data)} bytes over the {max_size} limit", partial)
    head_bytes, rest = _split_head(data)
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("binary", "the header section is not UTF-8 text") from None
    if "\x00" in head:
        raise SipParseError("binary", "NUL byte in the header section")
    lines = head.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)  # RFC 3261 7.5: ignore CRLFs before the start line (keep-alives)
    if not lines:
        raise SipParseError("empty", "no start line")
    message, version = _parse_start_line(lines[0])
    _parse_headers(message, lines[1:])
    if version.upper() != SIP_VERSION:
        # Parsed on so that the transport can answer 505 (RFC 3261 8.2.6 / 21.5.7).
        raise SipParseError("unsupported_version", f"{version[:20]} is not {SIP_VERSION}",
                            message)
    for name in MANDATORY_HEADERS:
        if message.get(name) is None:
            raise SipParseError("missing_header", f"no {name} header", message)
    _number, cseq_method = _checked_cseq(message)
    if message.is_request and cseq_method != message.method:
        raise SipParseError("bad_cseq", f"CSeq method {cseq_method} differs from "
                                        f"{message.method}", message)
    length_text = message.get("Content-Length")
    if length_text is None:
        message.body = rest  # allowed over UDP: the body is the rest of the datagram
        return message
    length = decimal(length_text.strip())
    if length is None:
        raise SipParseError("bad_content_length", f"Content-Length {length_text[:20]!r}",
                            message)
    if length > max_size:
        raise SipParseError("content_length_too_large",
                            f"Content-Length {length} over the {max_size} limit", message)
    if length > len(rest):
        raise SipParseError("truncated", f"Content-Length {length} but {len(rest)} body bytes",
                            message)
    message.body = rest[:length]  # bytes past Content-Length are discarded (RFC 3261 18.3)
    return message


def _checked_cseq(message: SipMessage) -> tuple[int, str]:
    try:
        return parse_cseq(message.get("CSeq") or "")
    except SipParseError as error:
        error.partial = message
        raise


def _parse_start_line(line: str) -> tuple[SipMessage, str]:
    """The message with its start line filled in, and the request's SIP version."""
    if line.startswith(SIP_VERSION + " "):
        parts = line.split(" ", 2)
        status = decimal(parts[1]) if len(parts) >= 2 and len(parts[1]) == 3 else None
        if status is None or status < 100:
            raise SipParseError("bad_start_line", f"status line {line[:60]!r}")
        return SipMessage(status=status, reason=parts[2] if len(parts) > 2 else ""), SIP_VERSION
    parts = line.split(" ")
    if len(parts) != 3 or not _VERSION.fullmatch(parts[2]) or not TOKEN.match(parts[0]) \
            or not parts[1]:
        raise SipParseError("bad_start_line", f"request line {line[:60]!r}")
    return SipMessage(method=parts[0], uri=parts[1]), parts[2]


def _parse_headers(message: SipMessage, lines: list[str]) -> None:
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            # A folded continuation of the previous header (RFC 3261 7.3.1).
            if not message.headers:
                raise SipParseError("bad_header", "continuation line before any header",
                                    message)
            name, value = message.headers[-1]
            message.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not TOKEN.match(name):
            raise SipParseError("bad_header", f"header line {line[:60]!r}", message)
        message.headers.append((canonical_name(name), value.strip()))
    # Split multi-value headers only after unfolding.
    split: list[tuple[str, str]] = []
    for name, value in message.headers:
        if name in MULTI_VALUE and value != "*":
            split += [(name, v) for v in split_values(value)]
        else:
            split.append((name, value))
    message.headers = split


def _try_partial(data: bytes) -> SipMessage | None:
    head, _ = _split_head(data)
    try:
        lines = head.decode("utf-8").replace("\r\n", "\n").split("\n")
        message, _version = _parse_start_line(lines[0])
        # The last line may be cut in the middle: leave it out.
        _parse_headers(message, lines[1:-1])
        return message
    except (UnicodeDecodeError, SipParseError, IndexError):
        return None


@dataclass
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str]

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")


def parse_via(value: str) -> Via:
    protocol, _, rest = value.strip().partition(" ")
    sent_by, _, params_text = rest.strip().partition(";")
    params = {}
    for piece in params_text.split(";"):
        if piece.strip():
            key, _, val = piece.strip().partition("=")
            params[key.strip().lower()] = val.strip()
    host, port = split_host_port(sent_by.strip())
    transport = protocol.rsplit("/", 1)[-1].upper() if "/" in protocol else ""
    if not host or not transport:
        raise SipParseError("bad_via", f"Via {value[:60]!r}")
    return Via(transport, host, port, params)


def split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    if port_text:
        port = decimal(port_text)
        if port is None or not 0 < port < 65536:
            raise SipParseError("bad_via", f"port {port_text[:10]!r}")
        return host, port
    return host, None


def uri_host_port(uri: str) -> tuple[str, int]:
    """Where to send a request for a SIP URI: 'sip:u@h:p;x' → (h, p), default port 5060."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    hostport = rest.rsplit("@", 1)[-1]
    host, port = split_host_port(hostport)
    return host, port or 5060
