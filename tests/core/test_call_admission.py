"""The call manager behind the direct SIP UAS, over real UDP on 127.0.0.1: set-up failures
leak nothing, admission follows the ASR stream limit, a bot hang-up releases at once.

The AI services' targets are loopback ports where nothing listens: these tests are about
signalling, RTP ports and call slots, and a call's conversation only has to start (its
gRPC calls wait for a service that never comes, and are cancelled when the call ends).
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from opensips_ai_core.calls import CallManager
from opensips_ai_core.config import BotConfig, CoreSettings
from opensips_ai_core.grpc_clients.asr import AsrClient
from opensips_ai_core.grpc_clients.llm import LlmClient
from opensips_ai_core.grpc_clients.tts import TtsClient
from opensips_ai_core.http import HttpServer
from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.pipeline.protocols import Services
from opensips_ai_core.signalling.sip import DirectSipBackend, SipTimers
from opensips_ai_core.signalling.sip.message import SipMessage
from tests.core.signalling.conftest import eventually
from tests.core.signalling.sip_peer import OFFER, RawSipPeer
from voice_testkit.procs import LOOPBACK, free_port
from voice_testkit.stack import free_rtp_range

pytestmark = [pytest.mark.timeout(300)]

FAST = SipTimers(t1=0.05, t2=0.4)  # 64*T1 = 3.2 s
ASR_STREAMS = 2


@dataclass
class Core:
    manager: CallManager
    backend: DirectSipBackend
    ports: RtpPortAllocator
    http: HttpServer
    peer: RawSipPeer


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    rtp = free_rtp_range(20)
    nowhere = f"{LOOPBACK}:{free_port()}"
    settings = CoreSettings(sip_host=LOOPBACK, sip_port=0, rtp_port_min=rtp[0],
                            rtp_port_max=rtp[1], max_calls=10, asr_max_streams=ASR_STREAMS,
                            asr_target=nowhere, llm_target=nowhere, tts_target=nowhere)
    services = Services(AsrClient(nowhere), LlmClient(nowhere), TtsClient(nowhere))
    ports = RtpPortAllocator(*rtp)
    manager = CallManager(settings, BotConfig(), services, ports)
    backend = DirectSipBackend(LOOPBACK, 0, timers=FAST)
    manager.backend = backend
    await backend.start(manager)
    http = HttpServer(LOOPBACK, 0, manager.capacity, manager.snapshot)
    http.add_check("capacity", lambda: None if (r := manager.refusal()) is None else str(r))
    await http.start()
    peer = await RawSipPeer((LOOPBACK, backend.port)).open()
    try:
        yield Core(manager, backend, ports, http, peer)
    finally:
        peer.close()
        await manager.shutdown(1.0)
        await backend.stop()
        await http.stop()
        for client in (services.asr, services.llm, services.tts):
            await client.close()


async def response_to(peer: RawSipPeer, call_id: str, status: int | None = None,
                      final: bool = True) -> SipMessage:
    """The next response of this call (a final one unless told), others skipped."""
    while True:
        message = await peer.recv(10)
        if message.call_id != call_id or message.status is None:
            continue
        if (status is None and (not final or message.status >= 200)) or \
                message.status == status:
            return message


async def answer_call(peer: RawSipPeer) -> tuple[str, str]:
    invite = peer.request("INVITE", body=OFFER)
    call_id = invite.split("Call-ID: ")[1].split("\r\n")[0]
    peer.send(invite)
    ok = await response_to(peer, call_id)
    assert ok.status == 200, ok.status
    peer.send(peer.ack_for(ok, invite))
    return call_id, (ok.get("To") or "").split("tag=")[1]


async def health(core: Core) -> tuple[int, dict]:
    return await asyncio.to_thread(_get_health, core)


def _get_health(core: Core) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{core.http.port}/health",
                                    timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def every_rtp_port_is_free(ports: RtpPortAllocator) -> bool:
    """Bind each even port of the range: any socket still open on one would refuse it."""
    for port in range(ports.start + ports.start % 2, ports.end + 1, 2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


BAD_OFFERS = {
    # The reported leak: payload type 300 (RTP's is 7 bits) got 500 and kept its socket.
    "pt300": (OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 300")
              + "a=rtpmap:300 PCMU/8000\r\n", 400),
    "srtp": (OFFER.replace("RTP/AVP", "RTP/SAVP")
             + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
             488),
    "ipv6": (OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP6 ::1"), 488),
    "hostname": (OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 media.example.com"), 488),
    "no-codec": (OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 18"), 488),
}


async def test_failed_setups_leak_no_rtp_port_and_a_call_still_works(
        core: Core, caplog: pytest.LogCaptureFixture) -> None:
    """500+ refused INVITEs (each kind of bad offer, ACKed), then a normal call."""
    kinds = list(BAD_OFFERS.items())
    for index in range(520):
        kind, (body, code) = kinds[index % len(kinds)]
        invite = core.peer.request("INVITE", body=body)
        call_id = invite.split("Call-ID: ")[1].split("\r\n")[0]
        core.peer.send(invite)
        refused = await response_to(core.peer, call_id)
        assert refused.status == code, (kind, refused.status, refused.reason)
        core.peer.send(core.peer.ack_for(refused, invite))
    assert core.ports.in_use == frozenset() and core.manager.held_slots == 0
    assert every_rtp_port_is_free(core.ports)  # no socket left open behind the allocator
    assert not [r for r in caplog.records if r.exc_info]  # no traceback for bad input
    call_id, tag = await answer_call(core.peer)
    assert len(core.ports.in_use) == 1 and list(core.manager.calls) == [call_id]
    core.peer.send(core.peer.request("BYE", call_id=call_id, cseq=2, to_tag=tag))
    await response_to(core.peer, call_id, 200)
    await eventually(lambda: core.manager.held_slots == 0 and not core.ports.in_use)
    await eventually(lambda: not core.backend._transactions, timeout=30,
                     message="every transaction freed")


async def test_calls_beyond_the_asr_stream_limit_get_503_and_health_says_so(
        core: Core) -> None:
    status, body = await health(core)
    assert status == 200 and body["checks"] == {"capacity": "ok"}
    calls = [await answer_call(core.peer) for _ in range(ASR_STREAMS)]
    status, body = await health(core)
    assert status == 503 and "speech recognition at capacity" in body["checks"]["capacity"]
    invite = core.peer.request("INVITE", body=OFFER)
    call_id = invite.split("Call-ID: ")[1].split("\r\n")[0]
    core.peer.send(invite)
    refused = await response_to(core.peer, call_id)
    assert refused.status == 503 and refused.get("Retry-After") == "5"
    core.peer.send(core.peer.ack_for(refused, invite))
    assert len(core.manager.calls) == ASR_STREAMS and len(core.ports.in_use) == ASR_STREAMS
    # One call ends: a slot is free again, and health says so.
    ended, tag = calls[0]
    core.peer.send(core.peer.request("BYE", call_id=ended, cseq=2, to_tag=tag))
    await response_to(core.peer, ended, 200)
    await eventually(lambda: core.manager.held_slots == ASR_STREAMS - 1)
    assert (await health(core))[0] == 200
    await answer_call(core.peer)


async def test_bot_hangup_on_a_vanished_caller_releases_everything_at_once(
        core: Core) -> None:
    call_id, _tag = await answer_call(core.peer)
    assert core.manager.held_slots == 1
    await core.manager.hangup(call_id)  # the caller never answers the BYE
    # Released while the BYE is still being retransmitted (its transaction runs on).
    assert core.backend._client_transactions, "the BYE transaction should still be running"
    assert core.manager.held_slots == 0 and not core.ports.in_use
    assert call_id not in core.manager.calls
    bye = await core.peer.expect(method="BYE")
    assert bye.call_id == call_id
    assert (await health(core))[0] == 200


async def test_a_crash_after_the_rtp_session_opened_closes_it(
        core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported leak's shape: `configure` raised after the session was open and the
    socket stayed. Fault injection: configure fails once; the INVITE gets 500, the port
    comes back, and the next call works."""
    from opensips_ai_core.media.session import RtpSession

    original = RtpSession.configure

    def fail_once(self: RtpSession, *args: object, **kwargs: object) -> None:
        monkeypatch.setattr(RtpSession, "configure", original)
        raise ValueError("payload_type must be 0..127, got 300")

    monkeypatch.setattr(RtpSession, "configure", fail_once)
    invite = core.peer.request("INVITE", body=OFFER)
    call_id = invite.split("Call-ID: ")[1].split("\r\n")[0]
    core.peer.send(invite)
    failed = await response_to(core.peer, call_id)
    assert failed.status == 500
    core.peer.send(core.peer.ack_for(failed, invite))
    assert not core.ports.in_use and core.manager.held_slots == 0
    assert every_rtp_port_is_free(core.ports)
    await answer_call(core.peer)
    assert len(core.ports.in_use) == 1
