"""OpenSipsBackend against the OpenSIPS 3.6.8 wire double (dev/testkit/src/voice_testkit/opensips_peer.py).

OpenSIPS cannot be installed here: the double plays it as docs/opensips.md records
the real 3.6.8 on the wire. Real UDP on 127.0.0.1 both ways: MI JSON-RPC to the
peer, E_UA_SESSION events from the peer (each from a new source port) to the
backend's listener.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator

import pytest

from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.opensips import MiClient, MiError, MiTimeoutError, OpenSipsBackend
from opensips_ai_core.signalling.opensips.liveness import OpenSipsRun
from opensips_ai_core.signalling.sdp import parse_sdp
from opensips_ai_core.signalling.sip.message import SipParseError, parse_message
from tests.core.signalling.conftest import RecordingHandler, eventually
from voice_testkit.opensips_peer import SIPP_OFFER, OpenSipsPeer, PeerSession
from voice_testkit.procs import LOOPBACK, free_port


@pytest.fixture
async def backend(peer: OpenSipsPeer, handler: RecordingHandler
                  ) -> AsyncIterator[OpenSipsBackend]:
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        yield engine
    finally:
        await engine.stop()


async def answered_call(peer: OpenSipsPeer) -> str:
    key = peer.new_call()
    reply = await peer.wait_reply(key)
    assert reply["code"] == 200
    return key


async def test_subscription_retried_until_opensips_answers(handler: RecordingHandler) -> None:
    mi_port = free_port(socket.SOCK_DGRAM)  # nothing listens there yet
    engine = OpenSipsBackend(LOOPBACK, mi_port, LOOPBACK, 0, mi_timeout=0.2,
                             poll_interval=0.2)
    await engine.start(handler)
    opensips = OpenSipsPeer(mi_port)
    try:
        await asyncio.sleep(1.0)
        assert not engine.subscribed.is_set()
        assert engine.readiness() == (False, "not subscribed yet: OpenSIPS MI has not answered")
        await opensips.start()
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        assert opensips.live_subscriptions() == [engine.event_socket]
        _, params = opensips.subscribe_calls[0]
        assert params == ["E_UA_SESSION", f"udp:127.0.0.1:{engine.events.port}", 3600]
    finally:
        await engine.stop()
        await opensips.stop()
    # stop() unsubscribes with expire 0.
    assert opensips.subscribe_calls[-1][1][2] == 0


async def test_subscription_retried_while_opensips_is_silent(handler: RecordingHandler) -> None:
    opensips = await OpenSipsPeer(answering=False).start()
    engine = OpenSipsBackend(LOOPBACK, opensips.mi_port, LOOPBACK, 0, mi_timeout=0.2,
                             poll_interval=0.2)
    await engine.start(handler)
    try:
        await asyncio.sleep(0.8)
        assert not engine.subscribed.is_set() and opensips.subscriptions == {}
        opensips.answering = True
        await asyncio.wait_for(engine.subscribed.wait(), 10)
    finally:
        await engine.stop()
        await opensips.stop()


async def test_subscription_renewed_before_expiry(peer: OpenSipsPeer,
                                                  handler: RecordingHandler) -> None:
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, expire=2, poll_interval=0.25)
    await engine.start(handler)
    try:
        await peer.wait_for(lambda: len(peer.subscribe_calls) >= 3, 10, "two renewals")
        times = [t for t, _ in peer.subscribe_calls]
        assert all(b - a < 2 for a, b in itertools.pairwise(times))
        assert peer.live_subscriptions() == [engine.event_socket]
        # Still subscribed past the first expiry: an event still reaches the engine.
        key = peer.new_call()
        assert (await peer.wait_reply(key))["code"] == 200
    finally:
        await engine.stop()


async def test_new_call_answered_with_sdp(backend: OpenSipsBackend, peer: OpenSipsPeer,
                                          handler: RecordingHandler) -> None:
    key = peer.new_call()
    reply = await peer.wait_reply(key)
    # No content_type: OpenSIPS would copy it as a raw header line (docs/opensips.md).
    assert {k: reply[k] for k in ("key", "method", "code", "reason")} == {
        "key": key, "method": "INVITE", "code": 200, "reason": "OK"}
    assert "content_type" not in reply
    answer = parse_sdp(reply["body"])
    assert answer.media[0].formats == ["0", "101"]
    info = handler.calls[key]
    assert (info.caller, info.callee, info.backend) == (
        "sip:sipp@127.0.0.1:5070", "sip:ai@127.0.0.1:5060", "opensips")
    assert info.sip_call_id == peer.sessions[key].call_id
    assert peer.sessions[key].state == 5
    assert backend.active_calls() == [key]


async def test_200_ok_on_the_wire_has_content_type_and_contact(
        backend: OpenSipsBackend, peer: OpenSipsPeer) -> None:
    """The SIP 200 OK OpenSIPS builds from our ua_session_reply (issue: every captured
    200 OK read `application/sdpContact: <sip:...>`) parses, with both headers whole."""
    key = await answered_call(peer)
    message = parse_message(peer.sessions[key].sip_replies[0].encode())
    assert (message.status, message.reason) == (200, "OK")
    assert message.get("Content-Type") == "application/sdp"
    assert message.get("Contact") == "<sip:127.0.0.1:5060>"
    assert message.get("To") == f"ai <sip:ai@127.0.0.1:5060>;tag={key}"
    assert message.body.decode() == (await peer.wait_reply(key))["body"]
    # A re-INVITE's 200 too.
    peer.reinvite(key, SIPP_OFFER + "a=sendonly\r\n")
    await peer.wait_reply(key, count=2)
    again = parse_message(peer.sessions[key].sip_replies[1].encode())
    assert (again.get("Content-Type"), again.get("Contact")) == ("application/sdp",
                                                                 "<sip:127.0.0.1:5060>")


@pytest.mark.parametrize(("content_type", "well_formed"), [
    (None, True), ("Content-Type: application/sdp\r\n", True), ("application/sdp", False)])
async def test_double_copies_content_type_as_a_raw_header_line(
        peer: OpenSipsPeer, content_type: str | None, well_formed: bool) -> None:
    """The double reproduces what OpenSIPS 3.6.8 did with each `content_type` value."""
    key = "B2B.1.1.1.1"
    peer.sessions[key] = PeerSession(key, "c@x", peer.call_headers("c@x", 1, "INVITE", None, 9))
    params = {"key": key, "method": "INVITE", "code": 200, "reason": "OK", "body": SIPP_OFFER}
    if content_type is not None:
        params["content_type"] = content_type
    client = MiClient(LOOPBACK, peer.mi_port, timeout=1.0)
    try:
        assert await client.call("ua_session_reply", params) == "OK"
    finally:
        await client.close()
    wire = peer.sessions[key].sip_replies[0]
    if well_formed:
        message = parse_message(wire.encode())
        assert message.get("Content-Type") == "application/sdp"
        assert message.get("Contact") == "<sip:127.0.0.1:5060>"
    else:
        assert "\r\napplication/sdpContact: <sip:127.0.0.1:5060>\r\n" in wire
        with pytest.raises(SipParseError):
            parse_message(wire.encode())


async def test_refusal_with_retry_after_reaches_the_wire(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """A draining core's 503 carries its Retry-After line. OpenSIPS 3.6.8 copies
    `extra_headers` only when a `body` is given (a real run sent uninitialised bytes
    instead of `Retry-After: 17`), so the backend passes an empty body and an empty
    content_type: the line goes out exactly, with no Content-Type."""
    handler.refuse = SignallingError(503, "Service Unavailable (draining)", retry_after=17)
    key = peer.new_call()
    reply = await peer.wait_reply(key)
    assert (reply["code"], reply["extra_headers"]) == (503, "Retry-After: 17\r\n")
    message = parse_message(peer.sip_sent[key][0].encode())
    assert (message.status, message.get("Retry-After")) == (503, "17")
    assert message.get("Content-Type") is None and message.body == b""
    await peer.wait_for(lambda: key in peer.deleted, 5, "the refused session deleted")


@pytest.mark.parametrize(("params", "header_text"), [
    ({"extra_headers": "Retry-After: 17\r\n"}, "?" * 17),
    ({"extra_headers": "Retry-After: 17\r\n", "body": "", "content_type": ""},
     "Retry-After: 17\r\n"),
    ({"extra_headers": "Retry-After: 17\r\n", "body": ""},
     "Content-Type: application/sdp\r\nRetry-After: 17\r\n")])
async def test_double_renders_extra_headers_as_opensips_did(
        peer: OpenSipsPeer, params: dict[str, str], header_text: str) -> None:
    """What OpenSIPS 3.6.8 put between the copied headers and its Contact for each way of
    passing extra headers to ua_session_reply (uninitialised bytes shown as "?")."""
    key = "B2B.1.1.1.1"
    peer.sessions[key] = PeerSession(key, "c@x", peer.call_headers("c@x", 1, "INVITE", None, 9))
    client = MiClient(LOOPBACK, peer.mi_port, timeout=1.0)
    try:
        assert await client.call("ua_session_reply", {
            "key": key, "method": "INVITE", "code": 503, "reason": "Busy", **params}) == "OK"
    finally:
        await client.close()
    wire = peer.sessions[key].sip_replies[0]
    assert f"CSeq: 1 INVITE\r\n{header_text}Contact: <sip:127.0.0.1:5060>\r\n" in wire


async def test_cancel_before_answer_replies_487(backend: OpenSipsBackend, peer: OpenSipsPeer,
                                                handler: RecordingHandler) -> None:
    handler.answer_delay = 30
    key = peer.new_call()
    await eventually(lambda: key in handler.calls, 5, "new_call")
    peer.cancel(key)
    reply = await peer.wait_reply(key)
    assert (reply["method"], reply["code"], reply["reason"]) == ("INVITE", 487,
                                                                 "Request Terminated")
    await eventually(lambda: handler.ended.get(key) == "cancelled", 5, "end_call")
    assert handler.cancelled_new_calls == [key] and backend.active_calls() == []
    # Not left in OpenSIPS (state 7) until ua_default_timeout: deleted, without a BYE.
    await peer.wait_for(lambda: key in peer.deleted, 5, "the cancelled session deleted")
    assert key not in peer.sessions and peer.terminated == []


async def test_a_cancel_reported_before_its_new_gets_a_487_and_no_call(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """Events come from several OpenSIPS workers and may cross (seen on 3.6.8): the
    TERMINATED of a CANCEL sent right behind its INVITE can arrive before the NEW. The
    backend answers the 487 at once and ignores the late NEW: no call is started."""
    key = peer.new_key()
    headers = peer.call_headers("crossed@127.0.0.1", 1, "INVITE", None, len(SIPP_OFFER))
    peer.sessions[key] = PeerSession(key, "crossed@127.0.0.1", headers)
    peer.cancel(key)
    reply = await peer.wait_reply(key)
    assert (reply["code"], reply["reason"]) == (487, "Request Terminated")
    await peer.wait_for(lambda: key in peer.deleted, 5, "the session deleted")
    peer.send_event(key, "NEW", "INVITE", SIPP_OFFER, headers)
    later = peer.new_call()  # the next caller is served: the late NEW was handled
    assert (await peer.wait_reply(later))["code"] == 200
    assert key not in handler.calls and backend.active_calls() == [later]


async def test_cancel_crossing_the_200_releases_the_call(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """The caller's CANCEL reaches OpenSIPS after it sent our 200 OK: no 487 is possible
    (the INVITE has its final reply). OpenSIPS 3.6.8 ends the session on the CANCEL all
    the same, so no BYE can go out (the caller hangs up itself): the call is released
    and what is left of the session deleted, without a 487."""
    key = await answered_call(peer)
    peer.cancel(key)
    await eventually(lambda: handler.ended.get(key) == "cancelled", 5, "end_call")
    await peer.wait_for(lambda: key in peer.deleted, 5, "the session deleted")
    assert peer.terminated == []  # no BYE
    assert [p["code"] for p in peer.accepted("ua_session_reply", key)] == [200]
    assert backend.active_calls() == []


async def test_cancel_while_our_200_is_in_flight(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """OpenSIPS sent our 200 but its MI answer is slow; the CANCEL event arrives first.
    The backend learns the 200 went out before deciding: BYE, not 487, call released."""
    peer.answer_delay["ua_session_reply"] = 0.5
    key = peer.new_call()
    await peer.wait_for(lambda: key in peer.sessions and peer.sessions[key].sip_replies,
                        5, "the 200 OK on the wire")
    peer.cancel(key)
    await eventually(lambda: handler.ended.get(key) == "cancelled", 5, "end_call")
    await peer.wait_for(lambda: key not in peer.sessions, 5, "the session ended")
    assert [p["code"] for p in peer.accepted("ua_session_reply", key)] == [200]
    assert not [p for m, p, _ in peer.mi_log
                if m == "ua_session_reply" and p.get("code") == 487]
    assert peer.accepted("ua_session_terminate", key) == [{"key": key}]


async def test_cancel_after_a_lost_200_answer(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """The 200's MI answer is lost (UDP): ua_session_list tells the backend the 200 went
    out, so the call counts as answered; the crossing CANCEL then ends it with a BYE."""
    peer.lose_answers.add("ua_session_reply")
    key = peer.new_call()
    await eventually(lambda: key in handler.calls, 5, "new_call")
    await eventually(lambda: any(m == "ua_session_list" for m, *_ in peer.mi_log), 5,
                     "the backend asking for the session's state")
    await eventually(lambda: backend._sessions[key].answered, 5, "the call counted answered")
    assert key not in handler.ended and backend.active_calls() == [key]
    peer.lose_answers.clear()
    peer.cancel(key)
    await eventually(lambda: handler.ended.get(key) == "cancelled", 5, "end_call")
    await peer.wait_for(lambda: key not in peer.sessions, 5, "the session ended")
    assert peer.accepted("ua_session_terminate", key) == [{"key": key}]


async def test_caller_bye_ends_the_call(backend: OpenSipsBackend, peer: OpenSipsPeer,
                                        handler: RecordingHandler) -> None:
    key = await answered_call(peer)
    peer.bye(key)
    await eventually(lambda: handler.ended.get(key) == "bye", 5, "end_call")
    assert backend.active_calls() == []


async def test_reinvite_hold_answered_recvonly(backend: OpenSipsBackend, peer: OpenSipsPeer,
                                               handler: RecordingHandler) -> None:
    key = await answered_call(peer)
    peer.reinvite(key, SIPP_OFFER + "a=sendonly\r\n")
    reply = await peer.wait_reply(key, count=2)
    assert (reply["method"], reply["code"], reply["reason"]) == ("INVITE", 200, "OK")
    first = parse_sdp((await peer.wait_reply(key))["body"])
    held = parse_sdp(reply["body"])
    assert held.media[0].direction == "recvonly"
    assert [m.direction for _, m in handler.updates] == ["recvonly"]
    # The same o= session, a higher version (RFC 3264 section 8).
    assert held.origin.session_id == first.origin.session_id
    assert held.origin.session_version > first.origin.session_version


async def test_reinvite_for_unknown_session_gets_481(backend: OpenSipsBackend,
                                                     peer: OpenSipsPeer) -> None:
    # OpenSIPS knows the session (e.g. from before an engine restart); the engine does not.
    peer.sessions["B2B.1.2.3.4"] = PeerSession("B2B.1.2.3.4", "c@x", "", state=5, pending=None)
    peer.reinvite("B2B.1.2.3.4", SIPP_OFFER)
    reply = await peer.wait_reply("B2B.1.2.3.4")
    assert (reply["code"], reply["reason"]) == (481, "Call/Transaction Does Not Exist")


async def test_hangup_terminates_answered_call(backend: OpenSipsBackend, peer: OpenSipsPeer,
                                               handler: RecordingHandler) -> None:
    key = await answered_call(peer)
    await backend.hangup(key)
    assert peer.terminated == [key]
    assert backend.active_calls() == [] and key not in handler.ended


async def test_hangup_before_answer_rejects_instead(backend: OpenSipsBackend,
                                                    peer: OpenSipsPeer,
                                                    handler: RecordingHandler) -> None:
    handler.answer_delay = 30
    key = peer.new_call()
    await eventually(lambda: key in handler.calls, 5, "new_call")
    await backend.hangup(key)
    reply = await peer.wait_reply(key)
    assert reply["code"] >= 300 and reply["reason"]
    # No BYE (not answered); the rejected session is deleted, not left in state 7.
    await peer.wait_for(lambda: key in peer.deleted, 5, "the rejected session deleted")
    assert peer.terminated == []


@pytest.mark.parametrize(("body", "code", "reason"), [
    ("", 415, "Unsupported Media Type"),
    (SIPP_OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 18 101"), 488, "Not Acceptable Here"),
    ("v=0\r\nbroken\r\n", 400, "Bad Request (malformed SDP)"),
])
async def test_refused_calls(backend: OpenSipsBackend, peer: OpenSipsPeer, body: str,
                             code: int, reason: str) -> None:
    key = peer.new_call(body=body)
    reply = await peer.wait_reply(key)
    assert (reply["method"], reply["code"], reply["reason"]) == ("INVITE", code, reason)
    assert "body" not in reply and backend.active_calls() == []
    await peer.wait_for(lambda: key in peer.deleted, 5, "the rejected session deleted")


async def test_handler_refusal_and_unsupported_method(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    handler.refuse = SignallingError(404, "Not Found")
    key = peer.new_call()
    assert ((await peer.wait_reply(key))["code"], handler.calls[key].backend) == (404,
                                                                                 "opensips")
    other = peer.new_call(method="MESSAGE")
    reply = await peer.wait_reply(other)
    assert (reply["method"], reply["code"], reply["reason"]) == ("MESSAGE", 405,
                                                                 "Method Not Allowed")


async def test_malformed_event_datagrams_are_dropped(backend: OpenSipsBackend,
                                                     peer: OpenSipsPeer) -> None:
    for data in (b"{not json", b"\xff\xfe", b"[]",
                 b'{"jsonrpc":"2.0","method":"E_UA_SESSION","params":[]}',
                 b'{"jsonrpc":"2.0","method":"E_OTHER","params":{"key":"k"}}',
                 b'{"jsonrpc":"2.0","method":"E_UA_SESSION","params":{"event_type":"NEW"}}'):
        assert peer.send_raw(data) == 1
    await eventually(lambda: sum(backend.events.stats.dropped.values()) == 6, 5, "drops")
    assert backend.active_calls() == []
    await answered_call(peer)  # still serving


async def test_mi_client_errors_match_opensips(peer: OpenSipsPeer) -> None:
    client = MiClient(LOOPBACK, peer.mi_port, timeout=1.0)
    await client.start()
    try:
        key = "B2B.9.9.9.9"
        peer.sessions[key] = PeerSession(key, "c@x", "")
        with pytest.raises(MiError) as missing_reason:
            await client.call("ua_session_reply", {"key": key, "method": "INVITE", "code": 200})
        assert (missing_reason.value.code, missing_reason.value.message) == (-32602,
                                                                             "Invalid params")
        with pytest.raises(MiError) as early:
            await client.call("ua_session_terminate", {"key": key})
        assert (early.value.code, early.value.message) == (500, "Failed to terminate session")
        with pytest.raises(MiError) as unknown:
            await client.call("no_such_command")
        assert unknown.value.code == -32601
        with pytest.raises(MiError) as not_found:
            await client.call("ua_session_list", {"key": "B2B.7.7.7.7"})
        assert (not_found.value.code, not_found.value.message) == (404, "Entity not found")
        with pytest.raises(MiError) as bad_key:
            await client.call("ua_session_list", {"key": "B2B.none"})
        assert (bad_key.value.code, bad_key.value.message) == (400, "Bad format for b2b key")
        uptime = await client.call("uptime")
        assert set(uptime) == {"Now", "Up since", "Up time"}
        assert uptime["Up time"].endswith(" [sec]")
        # Concurrent calls on one socket are matched by id.
        results = await asyncio.gather(*(client.call("ua_session_list", {"key": key})
                                         for _ in range(20)))
        assert all((r["to_tag"], r["state"], r["callid"]) == (key, 1, "c@x") for r in results)
        peer.answering = False
        with pytest.raises(MiTimeoutError):
            await client.call("ua_session_list", {}, timeout=0.3)
    finally:
        await client.close()


async def test_events_from_varying_source_ports(backend: OpenSipsBackend,
                                                peer: OpenSipsPeer) -> None:
    keys = [peer.new_call() for _ in range(3)]  # three datagrams, three source ports
    for key in keys:
        assert (await peer.wait_reply(key))["code"] == 200
    assert sorted(backend.active_calls()) == sorted(keys)


def test_renewal_schedule() -> None:
    assert OpenSipsBackend(LOOPBACK, 1, LOOPBACK, 0, expire=2).renew_after() == 1.5
    # A long expire is still refreshed every minute (an OpenSIPS restart forgets it).
    assert OpenSipsBackend(LOOPBACK, 1, LOOPBACK, 0, expire=3600).renew_after() == 60
    assert OpenSipsBackend(LOOPBACK, 1, LOOPBACK, 0, expire=3600,
                           refresh_max=7200).renew_after() == 3540
    with pytest.raises(ValueError, match="expire"):
        OpenSipsBackend(LOOPBACK, 1, LOOPBACK, 0, expire=0)


async def test_restart_noticed_resubscribed_and_calls_reconciled(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """OpenSIPS restarts with two calls up: it forgets our subscription and both
    sessions. Within 2 s (uptime is polled every second) the backend subscribes again
    and releases both calls locally, without an MI terminate for their stale keys."""
    calls = [await answered_call(peer) for _ in range(2)]
    first_run = backend.run
    await peer.restart()
    logged = len(peer.mi_log)
    await peer.wait_for(peer.live_subscriptions, 2.0, "a new subscription")
    await eventually(lambda: all(handler.ended.get(k) == "opensips restarted" for k in calls),
                     2.0, "both calls released")
    assert backend.restarts == 1 and backend.run != first_run
    assert backend.active_calls() == [] and backend.ready
    assert not [m for m, *_ in peer.mi_log[logged:] if m == "ua_session_terminate"]
    key = await answered_call(peer)  # the new run's calls are served
    assert backend.active_calls() == [key]


async def test_restart_keeps_the_calls_the_new_run_still_holds(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """Reconciling compares full keys with ua_session_list's to_tag: a session the new
    run lists under the same key stays; one it does not is released."""
    kept, lost = await answered_call(peer), await answered_call(peer)
    held = peer.sessions[kept]
    await peer.restart()
    peer.sessions[kept] = held  # e.g. restored from a database by the new run
    await eventually(lambda: handler.ended.get(lost) == "opensips restarted", 2.0, "release")
    assert backend.active_calls() == [kept] and kept not in handler.ended


async def test_calls_opensips_ends_without_an_event_are_released(
        peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """OpenSIPS 3.6.8 ends a session at ua_default_timeout with a BYE to the caller and
    no event to the engine (seen on the wire); a lost TERMINATED datagram looks the
    same. The backend asks for each answered call now and then and releases those
    OpenSIPS no longer holds, without an MI call for them; the others go on."""
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0,
                             poll_interval=0.1, audit_interval=0.2)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        expired, kept = await answered_call(peer), await answered_call(peer)
        logged = len(peer.mi_log)
        peer.time_out(expired)
        await eventually(lambda: handler.ended.get(expired) == "opensips ended it", 3,
                         "the expired call released")
        assert engine.active_calls() == [kept] and kept not in handler.ended
        assert not [m for m, *_ in peer.mi_log[logged:]
                    if m in ("ua_session_terminate", "ua_session_reply")]
    finally:
        await engine.stop()


async def test_not_ready_while_unsubscribed(peer: OpenSipsPeer,
                                            handler: RecordingHandler) -> None:
    """A restarted OpenSIPS that refuses event_subscribe: not ready until it accepts."""
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, poll_interval=0.2)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        assert engine.readiness() == (True, f"subscribed to E_UA_SESSION on "
                                            f"{engine.event_socket}")
        peer.refuse_subscribe = True
        await peer.restart()
        await eventually(lambda: "event_subscribe failed" in engine.readiness()[1], 5,
                         "the refused subscription reported")
        assert not engine.ready
        peer.refuse_subscribe = False
        await asyncio.wait_for(engine.subscribed.wait(), 5)
        assert engine.ready and engine.restarts == 1
    finally:
        await engine.stop()


async def test_not_ready_while_opensips_is_silent(peer: OpenSipsPeer,
                                                  handler: RecordingHandler) -> None:
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, poll_interval=0.2,
                             missed_polls=3)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        peer.answering = False
        await eventually(lambda: not engine.ready, 5, "not ready")
        assert "does not answer" in engine.readiness()[1]
        peer.answering = True  # the same run comes back (a stall, not a restart)
        await asyncio.wait_for(engine.subscribed.wait(), 5)
        assert engine.restarts == 0
    finally:
        await engine.stop()


async def test_hangup_never_terminates_another_runs_session(
        peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """b2b_entities finds a key by hash and local index only: after a restart an old
    call's key names a new caller's session. Before the restart is noticed, the bot's
    hang-up checks the listed to_tag and leaves the stranger's call alone."""
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, poll_interval=60)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        old = await answered_call(peer)
        await peer.restart()
        stranger = old.rsplit(".", 2)[0] + ".1799999999.42"  # same slot, another session
        peer.sessions[stranger] = PeerSession(stranger, "s@x", "", state=5, pending=None)
        await engine.hangup(old)
        assert stranger in peer.sessions and peer.terminated == []
        assert engine.active_calls() == []
    finally:
        await engine.stop()


