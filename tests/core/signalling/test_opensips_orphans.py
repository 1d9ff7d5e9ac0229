"""Sessions OpenSIPS holds for no call of the core: found and ended after each subscription.

Against the OpenSIPS double (dev/testkit/src/voice_testkit/opensips_peer.py), which lists sessions as
OpenSIPS 3.6.8 printed them on a real run (a UAS session's key is its `to_tag`, a UAC
session's its `callid`, the key's local index is `dlg`) and keeps them, as the real one
did, when the core that answered them is gone. Real UDP on 127.0.0.1 both ways.
"""

from __future__ import annotations

import asyncio

import pytest

from opensips_ai_core.signalling.base import OutboundRequest
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.opensips import OpenSipsBackend
from opensips_ai_core.signalling.opensips.orphans import ListedSession
from tests.core.signalling.conftest import RecordingHandler, eventually
from voice_testkit.opensips_peer import (
    SIPP_OFFER,
    STATE_ESTABLISHED,
    STATE_NEW,
    STATE_TERMINATED,
    OpenSipsPeer,
)
from voice_testkit.procs import LOOPBACK


async def started(peer: OpenSipsPeer, handler: RecordingHandler, event_port: int = 0,
                  grace: float = 0.2) -> OpenSipsBackend:
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, event_port, mi_timeout=1.0,
                             poll_interval=0.2, orphan_grace=grace,
                             outbound_socket="udp:127.0.0.1:5060")
    await engine.start(handler)
    await asyncio.wait_for(engine.subscribed.wait(), 10)
    return engine


async def crash(engine: OpenSipsBackend) -> None:
    """The core process dies: its sockets close, nothing is unsubscribed or ended."""
    assert engine._supervisor is not None
    engine._supervisor.cancel()
    await asyncio.gather(engine._supervisor, return_exceptions=True)
    await engine.orphans.stop()
    await engine._tasks.cancel_all()
    await engine.events.close()
    await engine.mi.close()
    await asyncio.sleep(0.01)  # sockets close on the loop's next turn


def mi_calls(peer: OpenSipsPeer, method: str, key: str) -> list[dict]:
    return [p for m, p, _ in peer.mi_log if m == method and isinstance(p, dict)
            and p.get("key") == key]


async def test_a_restarted_core_ends_the_calls_its_predecessor_left(
        peer: OpenSipsPeer) -> None:
    """The core crashes with a call up; OpenSIPS keeps the session (and our old
    subscription). The next core process ends it with ua_session_terminate (a BYE),
    and a caller who came while no core was there (only `100 Giving it a try`) gets
    503 and is deleted, instead of both waiting for ua_default_timeout."""
    first = RecordingHandler()
    engine = await started(peer, first)
    port = engine.events.port
    answered = peer.new_call()
    assert (await peer.wait_reply(answered))["code"] == 200
    await crash(engine)
    waiting = peer.new_call()  # its NEW event goes to the dead core's port
    assert peer.sessions[waiting].state == STATE_NEW

    second = RecordingHandler()
    engine = await started(peer, second, event_port=port)
    try:
        await peer.wait_for(lambda: answered in peer.terminated and waiting in peer.deleted,
                            5, "both orphans ended")
        refusal = mi_calls(peer, "ua_session_reply", waiting)
        assert [(r["method"], r["code"]) for r in refusal] == [("INVITE", 503)]
        assert peer.sessions == {} and engine.orphans.ended == 2
        assert second.calls == {} and second.ended == {}  # nothing reached the call manager
        key = peer.new_call()  # and the new core serves new callers
        assert (await peer.wait_reply(key))["code"] == 200
        assert engine.active_calls() == [key]
    finally:
        await engine.stop()


async def test_terminated_and_ringing_leftovers(peer: OpenSipsPeer) -> None:
    """A rejected session left in state 7 is deleted without a message; an outbound
    call still ringing for a core that is gone is cancelled."""
    peer.shared.update(ai_core=1, ai_lease=10)  # the gate the core that left them opened
    rejected = peer.new_call()
    peer.sessions[rejected].state, peer.sessions[rejected].pending = STATE_TERMINATED, None
    ringing = peer._ua_session_client_start({"ruri": "sip:bob@10.0.0.9", "to": "sip:bob@10.0.0.9",
                                             "from": "sip:ai@127.0.0.1"})
    engine = await started(peer, RecordingHandler())
    try:
        await peer.wait_for(lambda: rejected in peer.deleted and ringing in peer.cancelled,
                            5, "both leftovers ended")
        assert mi_calls(peer, "ua_session_reply", rejected) == []
        assert mi_calls(peer, "ua_session_reply", ringing) == []
    finally:
        await engine.stop()


