"""The script's gate (signalling/opensips/gate.py) against the OpenSIPS double.

core/opensips/opensips.cfg answers a new caller 503 with Retry-After itself while no
core takes calls; the double (dev/testkit/src/voice_testkit/opensips_peer.py) plays
that as the real 3.6.8 did (test_opensips_real.py checks it on the real program).
Real UDP on 127.0.0.1: MI to the double, its events to the backend.
"""

from __future__ import annotations

import asyncio

from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.opensips import MiClient, OpenSipsBackend
from opensips_ai_core.signalling.opensips.gate import CallGate, Unrenewed
from tests.core.signalling.conftest import RecordingHandler, eventually
from voice_testkit.opensips_peer import OpenSipsPeer
from voice_testkit.procs import LOOPBACK


def mi_methods(peer: OpenSipsPeer) -> list[str]:
    """The MI calls the double got, shv_set written with its variable and value."""
    return [f"shv_set {p['name']}={p['value']}" if m == "shv_set" else m
            for m, p, _ in peer.mi_log if m != "uptime"]


def refused(peer: OpenSipsPeer, key: str, why: str = "no core") -> str:
    assert key not in peer.sessions, "a session was started for a refused caller"
    reply = peer.script_replies[key]
    assert reply.startswith(f"SIP/2.0 503 Service Unavailable ({why})\r\n"), reply
    return reply


async def test_the_gate_opens_before_the_subscription_and_closes_at_the_stop(
        peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    assert "\r\nRetry-After: 5\r\n" in refused(peer, peer.new_call())  # no core yet
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0,
                             poll_interval=0.2)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        assert mi_methods(peer)[:4] == ["shv_set ai_lease=10",
                                        f"shv_set ai_owner={engine.gate.owner_id}",
                                        "shv_set ai_core=1", "event_subscribe"]
        key = peer.new_call()
        assert (await peer.wait_reply(key))["code"] == 200
    finally:
        await engine.stop()
    # Closed (Retry-After for whatever replaces this core) before the unsubscription.
    # (Its own: no other core opened it since.)
    assert mi_methods(peer)[-4:] == ["shv_get", "shv_set ai_retry_after=5",
                                     "shv_set ai_core=0", "event_subscribe"]
    assert peer.shared["ai_core"] == 0 and peer.shared["ai_retry_after"] == 5
    assert "\r\nRetry-After: 5\r\n" in refused(peer, peer.new_call())
    assert list(handler.calls) == [key]


async def test_a_draining_core_closes_the_gate_with_its_retry_after(
        peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    # A short subscription (renewed every 1.5 s) shows a renewal during the drain.
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, expire=2, mi_timeout=1.0,
                             poll_interval=0.2)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        answered = peer.new_call()
        assert (await peer.wait_reply(answered))["code"] == 200
        engine.drain_refusal = lambda: SignallingError(
            503, "Service Unavailable (draining)", retry_after=42)
        await peer.wait_for(lambda: not peer.gate_open(), 15, "the gate closed")
        assert "\r\nRetry-After: 42\r\n" in refused(peer, peer.new_call(), "draining")
        assert list(handler.calls) == [answered]  # no NEW reached the draining core
        # Its call goes on: the subscription is renewed, the gate stays closed.
        renewals = len(peer.subscribe_calls)
        await peer.wait_for(lambda: len(peer.subscribe_calls) > renewals or None, 15,
                            "a renewal")
        assert not peer.gate_open() and engine.active_calls() == [answered]
        peer.bye(answered)
        await eventually(lambda: handler.ended.get(answered) == "bye", 15, "the call ended")
    finally:
        await engine.stop()


async def test_lost_gate_answers_do_not_stop_the_core(
        peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """shv_set answers lost (a busy MI, UDP): the core subscribes anyway and writes the
    gate (its lease first) again at each poll until OpenSIPS confirms it."""
    peer.lose_answers = {"shv_set"}
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=0.3,
                             poll_interval=0.2)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        assert engine.ready and engine.gate.is_open is None
        # The lease is written first, and again at each poll while unconfirmed.
        writes = len([m for m in mi_methods(peer) if m == "shv_set ai_lease=10"])
        await peer.wait_for(lambda: len([m for m in mi_methods(peer)
                                         if m == "shv_set ai_lease=10"]) > writes, 15,
                            "the gate written again")
        peer.lose_answers = set()
        await eventually(lambda: engine.gate.is_open, 15, "the gate confirmed open")
    finally:
        await engine.stop()


async def test_a_restart_uptime_cannot_tell_is_noticed_by_the_closed_gate(
        peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """Two OpenSIPS runs started within one second print the same "Up since" (seen on
    the real 3.6.8 in tests). The new run's gate is closed: the core, reading it back,
    handles that as a restart: it opens the gate, subscribes again and releases the
    call the new run does not hold."""
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0,
                             poll_interval=0.2)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        key = peer.new_call()
        assert (await peer.wait_reply(key))["code"] == 200
        started = peer.started
        await peer.restart()
        peer.started = started  # uptime answers as the previous run would
        await eventually(lambda: handler.ended.get(key) == "opensips restarted", 15,
                         "the call released")
        assert engine.restarts == 1
        await eventually(lambda: engine.ready and peer.live_subscriptions(), 15, "subscribed")
        assert peer.gate_open()
        again = peer.new_call()
        assert (await peer.wait_reply(again))["code"] == 200
    finally:
        await engine.stop()


