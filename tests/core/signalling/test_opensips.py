"""OpenSipsBackend against the OpenSIPS 3.6.8 wire double (tests/support/opensips_peer.py).

Real UDP on 127.0.0.1 both ways: MI JSON-RPC to the peer, E_UA_SESSION events
from the peer (each from a new source port) to the backend's listener.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator

import pytest

from opensips_ai_core.signalling.base import SignallingError
from opensips_ai_core.signalling.opensips import MiClient, MiError, MiTimeoutError, OpenSipsBackend
from opensips_ai_core.signalling.sdp import parse_sdp
from tests.core.signalling.conftest import RecordingHandler, eventually
from tests.support.opensips_peer import SIPP_OFFER, OpenSipsPeer, PeerSession
from tests.support.procs import LOOPBACK, free_port


@pytest.fixture
async def peer() -> AsyncIterator[OpenSipsPeer]:
    opensips = await OpenSipsPeer().start()
    try:
        yield opensips
    finally:
        await opensips.stop()


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
                             retry_initial=0.1, retry_max=0.2)
    await engine.start(handler)
    opensips = OpenSipsPeer(mi_port)
    try:
        await asyncio.sleep(1.0)
        assert not engine.subscribed.is_set()
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
                             retry_initial=0.1, retry_max=0.2)
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
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, expire=2)
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
    assert {k: reply[k] for k in ("key", "method", "code", "reason", "content_type")} == {
        "key": key, "method": "INVITE", "code": 200, "reason": "OK",
        "content_type": "application/sdp"}
    answer = parse_sdp(reply["body"])
    assert answer.media[0].formats == ["0", "101"]
    info = handler.calls[key]
    assert (info.caller, info.callee, info.backend) == (
        "sip:sipp@127.0.0.1:5070", "sip:ai@127.0.0.1:5060", "opensips")
    assert info.sip_call_id == peer.sessions[key].call_id
    assert peer.sessions[key].state == 5
    assert backend.active_calls() == [key]


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
    assert peer.sessions[key].state == 7


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
    assert not [m for m, *_ in peer.mi_log if m == "ua_session_terminate"]
    assert peer.sessions[key].state == 7


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
            await client.call("ua_session_list", {"key": "B2B.none"})
        assert (not_found.value.code, not_found.value.message) == (404, "Entity not found")
        # Concurrent calls on one socket are matched by id.
        results = await asyncio.gather(*(client.call("ua_session_list", {"key": key})
                                         for _ in range(20)))
        assert all(r == {"key": key, "state": 1} for r in results)
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


async def test_resubscribes_after_opensips_restart(handler: RecordingHandler) -> None:
    first = await OpenSipsPeer().start()
    mi_port = first.mi_port
    engine = OpenSipsBackend(LOOPBACK, mi_port, LOOPBACK, 0, refresh_max=0.5, mi_timeout=0.3,
                             retry_initial=0.1, retry_max=0.2)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        await first.stop()  # OpenSIPS restarts with no subscribers
        restarted = await OpenSipsPeer(mi_port).start()
        try:
            await restarted.wait_for(restarted.live_subscriptions, 10, "a new subscription")
            key = restarted.new_call()
            assert (await restarted.wait_reply(key))["code"] == 200
        finally:
            await engine.stop()
            await restarted.stop()
    finally:
        await first.stop()


async def test_handler_crash_replies_500_and_keeps_serving(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    handler.refuse = RuntimeError("call manager bug")
    key = peer.new_call()
    reply = await peer.wait_reply(key)
    assert (reply["code"], reply["reason"]) == (500, "Server Internal Error")
    handler.refuse = None
    await answered_call(peer)
