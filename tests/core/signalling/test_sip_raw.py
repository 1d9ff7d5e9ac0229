"""DirectSipBackend driven by hand-written datagrams over real UDP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from opensips_ai_core.signalling.headers import tag_of
from opensips_ai_core.signalling.sdp import parse_sdp
from opensips_ai_core.signalling.sip import DirectSipBackend, SipTimers
from tests.core.signalling.conftest import RecordingHandler, eventually
from tests.core.signalling.sip_peer import OFFER, RawSipPeer
from voice_testkit.procs import LOOPBACK

FAST = SipTimers(t1=0.05, t2=0.4)  # 64*T1 = 3.2 s


@pytest.fixture
async def uas(handler: RecordingHandler) -> AsyncIterator[DirectSipBackend]:
    backend = DirectSipBackend(LOOPBACK, 0, timers=FAST)
    await backend.start(handler)
    try:
        yield backend
    finally:
        await backend.stop()


@pytest.fixture
async def peer(uas: DirectSipBackend) -> AsyncIterator[RawSipPeer]:
    client = await RawSipPeer((LOOPBACK, uas.port)).open()
    try:
        yield client
    finally:
        client.close()


async def place_call(peer: RawSipPeer, **kwargs) -> tuple[str, str]:
    """INVITE → 200 → ACK; returns (INVITE text, local To-tag)."""
    invite = peer.request("INVITE", body=OFFER, **kwargs)
    peer.send(invite)
    ok = await peer.expect(200)
    peer.send(peer.ack_for(ok, invite))
    return invite, tag_of(ok.get("To")) or ""


async def test_call_answer_carries_sdp_contact_and_to_tag(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    invite = peer.request("INVITE", body=OFFER)
    peer.send(invite)
    trying = await peer.expect(100)
    assert tag_of(trying.get("To")) is None
    ok = await peer.expect(200)
    assert tag_of(ok.get("To")) and ok.get("Contact") == f"<sip:ai@{LOOPBACK}:{uas.port}>"
    answer = parse_sdp(ok.body.decode())
    assert answer.media[0].formats == ["8", "101"]  # the offer's order: PCMA first
    assert ok.get("Content-Type") == "application/sdp"
    peer.send(peer.ack_for(ok, invite))
    (call_id,) = handler.calls
    assert handler.media[call_id].codec == "PCMA" and handler.media[call_id].remote_port == 40000
    await eventually(lambda: uas.active_calls() == [call_id])


async def test_retransmitted_invite_is_absorbed(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    handler.answer_delay = 0.3
    invite = peer.request("INVITE", body=OFFER)
    peer.send(invite)
    await peer.expect(100)
    peer.send(invite)  # while new_call works: the 100 again, no second call
    await peer.expect(100)
    ok = await peer.expect(200)
    peer.send(invite)  # after the 200: the same 200 again
    again = await peer.expect(200)
    assert again.get("To") == ok.get("To") and again.body == ok.body
    assert len(handler.calls) == 1 and len(handler.offers) == 1
    assert uas.stats.retransmissions_absorbed >= 2
    peer.send(peer.ack_for(ok, invite))


async def test_200_retransmitted_until_ack(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    invite = peer.request("INVITE", body=OFFER)
    peer.send(invite)
    first = await peer.expect(200)
    for _ in range(3):  # T1, 2*T1, 4*T1 later: the same 200 again
        repeat = await peer.expect(200, timeout=3)
        assert repeat.get("To") == first.get("To") and repeat.cseq == first.cseq
    peer.send(peer.ack_for(first, invite))
    await peer.drain(0.1)  # one may have been in flight
    assert [m for m in await peer.drain(1.0) if m.status == 200] == []
    assert uas.stats.retransmissions_sent >= 3
    assert handler.ended == {}


async def test_no_ack_ends_the_call_with_bye(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    peer.send(peer.request("INVITE", body=OFFER))
    ok = await peer.expect(200)
    bye = await peer.expect(method="BYE", timeout=10)  # after 64*T1 = 3.2 s
    assert bye.call_id == ok.call_id and bye.cseq[1] == "BYE"
    assert tag_of(bye.get("From")) == tag_of(ok.get("To"))
    (call_id,) = handler.calls
    assert handler.ended[call_id] == "no ACK"


async def test_caller_bye_and_unknown_dialog_481(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    invite, tag = await place_call(peer)
    call_id = parse_invite_call_id(invite)
    peer.send(peer.request("BYE", call_id=call_id, cseq=2, to_tag=tag))
    await peer.expect(200)
    await eventually(lambda: handler.ended.get(call_id) == "bye")
    # The dialog is gone now: a second BYE (new transaction) gets 481.
    peer.send(peer.request("BYE", call_id=call_id, cseq=3, to_tag=tag))
    await peer.expect(481)
    peer.send(peer.request("INVITE", call_id="nobody@x", to_tag="unknown", body=OFFER))
    await peer.expect(481)


def parse_invite_call_id(invite: str) -> str:
    return next(line.split(": ", 1)[1] for line in invite.split("\r\n")
                if line.startswith("Call-ID"))


async def test_unsupported_methods_405_and_unknown_501(peer: RawSipPeer) -> None:
    peer.send(peer.request("SUBSCRIBE", extra="Event: presence"))
    refused = await peer.expect(405)
    assert "INVITE" in (refused.get("Allow") or "")
    peer.send(peer.request("FOOBAR"))
    unknown = await peer.expect(501)
    assert unknown.cseq == (1, "FOOBAR")


async def test_options_out_of_dialog(peer: RawSipPeer) -> None:
    peer.send(peer.request("OPTIONS"))
    ok = await peer.expect(200)
    assert ok.get("Accept") == "application/sdp" and "BYE" in (ok.get("Allow") or "")


async def test_rport_replies_to_the_source_port(uas: DirectSipBackend, peer: RawSipPeer) -> None:
    # The Via claims port 9 (discard); with rport the reply still reaches our socket.
    peer.send(peer.request("OPTIONS", via_port=9, rport=True))
    ok = await peer.expect(200)
    top_via = ok.get_all("Via")[0]
    assert f"rport={peer.port}" in top_via and f"received={LOOPBACK}" in top_via


async def test_without_rport_replies_to_the_via_sent_by(uas: DirectSipBackend,
                                                        peer: RawSipPeer) -> None:
    other = await RawSipPeer((LOOPBACK, uas.port)).open()
    try:
        peer.send(peer.request("OPTIONS", via_port=other.port, rport=False))
        await other.expect(200)  # RFC 3261 18.2.2: the sent-by port, not the source port
        assert await peer.drain(0.3) == []
    finally:
        other.close()


async def test_cancel_sends_487_and_absorbs_its_ack(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    handler.answer_delay = 30
    invite = peer.request("INVITE", body=OFFER, branch="z9hG4bK-cancel-me")
    peer.send(invite)
    await peer.expect(100)
    call_id = parse_invite_call_id(invite)
    peer.send(peer.request("CANCEL", call_id=call_id, branch="z9hG4bK-cancel-me"))
    await peer.expect(200)
    terminated = await peer.expect(487)
    peer.send(peer.ack_for(terminated, invite))
    await eventually(lambda: handler.ended.get(call_id) == "cancelled")
    assert [m for m in await peer.drain(0.5) if m.status == 487] == []  # ACK stopped Timer G
    peer.send(peer.request("CANCEL", call_id="nothing@x", branch="z9hG4bK-none"))
    await peer.expect(481)


async def test_non_sdp_body_415_and_bad_sdp_400(peer: RawSipPeer,
                                                 handler: RecordingHandler) -> None:
    invite = peer.request("INVITE", extra="Content-Type: text/plain", body="")
    peer.send(invite.replace("Content-Length: 0", "Content-Length: 5") + "hello")
    refused = await peer.expect(415)
    assert refused.get("Accept") == "application/sdp"
    peer.send(peer.request("INVITE", body="v=0\r\nm=audio x RTP/AVP 0\r\n"))
    bad = await peer.expect(400)
    assert "SDP" in (bad.reason or "")
    assert handler.calls == {}


async def test_late_offer_offer_in_200_answer_in_ack(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    """RFC 3261 13.2.1: an INVITE without SDP gets our offer in the 200; the ACK answers."""
    invite = peer.request("INVITE")
    peer.send(invite)
    ok = await peer.expect(200)
    offer = parse_sdp(ok.body.decode())
    assert offer.media[0].formats == ["0", "8", "101"] and offer.media[0].port > 0
    answer = OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 0 101")
    ack = peer.ack_for(ok, invite).replace("Content-Length: 0\r\n",
                                           "Content-Type: application/sdp\r\n"
                                           f"Content-Length: {len(answer)}\r\n") + answer
    peer.send(ack)
    (call_id,) = handler.calls
    media = await eventually(lambda: handler.completed.get(call_id))
    assert media.codec == "PCMU" and media.remote_port == 40000
    assert uas.active_calls() == [call_id]


async def test_late_offer_without_answer_in_ack_ends_with_bye(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    invite = peer.request("INVITE")
    peer.send(invite)
    ok = await peer.expect(200)
    peer.send(peer.ack_for(ok, invite))  # no SDP: no answer to our offer
    bye = await peer.expect(method="BYE")
    assert bye.call_id == ok.call_id
    (call_id,) = handler.calls
    await eventually(lambda: handler.ended.get(call_id) == "no usable SDP answer")
    assert uas.active_calls() == []


async def test_reinvite_hold_and_resume(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    invite, tag = await place_call(peer)
    call_id = parse_invite_call_id(invite)
    for cseq, offered, answered in ((2, "sendonly", "recvonly"), (3, "sendrecv", "sendrecv")):
        reinvite = peer.request("INVITE", call_id=call_id, cseq=cseq, to_tag=tag,
                                body=OFFER.replace("a=sendrecv", f"a={offered}"))
        peer.send(reinvite)
        ok = await peer.expect(200)
        sdp = parse_sdp(ok.body.decode())
        assert sdp.media[0].direction == answered
        assert sdp.origin.session_version == cseq  # bumped on every new answer
        peer.send(peer.ack_for(ok, reinvite))
    assert [m.direction for _, m in handler.updates] == ["recvonly", "sendrecv"]


async def test_hangup_bye_uses_route_set_and_next_cseq(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    proxy = await RawSipPeer((LOOPBACK, uas.port)).open()
    try:
        record_route = (f"Record-Route: <sip:{LOOPBACK}:{proxy.port};lr;x=1>, "
                        "<sip:second.invalid;lr>")
        invite, tag = await place_call(peer, extra=record_route)
        call_id = parse_invite_call_id(invite)
        hangup = asyncio.create_task(uas.hangup(call_id))
        bye = await proxy.expect(method="BYE")  # sent to the first route, not the Contact
        assert bye.get_all("Route") == [f"<sip:{LOOPBACK}:{proxy.port};lr;x=1>",
                                        "<sip:second.invalid;lr>"]
        assert bye.uri == f"sip:raw@{LOOPBACK}:{peer.port}" and bye.cseq == (1, "BYE")
        assert tag_of(bye.get("From")) == tag and tag_of(bye.get("To")) == "caller1"
        reply = f"SIP/2.0 481 Call/Transaction Does Not Exist\r\nVia: {bye.get('Via')}\r\n" \
                f"From: {bye.get('From')}\r\nTo: {bye.get('To')}\r\nCall-ID: {bye.call_id}\r\n" \
                f"CSeq: {bye.get('CSeq')}\r\nContent-Length: 0\r\n\r\n"
        proxy.send(reply)
        await hangup
        assert uas.active_calls() == [] and call_id not in handler.ended
    finally:
        proxy.close()


async def test_hangup_without_answer_retransmits_then_times_out(
        uas: DirectSipBackend, peer: RawSipPeer) -> None:
    invite, _ = await place_call(peer)
    call_id = parse_invite_call_id(invite)
    await uas.hangup(call_id)  # the peer never answers the BYE: Timer F (64*T1)
    byes = [m for m in await peer.drain(0.2) if m.method == "BYE"]
    assert len(byes) >= 3 and len({m.get("Via") for m in byes}) == 1
    assert uas.active_calls() == []


async def test_compact_and_folded_headers_multiple_vias(
        peer: RawSipPeer, handler: RecordingHandler) -> None:
    body = OFFER
    text = (
        f"INVITE sip:ai@{peer.target[0]}:{peer.target[1]} SIP/2.0\r\n"
        f"v: SIP/2.0/UDP {LOOPBACK}:{peer.port};branch=z9hG4bK-compact;rport, "
        "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-inner\r\n"
        f"f: <sip:raw@{LOOPBACK}>;tag=c1\r\nt: <sip:ai@{LOOPBACK}>\r\n"
        "i: compact@x\r\nCSeq: 1 INVITE\r\n"
        f"m: <sip:raw@{LOOPBACK}:{peer.port}>\r\n"
        "Subject: a folded\r\n  subject line\r\n"
        f"c: application/sdp\r\nl: {len(body)}\r\n\r\n{body}"
    )
    peer.send(text)
    ok = await peer.expect(200)
    assert len(ok.get_all("Via")) == 2 and "10.0.0.9" in ok.get_all("Via")[1]
    assert handler.calls["compact@x"].caller == f"sip:raw@{LOOPBACK}"


def _malformed_cases(peer: RawSipPeer) -> list[tuple[str, bytes, int | None]]:
    good = peer.request("OPTIONS")
    without = lambda name: "\r\n".join(  # noqa: E731
        line for line in good.split("\r\n") if not line.startswith(name + ":")).encode()
    head = good.rsplit("Content-Length", 1)[0]
    return [
        ("truncated", (head + "Content-Length: 500\r\n\r\nv=0\r\n").encode(), 400),
        ("content_length_too_large", (head + "Content-Length: 999999999\r\n\r\n").encode(),
         400),
        ("bad_content_length", (head + "Content-Length: -4\r\n\r\n").encode(), 400),
        ("missing_header", without("Call-ID"), None),
        ("missing_header", without("CSeq"), None),
        ("missing_header", without("Via"), None),
        ("missing_header", without("From"), None),
        ("missing_header", without("To"), None),
        ("bad_cseq", good.replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS").encode(), 400),
        ("bad_cseq", good.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE").encode(), 400),
        ("bad_header", (head + "this line has no colon\r\n\r\n").encode(), 400),
        ("bad_via", good.replace("Via: SIP/2.0/UDP 127.0.0.1", "Via: garbage").encode(), 400),
        ("binary", bytes(range(256)) * 4, None),
        ("bad_start_line", b"HELLO WORLD\r\nVia: x\r\n\r\n", None),
        ("oversized", (head + "X-Pad: " + "a" * 40000 + "\r\n\r\n").encode(), 513),
        ("oversized", b"\x00" * 50000, None),
    ]


async def test_malformed_messages_are_answered_or_dropped_and_counted(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler,
        caplog: pytest.LogCaptureFixture) -> None:
    expected_counts: dict[str, int] = {}
    cases = _malformed_cases(peer)
    with caplog.at_level(logging.WARNING, logger="signalling.sip"):
        for kind, datagram, code in cases:
            peer.send(datagram)
            expected_counts[kind] = expected_counts.get(kind, 0) + 1
            if code is None:
                assert await peer.drain(0.3) == [], f"{kind}: expected no answer"
            else:
                answer = await peer.expect(code)
                assert answer.get("Warning") and kind in (answer.get("Warning") or "")
            assert uas.stats.malformed == expected_counts, kind
    warnings = [r for r in caplog.records if "malformed SIP" in r.getMessage()]
    assert len(warnings) == len(expected_counts)  # once per kind
    assert uas.stats.bad_requests_answered == sum(1 for *_, code in cases if code)
    assert uas.stats.malformed_dropped == sum(1 for *_, code in cases if code is None)
    # The UAS still serves calls.
    await place_call(peer)
    assert len(handler.media) == 1


async def test_handler_crash_answers_500_and_keeps_serving(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    handler.refuse = RuntimeError("call manager bug")
    invite = peer.request("INVITE", body=OFFER)
    peer.send(invite)
    failed = await peer.expect(500)
    peer.send(peer.ack_for(failed, invite))
    assert uas.active_calls() == []
    handler.refuse = None
    await place_call(peer)
    assert len(handler.media) == 1


# ---- issue 16: inputs that broke the parser or got a wrong answer -------------------------

def _with_header(request: str, name: str, value: str) -> str:
    return "\r\n".join(f"{name}: {value}" if line.startswith(name + ":") else line
                       for line in request.split("\r\n"))


async def test_unicode_and_huge_numbers_get_400_without_traceback(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler,
        caplog: pytest.LogCaptureFixture) -> None:
    good = peer.request("OPTIONS")
    cases = [
        ("bad_cseq", _with_header(good, "CSeq", "\u00b2 OPTIONS")),
        ("bad_cseq", _with_header(good, "CSeq", "9" * 5000 + " OPTIONS")),
        ("bad_content_length", _with_header(good, "Content-Length", "\u00b2")),
        ("bad_content_length", _with_header(good, "Content-Length", "7" * 5000)),
        ("bad_via", good.replace(f"{LOOPBACK}:{peer.port};branch", f"{LOOPBACK}:\u00b2;branch")),
    ]
    with caplog.at_level(logging.DEBUG, logger="signalling.sip"):
        for kind, datagram in cases:
            peer.send(datagram)
            answer = await peer.expect(400)
            assert kind in (answer.get("Warning") or ""), kind
        # A response with a Unicode-digit status code cannot be answered: dropped, counted.
        peer.send(good.replace("OPTIONS sip:", "X sip:", 1).replace(
            f"X sip:ai@{LOOPBACK}:{uas.port} SIP/2.0", "SIP/2.0 2\u00b20 OK"))
        await eventually(lambda: uas.stats.malformed.get("bad_start_line") == 1)
        # An INVITE whose rtpmap has such a number gets a final answer, not just 100.
        peer.send(peer.request("INVITE", body=OFFER + "a=rtpmap:\u00b2 PCMU/8000\r\n"))
        await peer.expect(400)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for bad input"
    assert handler.calls == {}


async def test_sip_3_gets_505_and_methods_are_case_sensitive(peer: RawSipPeer) -> None:
    peer.send(peer.request("OPTIONS").replace(" SIP/2.0\r\n", " SIP/3.0\r\n", 1))
    refused = await peer.expect(505)
    assert "unsupported_version" in (refused.get("Warning") or "")
    peer.send(peer.request("options"))
    unknown = await peer.expect(501)  # not OPTIONS (RFC 3261 7.1: case-sensitive)
    assert unknown.cseq == (1, "options")
    peer.send(peer.request("OPTIONS"))
    await peer.expect(200)


async def test_srtp_ipv6_and_hostname_offers_get_488(peer: RawSipPeer,
                                                     handler: RecordingHandler) -> None:
    for body in (OFFER.replace("RTP/AVP", "RTP/SAVP") + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
                 "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
                 OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP6 ::1"),
                 OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 media.example.com")):
        invite = peer.request("INVITE", body=body)
        peer.send(invite)
        refused = await peer.expect(488)
        peer.send(peer.ack_for(refused, invite))
    assert handler.media == {}


async def test_failed_invite_transactions_are_retransmitted_then_freed(
        uas: DirectSipBackend, peer: RawSipPeer, handler: RecordingHandler) -> None:
    """Timer G/H (RFC 3261 17.2.1): every non-2xx final answer to an INVITE is resent until
    its ACK or 64*T1, then the transaction goes; nothing stays after many failed INVITEs."""
    bad_sdp = "v=0\r\nm=audio x RTP/AVP 0\r\n"
    kinds = [
        (415, lambda: peer.request("INVITE", extra="Content-Type: text/plain").replace(
            "Content-Length: 0", "Content-Length: 2") + "hi"),
        (420, lambda: peer.request("INVITE", body=OFFER, extra="Require: 100rel")),
        (481, lambda: peer.request("INVITE", body=OFFER, to_tag="nobody")),
        (400, lambda: peer.request("INVITE", body=bad_sdp)),
        (488, lambda: peer.request("INVITE", body=OFFER.replace("8 0 101", "18"))),
    ]
    # The first of each kind is never ACKed: its answer must be retransmitted (Timer G).
    for code, make in kinds:
        peer.send(make())
        first = await peer.expect(code)
        again = await peer.expect(code, timeout=3)
        assert again.call_id == first.call_id
    for _ in range(40):
        for code, make in kinds:
            invite = make()
            peer.send(invite)
            refused = await peer.expect(code)
            if code != 481:  # half of them ACKed, half left to Timer H
                peer.send(peer.ack_for(refused, invite))
    assert uas.stats.retransmissions_sent >= len(kinds)
    await eventually(lambda: not uas._transactions, timeout=30,
                     message="every INVITE transaction freed")
    assert len(uas._tasks) == 0 and handler.media == {}


async def test_bye_with_a_bad_contact_port_goes_to_the_invite_source(
        uas: DirectSipBackend, peer: RawSipPeer) -> None:
    invite = peer.request("INVITE", body=OFFER)
    invite = _with_header(invite, "Contact", f"<sip:raw@{LOOPBACK}:\u00b2>")
    peer.send(invite)
    ok = await peer.expect(200)
    peer.send(peer.ack_for(ok, invite))
    hangup = asyncio.create_task(uas.hangup(ok.call_id))
    bye = await peer.expect(method="BYE")
    assert bye.call_id == ok.call_id
    hangup.cancel()
