"""OpenSipsBackend against a REAL OpenSIPS 3.6 running core/opensips/opensips.cfg.

Optional: runs only where an `opensips` binary (3.6, with the modules the script loads,
in OPENSIPS_MPATH or beside the binary) is on PATH; CI has none, so there it is skipped
and the double (dev/testkit/src/voice_testkit/opensips_peer.py) stands in. These tests are how the facts
in docs/opensips.md were checked: OpenSIPS on free loopback ports with the project's
script and preprocessor, a raw UDP SIP peer as the caller or callee, the backend with a
recording call handler.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opensips_ai_core.signalling.base import OutboundRequest
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.headers import header_uri
from opensips_ai_core.signalling.opensips import MiClient, MiError, OpenSipsBackend
from opensips_ai_core.signalling.opensips.events import UaSessionEvent
from opensips_ai_core.signalling.sip.message import SipMessage, parse_message
from tests.core.signalling import sip_transactions
from tests.core.signalling.conftest import RecordingHandler, eventually
from tests.core.signalling.gate_sipp import sipp_reply
from tests.core.signalling.sip_peer import OFFER, RawSipPeer
from voice_testkit.procs import LOOPBACK, ROOT, Proc, base_env, free_port
from voice_testkit.stack import core

pytestmark = pytest.mark.skipif(shutil.which("opensips") is None,
                                reason="no `opensips` binary on PATH (OpenSIPS 3.6 is not "
                                       "installable in CI; the double stands in)")

ANSWER_SDP = ("v=0\r\no=callee 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
              "m=audio 7000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")


class RealOpenSips:
    """`opensips -F` with the project's script on free ports, in its own process group."""

    def __init__(self, logdir: Path, **env: str) -> None:
        self.logdir = logdir
        self.env = env
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.mi_port = free_port(socket.SOCK_DGRAM)
        self.runs = 0
        self.proc: Proc | None = None

    async def start(self) -> None:
        self.runs += 1
        env = base_env(OPENSIPS_SIP_PORT=str(self.sip_port), OPENSIPS_MI_PORT=str(self.mi_port),
                       **self.env)
        self.proc = Proc(["opensips", "-F", "-f", str(ROOT / "core/opensips/opensips.cfg"),
                          "-p", str(ROOT / "core/opensips/opensips-cfg-env")],
                         env, self.logdir / f"opensips-{self.runs}.log")
        client = MiClient(LOOPBACK, self.mi_port, timeout=0.5)
        try:
            for _ in range(40):
                if self.proc.popen.poll() is not None:
                    raise RuntimeError(f"opensips exited:\n{self.proc.output()[-3000:]}")
                try:
                    await client.call("uptime")
                    return
                except MiError:
                    await asyncio.sleep(0.25)
            raise RuntimeError(f"opensips MI silent:\n{self.proc.output()[-3000:]}")
        finally:
            await client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    async def restart(self) -> None:
        self.stop()
        await self.start()


@pytest.fixture
async def opensips(logdir: Path) -> AsyncIterator[RealOpenSips]:
    server = RealOpenSips(logdir)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


async def started(opensips: RealOpenSips, handler: RecordingHandler,
                  event_port: int = 0) -> OpenSipsBackend:
    engine = OpenSipsBackend(LOOPBACK, opensips.mi_port, LOOPBACK, event_port, mi_timeout=1.0,
                             outbound_socket=f"udp:{LOOPBACK}:{opensips.sip_port}")
    await engine.start(handler)
    await asyncio.wait_for(engine.subscribed.wait(), 10)
    return engine


@pytest.fixture
async def backend(opensips: RealOpenSips, handler: RecordingHandler
                  ) -> AsyncIterator[OpenSipsBackend]:
    engine = await started(opensips, handler)
    try:
        yield engine
    finally:
        await engine.stop()


@pytest.fixture
async def phone(opensips: RealOpenSips) -> AsyncIterator[RawSipPeer]:
    peer = await RawSipPeer((LOOPBACK, opensips.sip_port)).open()
    try:
        yield peer
    finally:
        peer.close()