async def test_a_draining_core_that_dies_leaves_the_gate_to_its_lease(
        peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """The core drains (gate 2, Retry-After 42), then dies without closing the gate: it
    renews the lease no more, and the script's timer closes the gate as "no core" with
    Retry-After 5 for whatever replaces it."""
    engine = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0,
                             poll_interval=0.2, gate_lease=3)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        engine.drain_refusal = lambda: SignallingError(
            503, "Service Unavailable (draining)", retry_after=42)
        await peer.wait_for(lambda: peer.shared["ai_core"] == 2, 30, "the gate draining")
        # Renewed while the core drains: the gate stays "draining" past the lease (20
        # renewals, a poll apart: more than its 3 s).
        renewals = engine.gate.renewals
        await eventually(lambda: engine.gate.renewals >= renewals + 20, 30, "renewals")
        assert peer.shared["ai_core"] == 2 and peer.lease_lapses == 0
        assert "\r\nRetry-After: 42\r\n" in refused(peer, peer.new_call(), "draining")
        # The core dies: nothing more written.
        assert engine._supervisor is not None
        engine._supervisor.cancel()
        await peer.wait_for(lambda: peer.lease_lapses == 1, 30, "the lease ran out")
        assert "\r\nRetry-After: 5\r\n" in refused(peer, peer.new_call())
        assert list(handler.calls) == []
    finally:
        await engine.stop()


async def test_a_second_core_going_away_leaves_the_first_ones_gate(
        peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    """Two cores on one OpenSIPS (a replacement overlapping the old core, say). The gate
    records who opened it last: a core that drains or stops closes it only when it is
    its own, and the other, finding it closed by another core, opens it again without
    taking that for an OpenSIPS restart."""
    def backend() -> OpenSipsBackend:
        return OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0,
                               poll_interval=0.2)

    stays, leaves = backend(), backend()
    await stays.start(handler)
    try:
        await asyncio.wait_for(stays.subscribed.wait(), 10)
        # The one that goes opened it last: its stop closes it...
        await leaves.start(RecordingHandler())
        try:
            await asyncio.wait_for(leaves.subscribed.wait(), 10)
            await peer.wait_for(lambda: peer.shared["ai_owner"] == leaves.gate.owner_id,
                                30, "the gate opened by the second core")
        finally:
            await leaves.stop()
        # ...and the one that stays opens it again: no restart.
        await peer.wait_for(lambda: peer.gate_open()
                            and peer.shared["ai_owner"] == stays.gate.owner_id, 30,
                            "the gate opened again by the core that stays")
        assert stays.restarts == 0 and stays.ready
    finally:
        await stays.stop()


async def test_a_core_that_drains_leaves_the_gate_another_core_opened(
        peer: OpenSipsPeer, handler: RecordingHandler) -> None:
    def backend() -> OpenSipsBackend:
        return OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0,
                               poll_interval=0.2)

    goes: OpenSipsBackend | None = backend()
    stays = backend()
    assert goes is not None
    await goes.start(RecordingHandler())
    try:
        await asyncio.wait_for(goes.subscribed.wait(), 10)
        await stays.start(handler)
        await asyncio.wait_for(stays.subscribed.wait(), 10)
        await peer.wait_for(lambda: peer.shared["ai_owner"] == stays.gate.owner_id, 30,
                            "the gate opened by the core that stays")
        goes.drain_refusal = lambda: SignallingError(
            503, "Service Unavailable (draining)", retry_after=42)
        await eventually(lambda: goes.gate.is_open is False, 30, "the drain noticed")
        assert peer.gate_open() and peer.shared["ai_owner"] == stays.gate.owner_id
        stopping, goes = goes, None
        await stopping.stop()
        assert peer.gate_open()
        assert stays.restarts == 0 and stays.ready
    finally:
        if goes is not None:
            await goes.stop()
        await stays.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_gate_found_closed_tells_a_lapse_from_a_restart(peer: OpenSipsPeer) -> None:
    """The gate found closed: after lease writes a second apart it is a restart (None);
    after a gap of `lease - 1` s or more between them it is a lapse of this core's,
    even when a renewal came after the gap (it reopens nothing, and is confirmed)."""
    clock = Clock()
    mi = MiClient(LOOPBACK, peer.mi_port, timeout=1.0)
    gate = CallGate(mi, lease_s=3, clock=clock)
    try:
        assert await gate.open()
        for _ in range(3):
            clock.now += 1.0
            assert await gate.renew() and not await gate.forgotten()
        peer.shared["ai_core"] = 0  # a new run's gate (uptime could not tell)
        assert await gate.forgotten() and gate.unrenewed() is None

        assert await gate.open() and not await gate.forgotten()
        stalled_at = clock.now
        clock.now += 5.0  # stalled past the lease...
        assert await gate.renew()  # ...then renewed, after the script closed it
        peer.shared["ai_core"] = 0
        clock.now += 1.0
        assert await gate.forgotten()
        assert gate.unrenewed() == Unrenewed(5.0, stalled_at)
    finally:
        await mi.close()