async def test_handler_crash_replies_500_and_keeps_serving(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    handler.refuse = RuntimeError("call manager bug")
    key = peer.new_call()
    reply = await peer.wait_reply(key)
    assert (reply["code"], reply["reason"]) == (500, "Server Internal Error")
    handler.refuse = None
    await answered_call(peer)


def test_run_identity_from_uptime() -> None:
    """`uptime` as OpenSIPS 3.x answers it; a new "Up since", or an "Up time" that went
    backwards (two starts within one second), is a new run."""
    answer = {"Now": "Sun Nov 29 17:00:10 2026", "Up since": "Sun Nov 29 17:00:00 2026",
              "Up time": "10 [sec]"}
    first = OpenSipsRun.from_uptime(answer, seen_at=100.0)
    assert first == OpenSipsRun("Sun Nov 29 17:00:00 2026", 10, 100.0)
    later = OpenSipsRun.from_uptime({**answer, "Up time": "15 [sec]"}, seen_at=105.0)
    assert later is not None and not later.is_new_run_since(first)
    restarted = OpenSipsRun.from_uptime({**answer, "Up since": "Sun Nov 29 17:00:14 2026",
                                         "Up time": "1 [sec]"}, seen_at=105.0)
    assert restarted is not None and restarted.is_new_run_since(first)
    same_second = OpenSipsRun.from_uptime({**answer, "Up time": "0 [sec]"}, seen_at=105.0)
    assert same_second is not None and same_second.is_new_run_since(first)
    assert OpenSipsRun.from_uptime({"Now": "x"}, 1.0) is None
    assert OpenSipsRun.from_uptime("OK", 1.0) is None
