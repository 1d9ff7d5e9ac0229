"""Graceful drain of a core: SIGTERM or POST /drain.

The core runs as a real process (`python -m opensips_ai_core`, direct SIP on a free
loopback port) and is spoken to over real UDP by a raw SIP peer. The AI services'
targets are loopback ports where nothing listens: these tests are about signalling and
the drain; a call's conversation only has to start (tests/e2e/test_dispatcher.py
drains cores with the real services, closing line included).

The OpenSIPS B2B refusal is tested against dev/testkit/src/voice_testkit/opensips_peer.py, which
speaks OpenSIPS 3.6's documented MI/event wire format (no OpenSIPS is installable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from opensips_ai_core.calls import CallManager
from opensips_ai_core.config import PRODUCTION_DRAIN_TIMEOUT_S, BotConfig, CoreSettings
from opensips_ai_core.grpc_clients.asr import AsrClient
from opensips_ai_core.grpc_clients.llm import LlmClient
from opensips_ai_core.grpc_clients.tts import TtsClient
from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.pipeline.protocols import Services
from opensips_ai_core.signalling.opensips.backend import OpenSipsBackend
from opensips_ai_core.signalling.sip.message import SipMessage
from tests.core.signalling.sip_peer import OFFER, RawSipPeer
from voice_testkit.opensips_peer import OpenSipsPeer
from voice_testkit.procs import LOOPBACK, free_port
from voice_testkit.stack import Core, core, free_rtp_range

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture
def start_core(tmp_path: Path):
    """A core process whose AI services are nowhere (nothing listens on their ports)."""
    nowhere = f"{LOOPBACK}:{free_port()}"

    def starter(**env: str) -> contextlib.AbstractContextManager[Core]:
        return core(tmp_path, nowhere, nowhere, nowhere, CORE_GRACE_PERIOD_S="2", **env)

    return starter


def http(core_: Core, path: str, method: str = "GET") -> tuple[int, dict]:
    request = urllib.request.Request(core_.http + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def final_response(peer: RawSipPeer, call_id: str) -> SipMessage:
    while True:
        message = await peer.recv(10)
        if message.call_id == call_id and message.status is not None and message.status >= 200:
            return message


async def place_call(peer: RawSipPeer) -> tuple[str, str]:
    invite = peer.request("INVITE", body=OFFER)
    call_id = invite.split("Call-ID: ")[1].split("\r\n")[0]
    peer.send(invite)
    ok = await final_response(peer, call_id)
    assert ok.status == 200, ok.status
    peer.send(peer.ack_for(ok, invite))
    return call_id, (ok.get("To") or "").split("tag=")[1]


async def exit_code(core_: Core, timeout: float = 60.0) -> int:
    return await asyncio.to_thread(core_.proc.wait, timeout)


def test_drain_timeout_defaults() -> None:
    """900 s in production; 0 in development, so a hot reload's stop stays short."""
    assert CoreSettings().drain_timeout == PRODUCTION_DRAIN_TIMEOUT_S == 900
    assert CoreSettings(development_mode=True).drain_timeout == 0
    assert CoreSettings(development_mode=True, drain_timeout_s=30).drain_timeout == 30
    assert CoreSettings(drain_timeout_s=0).drain_timeout == 0


