"""Transfer (REFER) and outbound calls of OpenSipsBackend against the OpenSIPS double.

OpenSIPS cannot be installed here. The double (dev/testkit/src/voice_testkit/opensips_peer.py) plays
OpenSIPS 3.6.8 as its b2b_entities source has it for these paths (docs/opensips.md,
"Transfer and outbound calls"): none of this was watched on a real OpenSIPS. Real
UDP on 127.0.0.1: MI JSON-RPC to the double, E_UA_SESSION events back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from opensips_ai_core.signalling.base import OutboundRequest
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.opensips import OpenSipsBackend
from tests.core.signalling.conftest import RecordingHandler, eventually
from voice_testkit.opensips_peer import SIPP_OFFER, OpenSipsPeer
from voice_testkit.procs import LOOPBACK

ADVISERS = "sip:advisers@10.0.0.9"


@pytest.fixture
async def backend(peer: OpenSipsPeer, handler: RecordingHandler
                  ) -> AsyncIterator[OpenSipsBackend]:
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0,
                             outbound_socket="udp:127.0.0.1:5060")
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        yield engine
    finally:
        await engine.stop()


async def answered_call(peer: OpenSipsPeer) -> str:
    key = peer.new_call()
    assert (await peer.wait_reply(key))["code"] == 200
    return key


async def refer_sent(peer: OpenSipsPeer, key: str) -> str:
    await peer.wait_for(lambda: peer.sessions[key].requests, 10, "the REFER")
    return peer.sessions[key].requests[0]


async def test_transfer_refers_answers_notifies_and_ends_the_call(
        backend: OpenSipsBackend, peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    key = await answered_call(peer)
    transfer = asyncio.create_task(backend.transfer(key, ADVISERS, timeout_s=10))
    refer = await refer_sent(peer, key)
    # Our two lines exactly (no uninitialised bytes, shown by the double as "?"), then
    # OpenSIPS' Contact and the Content-Type it adds to any request given a body, even
    # an empty one: as OpenSIPS 3.6.8 sent it (docs/opensips.md).
    assert refer.startswith("REFER ") and "Content-Length: 0\r\n" in refer
    assert refer.endswith(f"Refer-To: <{ADVISERS}>\r\nReferred-By: <sip:ai@127.0.0.1:5060>\r\n"
                          "Contact: <sip:127.0.0.1:5060>\r\n"
                          "Content-Type: application/sdp\r\n\r\n")
    assert "?" not in refer
    peer.refer_reply(key, 202, "Accepted")
    peer.notify(key, "SIP/2.0 100 Trying", "active;expires=60")
    await peer.wait_reply(key, 2)  # the 200 to the first NOTIFY
    peer.notify(key, "SIP/2.0 200 OK", "terminated;reason=noresource")
    result = await asyncio.wait_for(transfer, 10)
    assert result.ok and result.code == 200
    notify_replies = [r for r in peer.accepted("ua_session_reply", key)
                      if r["method"] == "NOTIFY"]
    assert [r["code"] for r in notify_replies] == [200, 200]
    assert peer.terminated == [key]  # the BYE
    assert backend.active_calls() == [] and key not in handler.ended


@pytest.mark.parametrize("code", [405, 603])
async def test_refused_refer_keeps_the_call(backend: OpenSipsBackend, peer: OpenSipsPeer,
                                            code: int) -> None:
    key = await answered_call(peer)
    transfer = asyncio.create_task(backend.transfer(key, ADVISERS, timeout_s=10))
    await refer_sent(peer, key)
    peer.refer_reply(key, code, "Refused")
    result = await asyncio.wait_for(transfer, 10)
    assert not result.ok and result.code == code
    assert backend.active_calls() == [key] and peer.terminated == []


async def test_target_not_answering_keeps_the_call(backend: OpenSipsBackend,
                                                   peer: OpenSipsPeer) -> None:
    key = await answered_call(peer)
    transfer = asyncio.create_task(backend.transfer(key, ADVISERS, timeout_s=10))
    await refer_sent(peer, key)
    peer.refer_reply(key, 202, "Accepted")
    peer.notify(key, "SIP/2.0 487 Request Terminated", "terminated;reason=noresource")
    result = await asyncio.wait_for(transfer, 10)
    assert not result.ok and result.code == 487
    assert backend.active_calls() == [key]


async def test_no_notify_in_time_keeps_the_call(backend: OpenSipsBackend,
                                                peer: OpenSipsPeer) -> None:
    key = await answered_call(peer)
    transfer = asyncio.create_task(backend.transfer(key, ADVISERS, timeout_s=0.5))
    await refer_sent(peer, key)
    peer.refer_reply(key, 202, "Accepted")
    result = await asyncio.wait_for(transfer, 10)
    assert not result.ok and result.code == 408
    # A NOTIFY after the transfer gave up: 481, the subscription is gone.
    peer.notify(key, "SIP/2.0 200 OK", "terminated")
    reply = await peer.wait_reply(key, 2)
    assert reply["method"] == "NOTIFY" and reply["code"] == 481
    assert backend.active_calls() == [key]


async def test_transfer_of_an_unknown_call_fails_without_mi(backend: OpenSipsBackend,
                                                            peer: OpenSipsPeer) -> None:
    result = await backend.transfer("B2B.1.1.1.1", ADVISERS)
    assert not result.ok and result.code == 481
    assert peer.accepted("ua_session_update") == []


async def dialing(peer: OpenSipsPeer) -> str:
    await peer.wait_for(lambda: any(s.entity == "UAC" for s in peer.sessions.values()), 10,
                        "ua_session_client_start")
    return next(k for k, s in peer.sessions.items() if s.entity == "UAC")


async def test_outbound_call_answered_then_hung_up(backend: OpenSipsBackend,
                                                   peer: OpenSipsPeer,
                                                   handler: RecordingHandler) -> None:
    seen: list[int] = []
    dial = asyncio.create_task(backend.dial("out-1@core", OutboundRequest(
        to="sip:bob@10.0.0.7", caller_id="Bank"), lambda code, _r: seen.append(code)))
    key = await dialing(peer)
    invite = peer.sessions[key].invite
    assert invite is not None
    assert invite["ruri"] == invite["to"] == "sip:bob@10.0.0.7"
    assert invite["from"] == "Bank,sip:ai@127.0.0.1"
    assert invite["socket"] == "udp:127.0.0.1:5060" and invite["flags"] == "rbh"
    assert "m=audio" in invite["body"]  # the call manager's offer
    peer.callee_reply(key, 180, "Ringing")
    peer.callee_reply(key, 200, "OK", SIPP_OFFER)
    assert await asyncio.wait_for(dial, 10) == 200
    assert seen == [180, 200]
    assert handler.calls["out-1@core"].direction == "outbound"
    assert handler.completed["out-1@core"].codec == "PCMU"
    assert backend.active_calls() == ["out-1@core"]
    await backend.hangup("out-1@core")
    assert peer.terminated == [key]
    assert backend.active_calls() == []


async def test_outbound_call_rejected(backend: OpenSipsBackend, peer: OpenSipsPeer,
                                      handler: RecordingHandler) -> None:
    dial = asyncio.create_task(backend.dial("out-2@core",
                                            OutboundRequest(to="sip:bob@10.0.0.7")))
    key = await dialing(peer)
    peer.callee_reply(key, 486, "Busy Here")
    with pytest.raises(SignallingError) as raised:
        await asyncio.wait_for(dial, 10)
    assert raised.value.code == 486
    assert "out-2@core" in handler.ended


async def test_outbound_call_not_answered_is_cancelled(backend: OpenSipsBackend,
                                                       peer: OpenSipsPeer,
                                                       handler: RecordingHandler) -> None:
    dial = asyncio.create_task(backend.dial("out-3@core", OutboundRequest(
        to="sip:bob@10.0.0.7", max_ring_s=0.5)))
    key = await dialing(peer)
    peer.callee_reply(key, 180, "Ringing")
    with pytest.raises(SignallingError) as raised:
        await asyncio.wait_for(dial, 10)
    assert raised.value.code == 487
    assert peer.cancelled == [key]
    assert "out-3@core" in handler.ended


async def test_callee_hangs_up_an_outbound_call(backend: OpenSipsBackend, peer: OpenSipsPeer,
                                                handler: RecordingHandler) -> None:
    dial = asyncio.create_task(backend.dial("out-4@core",
                                            OutboundRequest(to="sip:bob@10.0.0.7")))
    key = await dialing(peer)
    peer.callee_reply(key, 200, "OK", SIPP_OFFER)
    await asyncio.wait_for(dial, 10)
    peer.callee_bye(key)
    await eventually(lambda: "out-4@core" in handler.ended, 10, "end_call")
    assert handler.ended["out-4@core"] == "bye"
    assert backend.active_calls() == []


async def test_a_ringing_event_after_the_answer_is_ignored(
        backend: OpenSipsBackend, peer: OpenSipsPeer) -> None:
    """OpenSIPS 3.6.8 raises events from several worker processes, so the 180 and the
    200 of a callee that sends them back to back may arrive crossed (seen on a real
    run): the late EARLY must not turn an answered call back into a ringing one."""
    progress: list[int] = []
    dial = asyncio.create_task(backend.dial(
        "out-late", OutboundRequest(to="sip:bob@10.0.0.9", max_ring_s=10),
        lambda code, _reason: progress.append(code)))
    key = str(await peer.wait_for(lambda: next(
        (k for k, s in peer.sessions.items() if s.entity == "UAC"), None), 5, "the dial"))
    peer.callee_reply(key, 200, "OK", body=SIPP_OFFER)
    assert await asyncio.wait_for(dial, 5) == 200
    peer.callee_reply(key, 180, "Ringing")
    await asyncio.sleep(0.2)  # the late event is in; nothing may come of it
    assert progress == [200]
    assert backend.active_calls() == ["out-late"]