def reply(request: SipMessage, status: int, reason: str, *, to_tag: str | None = None,
          body: str = "", contact: str = "") -> str:
    """A response to `request` as a UA writes it (Via/From/To/Call-ID/CSeq copied)."""
    to = request.get("To") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines = [f"SIP/2.0 {status} {reason}", *(f"Via: {v}" for v in request.get_all("Via")),
             f"From: {request.get('From')}", f"To: {to}", f"Call-ID: {request.call_id}",
             f"CSeq: {request.get('CSeq')}"]
    if contact:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return "\r\n".join(lines) + "\r\n\r\n" + body


async def answered(phone: RawSipPeer, opensips: RealOpenSips) -> tuple[str, SipMessage]:
    """Call in, take the 200 OK, ACK it; the B2B key (the To-tag) and the 200."""
    invite = phone.request("INVITE", body=OFFER)
    phone.send(invite)
    ok = await phone.expect(200)
    phone.send(phone.ack_for(ok, invite))
    return (ok.get("To") or "").split("tag=")[1], ok


async def listed(opensips: RealOpenSips) -> list[dict]:
    client = MiClient(LOOPBACK, opensips.mi_port, timeout=1.0)
    try:
        return await client.call("ua_session_list", {})
    finally:
        await client.close()


async def none_listed(opensips: RealOpenSips, timeout: float = 5.0) -> None:
    """Until OpenSIPS lists no session: after a BYE's 200 it deletes the session on its
    own dialog processing, a moment after the core's end_call saw the BYE."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (sessions := await listed(opensips)) != []:
        assert loop.time() < deadline, f"OpenSIPS still lists {sessions}"
        await asyncio.sleep(0.05)


async def test_call_answered_by_the_200_opensips_builds_then_caller_bye(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer,
        handler: RecordingHandler) -> None:
    key, ok = await answered(phone, opensips)
    assert key.startswith("B2B.") and key in handler.calls
    assert ok.get("Content-Type") == "application/sdp"
    assert ok.get("Contact") == f"<sip:127.0.0.1:{opensips.sip_port}>"
    assert b"m=audio 35000 RTP/AVP 8 101" in ok.body  # the handler's answer, PCMA first
    phone.send(phone.request("BYE", call_id=ok.call_id, cseq=2, to_tag=key))
    assert (await phone.expect(200)).cseq == (2, "BYE")
    await eventually(lambda: handler.ended.get(key) == "bye", 5, "end_call")
    assert backend.active_calls() == []
    await none_listed(opensips)


async def test_the_core_hangs_up_with_a_bye(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer) -> None:
    key, ok = await answered(phone, opensips)
    await eventually(lambda: backend.active_calls() == [key], 5, "answered")
    await backend.hangup(key)
    bye = await phone.expect(method="BYE")
    assert bye.call_id == ok.call_id and f"tag={key}" in (bye.get("From") or "")
    phone.send(reply(bye, 200, "OK"))
    assert await listed(opensips) == []


async def test_cancel_before_the_answer_gets_our_487(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer,
        handler: RecordingHandler) -> None:
    handler.answer_delay = 30
    invite = phone.request("INVITE", body=OFFER)
    phone.send(invite)
    await phone.expect(100)
    await eventually(lambda: handler.calls, 5, "NEW")
    via = parse_message(invite.encode()).get("Via") or ""
    branch = via.split("branch=")[1].split(";")[0]
    call_id = parse_message(invite.encode()).call_id
    phone.send(phone.request("CANCEL", call_id=call_id, branch=branch))
    assert (await phone.expect(200)).reason == "canceling"   # OpenSIPS' own
    terminated = await phone.expect(487)                       # the core's
    phone.send(phone.ack_for(terminated, invite))
    await eventually(lambda: handler.ended, 5, "end_call")
    assert list(handler.ended.values()) == ["cancelled"]
    assert await listed(opensips) == []  # deleted at once, not left for ua_default_timeout


async def test_a_cancel_after_the_200_releases_the_call(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer,
        handler: RecordingHandler) -> None:
    """The CANCEL crosses OpenSIPS' 200 OK (the caller sends it before the 200 reached
    it). OpenSIPS answers `200 canceling` and ends the session although it had sent the
    200, so no BYE comes from it; the core releases the call, and the caller's own BYE
    is answered 200."""
    invite = phone.request("INVITE", body=OFFER)
    phone.send(invite)
    ok = await phone.expect(200)
    key = (ok.get("To") or "").split("tag=")[1]
    via = parse_message(invite.encode()).get("Via") or ""
    phone.send(phone.request("CANCEL", call_id=ok.call_id,
                             branch=via.split("branch=")[1].split(";")[0]))
    assert (await phone.expect(200)).reason == "canceling"
    await eventually(lambda: handler.ended.get(key) == "cancelled", 5, "end_call")
    phone.send(phone.ack_for(ok, invite))
    phone.send(phone.request("BYE", call_id=ok.call_id, cseq=2, to_tag=key))
    later = await phone.drain(1.0)
    assert [(m.status, m.cseq) for m in later] == [(200, (2, "BYE"))]  # and no BYE to us
    assert backend.active_calls() == []
    await none_listed(opensips)


async def test_a_reinvite_to_hold_is_answered_through_opensips(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer,
        handler: RecordingHandler) -> None:
    key, ok = await answered(phone, opensips)
    hold = phone.request("INVITE", call_id=ok.call_id, cseq=2, to_tag=key,
                         body=OFFER.replace("a=sendrecv", "a=sendonly"))
    phone.send(hold)
    held = await phone.expect(200)
    while held.cseq != (2, "INVITE"):  # a late retransmission of the first 200 first
        held = await phone.expect(200)
    assert held.get("Content-Type") == "application/sdp"
    assert b"a=recvonly" in held.body
    phone.send(phone.ack_for(held, hold))
    assert handler.updates and handler.updates[-1][0] == key
    await backend.hangup(key)
    phone.send(reply(await phone.expect(method="BYE"), 200, "OK"))


async def test_a_refusal_carries_retry_after(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer,
        handler: RecordingHandler) -> None:
    handler.refuse = SignallingError(503, "Service Unavailable (draining)", retry_after=17)
    phone.send(phone.request("INVITE", body=OFFER))
    refused = await phone.expect(503)
    assert refused.reason == "Service Unavailable (draining)"
    assert refused.get("Retry-After") == "17"
    assert refused.get("Content-Type") is None and refused.body == b""


async def test_transfer_by_refer_and_its_notifies(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer) -> None:
    key, ok = await answered(phone, opensips)
    target = "sip:advisers@10.0.0.9"
    transfer = asyncio.create_task(backend.transfer(key, target, timeout_s=10))
    refer = await phone.expect(method="REFER")
    assert refer.get("Refer-To") == f"<{target}>"
    assert refer.get("Referred-By") == f"<sip:ai@127.0.0.1:{opensips.sip_port}>"
    assert refer.get("Content-Length") == "0"
    # OpenSIPS adds this to a request given a body, even the empty one the REFER needs.
    assert refer.get("Content-Type") == "application/sdp"
    phone.send(reply(refer, 202, "Accepted"))
    for cseq, (frag, state) in enumerate((("SIP/2.0 100 Trying", "active;expires=60"),
                                          ("SIP/2.0 200 OK", "terminated;reason=noresource")),
                                         start=2):
        body = frag + "\r\n"
        notify = phone.request("NOTIFY", call_id=ok.call_id, cseq=cseq, to_tag=key,
                               extra=f"Event: refer\r\nSubscription-State: {state}\r\n"
                                     "Content-Type: message/sipfrag;version=2.0")
        # request() writes an SDP Content-Type only with a body: add ours by hand.
        notify = notify.replace("Content-Length: 0\r\n\r\n",
                                f"Content-Length: {len(body)}\r\n\r\n{body}")
        phone.send(notify)
        assert (await phone.expect(200)).cseq == (cseq, "NOTIFY")
    result = await asyncio.wait_for(transfer, 10)
    assert result.ok and result.code == 200
    bye = await phone.expect(method="BYE")
    phone.send(reply(bye, 200, "OK"))
    assert backend.active_calls() == []


async def test_a_refused_refer_keeps_the_call(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer) -> None:
    key, _ = await answered(phone, opensips)
    events: list[tuple[str, int, str]] = []
    listen = backend.events.on_event

    def recording(event: UaSessionEvent) -> None:
        events.append((event.event_type, event.status, event.method))
        listen(event)

    backend.events.on_event = recording
    transfer = asyncio.create_task(backend.transfer(key, "sip:advisers@10.0.0.9", timeout_s=5))
    refer = await phone.expect(method="REFER")
    phone.send(reply(refer, 603, "Decline"))
    result = await asyncio.wait_for(transfer, 10)
    assert not result.ok and result.code == 603
    assert events == [("REJECTED", 603, "REFER")]
    assert backend.active_calls() == [key]
    await backend.hangup(key)
    phone.send(reply(await phone.expect(method="BYE"), 200, "OK"))


async def test_outbound_call_answered_then_hung_up(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer,
        handler: RecordingHandler) -> None:
    progress: list[int] = []
    dial = asyncio.create_task(backend.dial("out-1", OutboundRequest(
        to=f"sip:callee@127.0.0.1:{phone.port}", max_ring_s=10),
        lambda code, _reason: progress.append(code)))
    invite = await phone.expect(method="INVITE")
    assert invite.uri == f"sip:callee@127.0.0.1:{phone.port}"
    assert invite.get("Contact") == f"<sip:127.0.0.1:{opensips.sip_port}>"
    # The From is an identity: no port (RFC 3261 19.1.1); OpenSIPS sends it as given.
    assert header_uri(invite.get("From") or "") == "sip:ai@127.0.0.1"
    assert invite.call_id.startswith("B2B.")  # the UAC session's key is its Call-ID
    phone.send(reply(invite, 180, "Ringing", to_tag="callee1"))
    phone.send(reply(invite, 200, "OK", to_tag="callee1", body=ANSWER_SDP,
                     contact=f"<sip:callee@127.0.0.1:{phone.port}>"))
    assert await asyncio.wait_for(dial, 10) == 200
    assert (await phone.expect(method="ACK")).call_id == invite.call_id  # OpenSIPS' own
    # The 180 may be reported after the 200 (events from different OpenSIPS workers):
    # then it is dropped.
    assert progress in ([180, 200], [200]) and "out-1" in handler.completed
    (entry,) = await listed(opensips)
    assert (entry["callid"], entry["state"]) == (invite.call_id, 5)
    await backend.hangup("out-1")
    bye = await phone.expect(method="BYE")
    phone.send(reply(bye, 200, "OK"))


async def test_outbound_call_not_answered_is_cancelled(
        backend: OpenSipsBackend, phone: RawSipPeer) -> None:
    dial = asyncio.create_task(backend.dial("out-2", OutboundRequest(
        to=f"sip:callee@127.0.0.1:{phone.port}", max_ring_s=1)))
    invite = await phone.expect(method="INVITE")
    phone.send(reply(invite, 180, "Ringing", to_tag="callee2"))
    cancel = await phone.expect(method="CANCEL", timeout=5)
    phone.send(reply(cancel, 200, "OK"))
    phone.send(reply(invite, 487, "Request Terminated", to_tag="callee2"))
    with pytest.raises(SignallingError) as failed:
        await asyncio.wait_for(dial, 10)
    assert failed.value.code == 487
    ack = await phone.expect(method="ACK")  # b2b_entities ACKs the 487 itself
    assert ack.call_id == invite.call_id and ack.cseq[0] == invite.cseq[0]


async def test_opensips_restart_mid_call(
        backend: OpenSipsBackend, opensips: RealOpenSips, phone: RawSipPeer,
        handler: RecordingHandler) -> None:
    key, ok = await answered(phone, opensips)
    await opensips.restart()
    # Released by the reconciliation after the restart, or by the audit when it asked
    # the new run first.
    await eventually(lambda: handler.ended.get(key) in ("opensips restarted",
                                                        "opensips ended it"), 5, "released")
    await eventually(lambda: backend.ready, 5, "subscribed again")
    assert backend.restarts == 1
    # The caller hangs up: the new run answers the unknown dialog's BYE itself.
    phone.send(phone.request("BYE", call_id=ok.call_id, cseq=2, to_tag=key))
    assert (await phone.expect(200)).cseq == (2, "BYE")
    key2, _ = await answered(phone, opensips)  # and new calls are served
    assert backend.active_calls() == [key2]


async def test_a_restarted_core_ends_what_its_predecessor_left(
        opensips: RealOpenSips, phone: RawSipPeer) -> None:
    first = await started(opensips, RecordingHandler())
    port = first.events.port
    key, _ = await answered(phone, opensips)
    # The core dies: nothing unsubscribed, nothing ended.
    assert first._supervisor is not None
    first._supervisor.cancel()
    await first._tasks.cancel_all()
    await first.events.close()
    await first.mi.close()
    await asyncio.sleep(0.05)
    late = await RawSipPeer((LOOPBACK, opensips.sip_port)).open()
    second = None
    try:
        late_invite = late.request("INVITE", body=OFFER)
        late.send(late_invite)
        await late.expect(100)  # and nothing more while no core is there
        second = await started(opensips, RecordingHandler(), event_port=port)
        refused = await late.expect(503, timeout=10)
        late.send(late.ack_for(refused, late_invite))
        bye = await phone.expect(method="BYE", timeout=10)
        assert f"tag={key}" in (bye.get("From") or "")
        phone.send(reply(bye, 200, "OK"))
        await eventually(lambda: second.orphans.ended == 2, 5, "both orphans ended")
    finally:
        late.close()
        if second is not None:
            await second.stop()


async def test_a_session_ended_by_ua_default_timeout_is_released(
        logdir: Path, handler: RecordingHandler) -> None:
    """At ua_default_timeout OpenSIPS sends the caller a BYE and deletes the session
    without an event: the core's audit finds it gone and releases the call."""
    opensips = RealOpenSips(logdir, OPENSIPS_UA_TIMEOUT="2")
    await opensips.start()
    engine = None
    phone = await RawSipPeer((LOOPBACK, opensips.sip_port)).open()
    try:
        engine = OpenSipsBackend(LOOPBACK, opensips.mi_port, LOOPBACK, 0, mi_timeout=1.0,
                                 poll_interval=0.5, audit_interval=1.0)
        await engine.start(handler)
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        key, _ = await answered(phone, opensips)
        bye = await phone.expect(method="BYE", timeout=10)
        assert f"tag={key}" in (bye.get("From") or "")
        phone.send(reply(bye, 200, "OK"))
        await eventually(lambda: handler.ended.get(key) == "opensips ended it", 5,
                         "the call released")
        assert engine.active_calls() == []
    finally:
        phone.close()
        if engine is not None:
            await engine.stop()
        opensips.stop()