async def test_post_drain_refuses_new_calls_and_lets_the_active_one_finish(start_core) -> None:
    with start_core(CORE_DRAIN_TIMEOUT_S="600") as core_:
        peer = await RawSipPeer((LOOPBACK, core_.sip_port)).open()
        try:
            call_id, to_tag = await place_call(peer)
            options = peer.request("OPTIONS")
            peer.send(options)
            assert (await peer.expect(status=200)).status == 200  # in rotation

            status, body = await asyncio.to_thread(http, core_, "/drain", "POST")
            assert status == 202 and body["status"] == "draining", body
            assert body["calls_left"] == 1
            status, health = await asyncio.to_thread(http, core_, "/health")
            assert status == 503
            assert health["checks"]["drain"].startswith("draining: 1 call(s) left"), health
            assert health["draining"] is True
            assert (await asyncio.to_thread(http, core_, "/live"))[0] == 200
            metrics = await asyncio.to_thread(core_.metrics)
            assert "voice_draining 1.0" in metrics

            # A new INVITE: 503 with Retry-After (ACKed, as a caller would).
            invite = peer.request("INVITE", body=OFFER)
            new_id = invite.split("Call-ID: ")[1].split("\r\n")[0]
            peer.send(invite)
            refused = await final_response(peer, new_id)
            peer.send(peer.ack_for(refused, invite))
            assert refused.status == 503, refused.status
            assert int(refused.get("Retry-After") or 0) >= 5
            # OPTIONS outside a dialog: 503 too (a dispatcher marks the core inactive).
            options = peer.request("OPTIONS")
            options_id = options.split("Call-ID: ")[1].split("\r\n")[0]
            peer.send(options)
            probed = await final_response(peer, options_id)
            assert probed.status == 503 and probed.get("Retry-After"), probed.status
            # Asking again changes nothing.
            assert (await asyncio.to_thread(http, core_, "/drain", "POST"))[0] == 202

            # The active call goes on: in-dialog requests are served, the process waits.
            in_dialog = peer.request("OPTIONS", call_id=call_id, to_tag=to_tag, cseq=2)
            peer.send(in_dialog)
            assert (await final_response(peer, call_id)).status == 200
            assert core_.proc.popen.poll() is None
            assert [c["call_id"] for c in core_.calls()] == [call_id]

            # The caller hangs up: the drain is complete and the core exits by itself.
            peer.send(peer.request("BYE", call_id=call_id, to_tag=to_tag, cseq=3))
            assert (await final_response(peer, call_id)).status == 200
            assert await exit_code(core_) == 0
        finally:
            peer.close()
    log = core_.proc.log_path.read_text(errors="replace")
    assert "draining (POST /drain from 127.0.0.1)" in log
    assert "Drain time is up" not in log


async def test_sigterm_drain_ends_calls_politely_when_its_time_is_up(start_core) -> None:
    with start_core(CORE_DRAIN_TIMEOUT_S="1") as core_:
        peer = await RawSipPeer((LOOPBACK, core_.sip_port)).open()
        try:
            call_id, _ = await place_call(peer)
            core_.proc.signal(signal.SIGTERM)
            bye = await peer.expect(method="BYE", timeout=60)
            assert bye.call_id == call_id
            peer.send(f"SIP/2.0 200 OK\r\n{_echo_headers(bye)}Content-Length: 0\r\n\r\n")
            assert await exit_code(core_) == 0
        finally:
            peer.close()
    log = core_.proc.log_path.read_text(errors="replace")
    assert "draining (SIGTERM)" in log
    assert "Drain time is up: ending 1 call(s) politely" in log
    assert f"Call {call_id}: bot hangs up (drain)" in log or "Ending 1 calls for shutdown" in log


async def test_development_stop_keeps_the_short_drain(start_core) -> None:
    """DEVELOPMENT_MODE=1 without CORE_DRAIN_TIMEOUT_S: a stop (SIGTERM, which is also
    how a hot reload may stop the core) ends the active call at once, politely, and
    exits: the drain is as short as CORE_GRACE_PERIOD_S, not 900 s."""
    with start_core() as core_:  # the stack's core runs with DEVELOPMENT_MODE=1
        peer = await RawSipPeer((LOOPBACK, core_.sip_port)).open()
        try:
            call_id, _ = await place_call(peer)
            core_.proc.signal(signal.SIGTERM)
            bye = await peer.expect(method="BYE", timeout=60)
            assert bye.call_id == call_id
            peer.send(f"SIP/2.0 200 OK\r\n{_echo_headers(bye)}Content-Length: 0\r\n\r\n")
            assert await exit_code(core_) == 0
        finally:
            peer.close()
    log = core_.proc.log_path.read_text(errors="replace")
    assert "1 active call(s) may go on for 0 s" in log


def _echo_headers(request: SipMessage) -> str:
    lines = [f"Via: {via}" for via in request.get_all("Via")]
    lines += [f"{name}: {request.get(name)}" for name in ("From", "To", "Call-ID", "CSeq")]
    return "\r\n".join(lines) + "\r\n"