async def test_a_new_event_arriving_during_the_grace_is_not_an_orphan(
        peer: OpenSipsPeer) -> None:
    """The listing may show a session whose NEW event is still on its way: after the
    grace the core knows it, answers it, and does not end it."""
    handler = RecordingHandler()
    peer.shared.update(ai_core=1, ai_lease=10)  # the gate opens before the subscription...
    early = peer.new_call()  # ...and a caller comes in between: no event sent
    engine = await started(peer, handler, grace=1.0)
    try:
        await peer.wait_for(lambda: any(m == "ua_session_list" for m, *_ in peer.mi_log), 5,
                            "the first listing")
        peer.send_event(early, "NEW", "INVITE", SIPP_OFFER, peer.sessions[early].headers)
        assert (await peer.wait_reply(early))["code"] == 200
        await asyncio.sleep(1.5)  # the grace is over: the sweep has decided
        assert engine.active_calls() == [early]
        assert early not in peer.terminated and early not in peer.deleted
        assert engine.orphans.ended == 0
    finally:
        await engine.stop()


async def test_a_caller_during_an_opensips_restart_is_not_left_ringing(
        peer: OpenSipsPeer) -> None:
    """OpenSIPS restarts and a caller arrives before the core has subscribed again: the
    new run's gate starts closed, so the script refuses that caller with 503 at once;
    once the core noticed the restart it opens the gate again and serves callers."""
    engine = await started(peer, RecordingHandler())
    try:
        await peer.restart()
        lost = peer.new_call()  # the new run: no subscriber, the gate closed
        assert lost not in peer.sessions
        assert peer.script_replies[lost].startswith("SIP/2.0 503 Service Unavailable")
        assert "\r\nRetry-After: 5\r\n" in peer.script_replies[lost]
        await eventually(lambda: engine.restarts == 1 and engine.ready, 5, "subscribed again")
        assert peer.gate_open()
        key = peer.new_call()
        assert (await peer.wait_reply(key))["code"] == 200
        assert engine.orphans.ended == 0  # nobody was left waiting
    finally:
        await engine.stop()


async def test_an_opensips_restart_releases_outbound_calls_too(peer: OpenSipsPeer) -> None:
    """Reconciling after an OpenSIPS restart covers the calls the core placed: an
    answered outbound call the new run does not hold is released locally."""
    handler = RecordingHandler()
    engine = await started(peer, handler)
    try:
        dial = asyncio.create_task(engine.dial(
            "out-1", OutboundRequest(to="sip:bob@10.0.0.9", max_ring_s=10)))
        key = str(await peer.wait_for(lambda: next(
            (k for k, s in peer.sessions.items() if s.entity == "UAC"), None), 5, "the dial"))
        peer.callee_reply(key, 200, "OK", body=(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 7000 RTP/AVP 0\r\n"))
        assert await asyncio.wait_for(dial, 5) == 200
        assert engine.active_calls() == ["out-1"]
        await peer.restart()
        await eventually(lambda: handler.ended.get("out-1") == "opensips restarted", 3,
                         "the outbound call released")
        assert engine.active_calls() == []
        assert mi_calls(peer, "ua_session_terminate", key) == []  # a stale key: no MI
    finally:
        await engine.stop()


async def test_a_ringing_outbound_call_fails_when_opensips_restarts(
        peer: OpenSipsPeer) -> None:
    engine = await started(peer, RecordingHandler())
    try:
        dial = asyncio.create_task(engine.dial(
            "out-2", OutboundRequest(to="sip:bob@10.0.0.9", max_ring_s=30)))
        await peer.wait_for(lambda: any(s.entity == "UAC" for s in peer.sessions.values()),
                            5, "the dial")
        await peer.restart()
        with pytest.raises(SignallingError) as refused:
            await asyncio.wait_for(dial, 5)
        assert refused.value.code == 503
    finally:
        await engine.stop()


def test_keys_of_listed_sessions_as_opensips_printed_them() -> None:
    """Entries as OpenSIPS 3.6.8 printed them (trimmed): a UAS session keyed by its
    To-tag, a UAC session (ua_session_client_start) by its Call-ID; `dlg` is the key's
    local index, which tells the two apart."""
    uas = {"dlg": 230, "state": 5, "callid": "1-16481@127.0.0.1",
           "from_tag": "16481SIPpTag001", "to_tag": "B2B.272.230.1795982243.1541778704"}
    uac = {"dlg": 2444577, "state": 5, "callid": "B2B.344.2444577.1795982351.208707868",
           "from_tag": "eab1440d41ebad101122721b99a5c6f4-4a11", "to_tag": "20007Callee1"}
    assert ListedSession.from_entry(uas) == ListedSession(
        "B2B.272.230.1795982243.1541778704", "UAS", 5)
    assert ListedSession.from_entry(uac) == ListedSession(
        "B2B.344.2444577.1795982351.208707868", "UAC", 5)
    # A B2B peer's tag in the other field does not confuse it: the local index decides.
    crossed = ListedSession.from_entry({**uac, "to_tag": "B2B.1.99.1.1"})
    assert crossed is not None and crossed.entity == "UAC"
    assert ListedSession.from_entry({"dlg": 1, "state": 5}) is None
    assert ListedSession.from_entry("garbage") is None
    assert STATE_ESTABLISHED == 5