async def refused_by_the_script(phone: RawSipPeer, why: str = "no core") -> SipMessage:
    """Call in; OpenSIPS' own 503 (ACKed). Nothing else comes: no 100, no session."""
    invite = phone.request("INVITE", body=OFFER)
    phone.send(invite)
    refused = await phone.recv()
    assert (refused.status, refused.reason) == (503, f"Service Unavailable ({why})")
    phone.send(phone.ack_for(refused, invite))
    return refused


async def test_without_a_core_taking_calls_the_script_answers_503(
        opensips: RealOpenSips, phone: RawSipPeer, handler: RecordingHandler) -> None:
    """The gate: before any core, while the core drains and after it stopped, OpenSIPS
    answers a new caller 503 with Retry-After itself instead of 100 Trying and a
    session nobody takes; between, the core that opened the gate answers."""
    assert (await refused_by_the_script(phone)).get("Retry-After") == "5"  # no core yet
    assert await listed(opensips) == []
    engine = await started(opensips, handler)
    try:
        assert engine.gate.is_open  # opened before the subscription
        key, ok = await answered(phone, opensips)
        phone.send(phone.request("BYE", call_id=ok.call_id, cseq=2, to_tag=key))
        assert (await phone.expect(200)).cseq == (2, "BYE")
        engine.drain_refusal = lambda: SignallingError(503, "Service Unavailable (draining)",
                                                       retry_after=42)
        await eventually(lambda: engine.gate.is_open is False, 5, "the gate closed")
        assert (await refused_by_the_script(phone, "draining")).get("Retry-After") == "42"
    finally:
        await engine.stop()
    assert (await refused_by_the_script(phone)).get("Retry-After") == "5"  # stopped
    assert list(handler.calls) == [key]  # no NEW reached the core for the refused ones
    assert await listed(opensips) == []


