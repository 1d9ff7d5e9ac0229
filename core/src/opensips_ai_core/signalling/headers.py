"""SIP header helpers that both backends use: header names (compact forms, canonical
spelling), name-addr URIs and parameters, and the reason phrase of a status code.

The direct-SIP parser (sip/message.py) and the OpenSIPS backend (whose events carry
the SIP headers as text) read headers the same way through this module.
"""

from __future__ import annotations

COMPACT_FORMS = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "r": "Refer-To", "u": "Allow-Events", "a": "Accept-Contact",
}
# Canonical spelling of the headers we read or write; others keep their received spelling.
CANONICAL = {name.lower(): name for name in (
    "Call-ID", "Contact", "Content-Encoding", "Content-Length", "Content-Type", "From",
    "Subject", "Supported", "To", "Via", "CSeq", "Max-Forwards", "Route", "Record-Route",
    "Allow", "Accept", "User-Agent", "Server", "Require", "Unsupported", "Event",
    "Refer-To", "Allow-Events", "Accept-Contact", "Reason", "Warning", "Retry-After",
)}
# Reason phrases for the status codes we send.
REASONS = {
    100: "Trying", 180: "Ringing", 200: "OK", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 415: "Unsupported Media Type",
    420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}


def canonical_name(name: str) -> str:
    name = name.strip()
    if len(name) == 1:
        name = COMPACT_FORMS.get(name.lower(), name)
    return CANONICAL.get(name.lower(), name)


def header_params(value: str) -> dict[str, str]:
    """Parameters after the URI/value: ';tag=x;lr' → {'tag': 'x', 'lr': ''} (outside <>)."""
    end = value.rfind(">")
    tail = value[end + 1:] if end >= 0 else value.split(";", 1)[1] if ";" in value else ""
    params: dict[str, str] = {}
    for raw in tail.split(";"):
        piece = raw.strip()
        if piece:
            key, _, val = piece.partition("=")
            params[key.strip().lower()] = val.strip()
    return params


def header_uri(value: str) -> str:
    """The URI of a name-addr or addr-spec: '"A" <sip:a@h>;tag=1' → 'sip:a@h'."""
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start)
        return value[start + 1:end if end > 0 else None].strip()
    return value.split(";", 1)[0].strip()


def tag_of(value: str | None) -> str | None:
    return header_params(value).get("tag") if value else None


def reason_for(code: int) -> str:
    return REASONS.get(code, "Unknown")