async def test_b2b_mode_refuses_new_sessions_while_draining(peer: OpenSipsPeer) -> None:
    """OpenSIPS B2B: a NEW session on a draining core is answered with ua_session_reply
    503 and a Retry-After header line (extra_headers), then deleted."""
    nowhere = f"{LOOPBACK}:{free_port()}"
    rtp = free_rtp_range(10)
    settings = CoreSettings(signalling="opensips", rtp_port_min=rtp[0], rtp_port_max=rtp[1],
                            asr_target=nowhere, llm_target=nowhere, tts_target=nowhere)
    services = Services(AsrClient(nowhere), LlmClient(nowhere), TtsClient(nowhere))
    manager = CallManager(settings, BotConfig(), services, RtpPortAllocator(*rtp))
    backend = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0)
    manager.backend = backend
    await backend.start(manager)
    try:
        await asyncio.wait_for(backend.subscribed.wait(), 10)
        manager.start_drain(120)
        key = peer.new_call()
        reply = await peer.wait_reply(key)
        assert (reply["method"], reply["code"], reply["reason"]) == (
            "INVITE", 503, "Service Unavailable (draining)")
        retry_after = reply["extra_headers"]
        assert retry_after.startswith("Retry-After: ") and retry_after.endswith("\r\n")
        assert 5 <= int(retry_after.split(": ")[1]) <= 120
        await peer.wait_for(lambda: key in peer.deleted, 5,
                                     "the refused session deleted")
        assert backend.active_calls() == [] and manager.held_slots == 0
        assert await manager.drain(1.0) == 0
    finally:
        await backend.stop()
        for client in (services.asr, services.llm, services.tts):
            await client.close()


async def test_b2b_mode_ends_the_calls_left_when_the_drain_is_over(
        peer: OpenSipsPeer) -> None:
    """An answered B2B session still going when the drain's time is up is ended by the
    core with ua_session_terminate (OpenSIPS sends the BYE), its slot released."""
    nowhere = f"{LOOPBACK}:{free_port()}"
    rtp = free_rtp_range(10)
    settings = CoreSettings(signalling="opensips", rtp_port_min=rtp[0], rtp_port_max=rtp[1],
                            asr_target=nowhere, llm_target=nowhere, tts_target=nowhere)
    services = Services(AsrClient(nowhere), LlmClient(nowhere), TtsClient(nowhere))
    manager = CallManager(settings, BotConfig(), services, RtpPortAllocator(*rtp))
    backend = OpenSipsBackend(LOOPBACK, peer.mi_port, LOOPBACK, 0, mi_timeout=1.0)
    manager.backend = backend
    await backend.start(manager)
    try:
        await asyncio.wait_for(backend.subscribed.wait(), 10)
        key = peer.new_call()
        assert (await peer.wait_reply(key))["code"] == 200
        await peer.wait_for(lambda: manager.calls, 5, "the call answered")
        manager.start_drain(0.1)
        assert await manager.drain(1.0) == 1
        await peer.wait_for(lambda: key in peer.terminated, 10,
                                     "ua_session_terminate for the call left")
        assert manager.held_slots == 0 and backend.active_calls() == []
    finally:
        await backend.stop()
        for client in (services.asr, services.llm, services.tts):
            await client.close()


async def test_b2b_mode_a_drained_core_leaves_opensips_refusing_new_callers(
        start_core, peer: OpenSipsPeer) -> None:
    """OpenSIPS B2B, the core a real process: POST /drain closes the script's gate (no
    session reaches the draining core; OpenSIPS answers 503 with the drain's
    Retry-After), the active call goes on, and once the drained core has exited new
    callers still get OpenSIPS' own 503 (Retry-After 5), not 100 Trying from a session
    nobody takes. The real OpenSIPS does the same: test_opensips_real.py."""
    # Started off the event loop: the double answers the core's MI on this loop.
    cm = start_core(CORE_SIGNALLING="opensips", OPENSIPS_MI_PORT=str(peer.mi_port),
                    CORE_DRAIN_TIMEOUT_S="600")
    core_ = await asyncio.to_thread(cm.__enter__)
    try:
        assert peer.gate_open() and peer.live_subscriptions()
        key = peer.new_call()
        assert (await peer.wait_reply(key))["code"] == 200
        status, body = await asyncio.to_thread(http, core_, "/drain", "POST")
        assert status == 202 and body["calls_left"] == 1, body
        await peer.wait_for(lambda: not peer.gate_open(), 30, "the gate closed by the drain")
        draining = peer.script_replies[peer.new_call()]
        assert draining.startswith("SIP/2.0 503 Service Unavailable (draining)\r\n")
        # The drain's seconds left, not the stopped core's 5.
        assert 5 < int(draining.split("Retry-After: ")[1].split("\r\n")[0]) <= 600
        assert core_.proc.popen.poll() is None
        assert len(await asyncio.to_thread(core_.calls)) == 1
        peer.bye(key)  # the last call ends: the drain is complete, the core exits
        assert await exit_code(core_) == 0
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)
    assert not peer.live_subscriptions()  # it unsubscribed on its way out
    stopped = peer.script_replies[peer.new_call()]
    assert stopped.startswith("SIP/2.0 503 Service Unavailable (no core)\r\n")
    assert "\r\nRetry-After: 5\r\n" in stopped
    assert len(peer.sessions) == 0