async def test_a_drained_core_process_leaves_the_script_refusing(
        opensips: RealOpenSips, phone: RawSipPeer, logdir: Path) -> None:
    """The real core (`python -m opensips_ai_core`, its AI services nowhere: only the
    signalling matters) with one call up: POST /drain closes the gate, a new caller
    gets OpenSIPS' `503 (draining)`; the call ends, the core exits, and the next caller
    gets `503 (no core)` with Retry-After 5, not 100 Trying."""
    nowhere = f"{LOOPBACK}:{free_port()}"
    cm = core(logdir, nowhere, nowhere, nowhere, CORE_SIGNALLING="opensips",
              OPENSIPS_MI_PORT=str(opensips.mi_port), CORE_DRAIN_TIMEOUT_S="600",
              CORE_GRACE_PERIOD_S="2")
    running = await asyncio.to_thread(cm.__enter__)
    try:
        key, ok = await answered(phone, opensips)
        drain = urllib.request.Request(running.http + "/drain", method="POST")
        assert await asyncio.to_thread(
            lambda: urllib.request.urlopen(drain, timeout=5).status) == 202
        client = MiClient(LOOPBACK, opensips.mi_port, timeout=1.0)
        try:  # the gate closes at the core's next poll (every second)
            for _ in range(60):
                gate = await client.call("shv_get", {"name": "ai_core"})
                if gate["VAR"]["value"] == 2:
                    break
                await asyncio.sleep(0.25)
        finally:
            await client.close()
        refused = await refused_by_the_script(phone, "draining")
        assert 5 < int(refused.get("Retry-After") or 0) <= 600
        assert refused.get("Contact") is None  # stateless: no session answered it
        phone.send(phone.request("BYE", call_id=ok.call_id, cseq=2, to_tag=key))
        assert (await phone.expect(200)).cseq == (2, "BYE")
        assert await asyncio.to_thread(running.proc.wait, 60) == 0
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)
    assert (await refused_by_the_script(phone)).get("Retry-After") == "5"
    assert await listed(opensips) == []


