"""Bounded fuzzing of the SIP message and SDP parsers (hypothesis, run in CI).

The only exception a parser may raise for any input is its own documented error
(`SipParseError`, `SdpError`, `SignallingError` from `negotiate`); nothing else may
escape, since anything else would be a traceback per datagram and no answer. The
strategies aim at what broke before: Unicode digits (`²`, `١٢`, which `str.isdigit`
accepts and `int` refuses or takes), numbers over `int()`'s 4300 digits, and field
values spliced into otherwise valid messages, so that the fuzz gets past the start line.

CI runs a fixed number of examples, derandomized so a run is reproducible; set
FUZZ_EXAMPLES (and FUZZ_RANDOM=1) for a longer, randomized local run.
"""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.headers import header_uri, tag_of
from opensips_ai_core.signalling.offer_answer import negotiate
from opensips_ai_core.signalling.sdp import SdpError, parse_sdp
from opensips_ai_core.signalling.sip.message import (
    SipParseError,
    parse_message,
    parse_via,
    uri_host_port,
)

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "600")),
    deadline=None,
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

UNICODE_DIGITS = st.characters(categories=("Nd", "No"))  # ², ¹, ١, ５ ...
NUMBERS = st.one_of(
    st.integers(min_value=-10, max_value=2**40).map(str),
    st.text(UNICODE_DIGITS, min_size=1, max_size=6),
    st.builds(lambda a, u, b: f"{a}{u}{b}", st.integers(0, 999), UNICODE_DIGITS,
              st.integers(0, 999)),
    st.integers(min_value=4290, max_value=4400).map(lambda n: "9" * n),
    st.sampled_from(["", " ", "-1", "+5", "1_000", "0x10", "1e3", "65536", "128", "300"]),
)
TEXT = st.text(max_size=40)
FIELD = st.one_of(NUMBERS, TEXT)


def sip_request(*, method: str, version: str, cseq: str, port: str, length: str,
                contact_port: str, extra: str, body: str) -> bytes:
    return (
        f"{method} sip:ai@127.0.0.1:5080 {version}\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-f;rport\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:ai@127.0.0.1>\r\nCall-ID: fuzz@x\r\n"
        f"CSeq: {cseq} {method}\r\nContact: <sip:a@127.0.0.1:{contact_port}>\r\n"
        f"{extra}\r\nContent-Length: {length}\r\n\r\n{body}"
    ).encode("utf-8", "surrogatepass")


SIP_DATAGRAMS = st.one_of(
    st.binary(max_size=600),
    st.builds(
        sip_request,
        method=st.sampled_from(["INVITE", "invite", "OPTIONS", "options", "BYE", "ACK", "X\u00b2"]),
        version=st.sampled_from(["SIP/2.0", "SIP/3.0", "sip/2.0", "SIP/2.\u00b2", "SIP/9999.1"]),
        cseq=NUMBERS, port=NUMBERS, length=NUMBERS, contact_port=NUMBERS,
        extra=st.builds(lambda n, v: f"{n}: {v}", st.sampled_from(["X", "l", "i", "v", "Via"]),
                        FIELD),
        body=st.text(max_size=80)),
    st.builds(lambda code, reason: f"SIP/2.0 {code} {reason}\r\nVia: SIP/2.0/UDP h\r\n"
              "From: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n".encode(
                  "utf-8", "surrogatepass"), NUMBERS, TEXT),
)


@FUZZ
@given(SIP_DATAGRAMS)
def test_sip_parser_raises_only_sip_parse_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    _ = message.cseq, message.call_id, message.to_bytes()
    for via in message.get_all("Via"):
        with contextlib.suppress(SipParseError):
            parse_via(via)
    for name in ("From", "To", "Contact"):
        value = message.get(name)
        tag_of(value)
        with contextlib.suppress(SipParseError):
            uri_host_port(header_uri(value or ""))


SDP_HEAD = "v=0\r\no=- {sid} {ver} IN IP4 127.0.0.1\r\ns=-\r\nc=IN {family} {addr}\r\nt=0 0\r\n"


def sdp_text(*, sid: str, ver: str, family: str, addr: str, port: str, proto: str,
             formats: list[str], attributes: list[str]) -> str:
    media = f"m=audio {port} {proto} {' '.join(formats)}\r\n"
    return (SDP_HEAD.format(sid=sid, ver=ver, family=family, addr=addr) + media
            + "".join(f"a={a}\r\n" for a in attributes))


ATTRIBUTES = st.one_of(
    st.builds(lambda pt, enc, rate: f"rtpmap:{pt} {enc}/{rate}", NUMBERS,
              st.sampled_from(["PCMU", "PCMA", "telephone-event", "opus", ""]), NUMBERS),
    st.builds(lambda pt, rate, ch: f"rtpmap:{pt} PCMU/{rate}/{ch}", NUMBERS, NUMBERS, NUMBERS),
    st.builds(lambda pt, p: f"fmtp:{pt} {p}", NUMBERS, TEXT),
    st.builds(lambda v: f"ptime:{v}", NUMBERS),
    st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive", "crypto:1 AES x"]),
    TEXT,
)
SDP_TEXTS = st.one_of(
    st.text(max_size=300),
    st.builds(sdp_text, sid=NUMBERS, ver=NUMBERS, family=st.sampled_from(["IP4", "IP6", "X"]),
              addr=st.one_of(st.sampled_from(["127.0.0.1", "::1", "example.com", "0.0.0.0"]),
                             TEXT),
              port=NUMBERS, proto=st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "udptl"]),
              formats=st.lists(NUMBERS, min_size=1, max_size=4),
              attributes=st.lists(ATTRIBUTES, max_size=6)),
)


@FUZZ
@given(SDP_TEXTS)
def test_sdp_parser_and_negotiate_raise_only_their_errors(text: str) -> None:
    try:
        offer = parse_sdp(text)
    except SdpError:
        return
    again = parse_sdp(offer.to_text())  # what we serialize, we parse back
    assert [m.payload_types for m in again.media] == [m.payload_types for m in offer.media]
    try:
        _answer, media = negotiate(offer, "127.0.0.1", 35000)
    except SignallingError:
        return
    assert 0 <= media.payload_type <= 127 and 0 < media.remote_port < 65536