async def shared_variable(opensips: RealOpenSips, name: str) -> int:
    client = MiClient(LOOPBACK, opensips.mi_port, timeout=1.0)
    try:
        return (await client.call("shv_get", {"name": name}))["VAR"]["value"]
    finally:
        await client.close()


async def wait_for_gate(opensips: RealOpenSips, value: int, what: str) -> None:
    """Until `$shv(ai_core)` is `value` (outcome-based; 30 s bound)."""
    for _ in range(120):
        if await shared_variable(opensips, "ai_core") == value:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_for_owner(opensips: RealOpenSips, core: OpenSipsBackend, what: str) -> None:
    """Until `$shv(ai_owner)` names this core (outcome-based; 30 s bound)."""
    for _ in range(120):
        if await shared_variable(opensips, "ai_owner") == core.gate.owner_id:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


NO_CORE = (503, "SIP/2.0 503 Service Unavailable (no core)", "5")


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")
async def test_a_killed_core_process_is_replaced_by_the_scripts_503(
        opensips: RealOpenSips, logdir: Path) -> None:
    """The real core (CORE_OPENSIPS_GATE_LEASE_S=3) killed with SIGKILL closes nothing;
    the script's lease timer closes the gate, and SIPp's INVITE and OPTIONS get `503
    (no core)` with Retry-After 5; a new core opens it again. While a core takes calls
    an OPTIONS probe gets 200."""
    assert await sipp_reply("gate_options", opensips.sip_port, logdir) == NO_CORE
    nowhere = f"{LOOPBACK}:{free_port()}"
    settings = dict(CORE_SIGNALLING="opensips", OPENSIPS_MI_PORT=str(opensips.mi_port),
                    CORE_OPENSIPS_GATE_LEASE_S="3")
    first = core(logdir, nowhere, nowhere, nowhere, **settings)
    running = await asyncio.to_thread(first.__enter__)
    try:
        await wait_for_gate(opensips, 1, "the gate open")
        assert (await sipp_reply("gate_options", opensips.sip_port, logdir))[:2] == (
            200, "SIP/2.0 200 OK")
        assert (await sipp_reply("gate_invite", opensips.sip_port, logdir))[0] == 200
        running.proc.signal(signal.SIGKILL)
        assert await asyncio.to_thread(running.proc.wait, 30) == -signal.SIGKILL
        await wait_for_gate(opensips, 0, "the lease to run out")
    finally:
        await asyncio.to_thread(first.__exit__, None, None, None)
    assert await sipp_reply("gate_invite", opensips.sip_port, logdir) == NO_CORE
    assert await sipp_reply("gate_options", opensips.sip_port, logdir) == NO_CORE
    assert opensips.proc is not None
    assert "no core renewed the gate's lease" in opensips.proc.output()  # the script's log
    second = core(logdir, nowhere, nowhere, nowhere, **settings)
    await asyncio.to_thread(second.__enter__)
    try:
        await wait_for_gate(opensips, 1, "the gate open again")
        assert (await sipp_reply("gate_options", opensips.sip_port, logdir))[0] == 200
        assert (await sipp_reply("gate_invite", opensips.sip_port, logdir))[0] == 200
    finally:
        await asyncio.to_thread(second.__exit__, None, None, None)
    assert await listed(opensips) == []


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")
async def test_a_stalled_core_process_is_not_taken_for_a_restart(
        opensips: RealOpenSips, logdir: Path) -> None:
    """The real core (CORE_OPENSIPS_GATE_LEASE_S=3) stopped with SIGSTOP: the script's
    lease timer closes the gate (SIPp's INVITE gets `503 (no core)`). Resumed with
    SIGCONT, the core logs that the gate lapsed because it stalled, counts no OpenSIPS
    restart, opens the gate again and answers the next caller."""
    nowhere = f"{LOOPBACK}:{free_port()}"
    settings = dict(CORE_SIGNALLING="opensips", OPENSIPS_MI_PORT=str(opensips.mi_port),
                    CORE_OPENSIPS_GATE_LEASE_S="3")
    stalled = core(logdir, nowhere, nowhere, nowhere, **settings)
    running = await asyncio.to_thread(stalled.__enter__)
    try:
        await wait_for_gate(opensips, 1, "the gate open")
        running.proc.signal(signal.SIGSTOP)
        try:
            await wait_for_gate(opensips, 0, "the lease to run out")
            assert await sipp_reply("gate_invite", opensips.sip_port, logdir) == NO_CORE
        finally:
            running.proc.signal(signal.SIGCONT)
        await wait_for_gate(opensips, 1, "the gate open again")
        await eventually(lambda: "the gate lapsed: this core stalled" in running.proc.output(),
                         30, "the lapse logged")
        output = running.proc.output()
        assert "OpenSIPS restarted" not in output, output[-3000:]
        metrics = await asyncio.to_thread(running.metrics)
        assert "voice_opensips_restarts_total 0.0" in metrics
        assert "voice_opensips_gate_lapses_total 1.0" in metrics
        assert (await sipp_reply("gate_invite", opensips.sip_port, logdir))[0] == 200
    finally:
        await asyncio.to_thread(stalled.__exit__, None, None, None)
    assert opensips.proc is not None
    assert "no core renewed the gate's lease" in opensips.proc.output()  # the script's log


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")
async def test_a_draining_core_that_dies_lapses_to_no_core(
        opensips: RealOpenSips, handler: RecordingHandler, logdir: Path) -> None:
    """Draining, the gate answers OPTIONS `503 (draining)` with the drain's Retry-After
    and the core keeps renewing its lease; once it dies the lease runs out and OpenSIPS
    answers `(no core)`, Retry-After 5."""
    engine = OpenSipsBackend(LOOPBACK, opensips.mi_port, LOOPBACK, 0, mi_timeout=1.0,
                             gate_lease=3)
    await engine.start(handler)
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        engine.drain_refusal = lambda: SignallingError(503, "Service Unavailable (draining)",
                                                       retry_after=42)
        await wait_for_gate(opensips, 2, "the gate draining")
        renewals = engine.gate.renewals
        await eventually(lambda: engine.gate.renewals >= renewals + 5, 30, "renewals")
        assert await shared_variable(opensips, "ai_core") == 2  # outlived its 3 s lease
        assert await sipp_reply("gate_options", opensips.sip_port, logdir) == (
            503, "SIP/2.0 503 Service Unavailable (draining)", "42")
        assert engine._supervisor is not None
        engine._supervisor.cancel()  # the core dies: nothing more written
        await wait_for_gate(opensips, 0, "the lease to run out")
        assert await sipp_reply("gate_invite", opensips.sip_port, logdir) == NO_CORE
    finally:
        await engine.stop()
    assert list(handler.calls) == []


async def test_a_second_core_stopping_leaves_the_first_one_serving(
        opensips: RealOpenSips, phone: RawSipPeer, handler: RecordingHandler) -> None:
    """Two cores on one OpenSIPS: the one that opened the gate last stops and closes it;
    the other finds it closed by another core (`ai_owner`), opens it again without
    taking that for a restart, and answers the next caller."""
    stays = await started(opensips, handler)
    try:
        leaves = await started(opensips, RecordingHandler())
        try:
            await wait_for_owner(opensips, leaves, "the gate opened by the second core")
        finally:
            await leaves.stop()
        await wait_for_owner(opensips, stays, "the gate opened again by the first core")
        await wait_for_gate(opensips, 1, "the gate open again")
        assert stays.restarts == 0 and stays.ready
        key, ok = await answered(phone, opensips)
        assert key in handler.calls
        phone.send(phone.request("BYE", call_id=ok.call_id, cseq=2, to_tag=key))
        assert (await phone.expect(200)).cseq == (2, "BYE")
    finally:
        await stays.stop()


# The SIP socket's core and tm behaviour, the same checks as the double's
# (sip_transactions.py, test_opensips_sip_transactions.py).

async def test_sip_replies_carry_the_via_as_the_core_stamps_it(opensips: RealOpenSips) -> None:
    await sip_transactions.via_stamps(opensips.sip_port)


async def test_sip_a_cancel_of_no_transaction_gets_481(opensips: RealOpenSips) -> None:
    await sip_transactions.cancel_of_nothing(opensips.sip_port)


async def test_sip_a_cancel_of_a_pending_invite_gets_200_and_the_cores_487(
        opensips: RealOpenSips) -> None:
    await sip_transactions.cancel_of_a_pending_invite(opensips.sip_port, opensips.mi_port)
    (entry,) = await listed(opensips)
    assert entry["state"] == 7  # terminated, listed until the core deletes it


async def test_sip_retransmitted_invites_absorbed_and_final_replies_retransmitted(
        opensips: RealOpenSips) -> None:
    await sip_transactions.retransmissions(opensips.sip_port, opensips.mi_port)
    # One session per call (the retransmitted INVITEs were not processed again): the
    # rejected one, still listed; the answered one ended by its BYE.
    assert [entry["state"] for entry in await listed(opensips)] == [7]


async def test_sip_a_cancel_crossing_the_answer_then_the_callers_bye(
        opensips: RealOpenSips) -> None:
    await sip_transactions.cancel_crossing_the_answer(opensips.sip_port, opensips.mi_port)


async def test_sip_a_bye_of_no_session(opensips: RealOpenSips) -> None:
    await sip_transactions.bye_of_no_session(opensips.sip_port)


async def test_sip_after_the_session_is_deleted(opensips: RealOpenSips) -> None:
    await sip_transactions.after_the_session_is_deleted(opensips.sip_port, opensips.mi_port)
