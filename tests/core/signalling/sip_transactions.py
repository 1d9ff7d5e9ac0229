"""What OpenSIPS' core and tm do on its SIP socket, as checks shared by the double
(test_opensips_sip_transactions.py, `OpenSipsPeer(sip=True)`) and a real OpenSIPS 3.6.8
(test_opensips_real.py): the top Via's `received`/`rport` in replies, CANCEL (200
canceling for a pending INVITE, 481 for none), a retransmitted INVITE absorbed (the last
reply again), final replies retransmitted until the ACK. docs/opensips.md, "The double's
SIP side against OpenSIPS 3.6.8", has what the real one sent.

Real UDP on 127.0.0.1: a raw SIP caller, and a stand-in core over MI that opens the
gate, subscribes to E_UA_SESSION and answers with `ua_session_reply`. Outcomes only: each
wait is for a message, bounded (30 s).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opensips_ai_core.signalling.opensips import MiClient
from opensips_ai_core.signalling.sip.message import SipMessage, parse_message
from tests.core.signalling.sip_peer import OFFER, RawSipPeer
from voice_testkit.procs import LOOPBACK

WAIT_S = 30.0


class _Events(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.events.append(json.loads(data)["params"])
        self.changed.set()


class Core:
    """The core's part over MI: the gate open, E_UA_SESSION to our socket, replies."""

    def __init__(self, mi_port: int) -> None:
        self.mi = MiClient(LOOPBACK, mi_port, timeout=2.0)
        self.listener = _Events()
        self.transport: asyncio.DatagramTransport | None = None

    async def open(self) -> Core:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self.listener, local_addr=(LOOPBACK, 0))
        port = self.transport.get_extra_info("sockname")[1]
        await self.mi.call("shv_set", {"name": "ai_lease", "type": "int", "value": 100000})
        await self.mi.call("shv_set", {"name": "ai_core", "type": "int", "value": 1})
        await self.mi.call("event_subscribe", ["E_UA_SESSION", f"udp:{LOOPBACK}:{port}", 3600])
        return self

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        await self.mi.close()

    async def event(self, event_type: str, call_id: str) -> dict[str, Any]:
        async def first() -> dict[str, Any]:
            while True:
                for event in self.listener.events:
                    if event["event_type"] == event_type and \
                            f"Call-ID: {call_id}\r\n" in event["headers"]:
                        return event
                self.listener.changed.clear()
                await self.listener.changed.wait()

        return await asyncio.wait_for(first(), WAIT_S)

    async def reply(self, key: str, code: int, reason: str, body: str | None = None) -> None:
        params: dict[str, Any] = {"key": key, "method": "INVITE", "code": code,
                                  "reason": reason}
        if body is not None:
            params["body"] = body
        assert await self.mi.call("ua_session_reply", params) == "OK"


@asynccontextmanager
async def core_and_caller(sip_port: int, mi_port: int
                          ) -> AsyncIterator[tuple[Core, RawSipPeer]]:
    core = await Core(mi_port).open()
    caller = await RawSipPeer((LOOPBACK, sip_port)).open()
    try:
        yield core, caller
    finally:
        caller.close()
        await core.close()


def branch_of(request: str) -> str:
    via = parse_message(request.encode()).get("Via") or ""
    return via.split("branch=")[1].split(";")[0]


def wire(message: SipMessage) -> tuple[Any, ...]:
    """A message as it was sent: status line, headers in order, body."""
    return message.status, message.reason, message.headers, message.body


def to_tag(message: SipMessage) -> str:
    to = message.get("To") or ""
    return to.split(";tag=")[1] if ";tag=" in to else ""


async def via_stamps(sip_port: int) -> None:
    """OPTIONS (the script's answer, 200 or 503: either shows the core's Via): with
    `;rport`, `received` after the sent-by and `rport` filled in, the reply to the
    source port; without it, the Via as it came when its host is the source IP, and
    `received` added when it is not (the reply to the source IP at the Via's port)."""
    caller = await RawSipPeer((LOOPBACK, sip_port)).open()
    elsewhere = await RawSipPeer((LOOPBACK, sip_port)).open()
    try:
        port = caller.port
        caller.send(caller.request("OPTIONS", branch="z9hG4bK-v1"))
        assert (await caller.recv(WAIT_S)).get("Via") == (
            f"SIP/2.0/UDP {LOOPBACK}:{port};received={LOOPBACK};branch=z9hG4bK-v1;rport={port}")
        caller.send(caller.request("OPTIONS", branch="z9hG4bK-v2", rport=False))
        assert (await caller.recv(WAIT_S)).get("Via") == (
            f"SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-v2")
        other_host = caller.request("OPTIONS", branch="z9hG4bK-v3", rport=False).replace(
            f"Via: SIP/2.0/UDP {LOOPBACK}:", "Via: SIP/2.0/UDP 127.0.0.2:")
        caller.send(other_host)
        assert (await caller.recv(WAIT_S)).get("Via") == (
            f"SIP/2.0/UDP 127.0.0.2:{port};received={LOOPBACK};branch=z9hG4bK-v3")
        # rport wins over the Via's port: the reply comes back here, rport this port.
        caller.send(caller.request("OPTIONS", branch="z9hG4bK-v4", via_port=elsewhere.port))
        assert (await caller.recv(WAIT_S)).get("Via") == (
            f"SIP/2.0/UDP {LOOPBACK}:{elsewhere.port};received={LOOPBACK};"
            f"branch=z9hG4bK-v4;rport={port}")
        # Without rport the Via's port wins: the reply goes there.
        caller.send(caller.request("OPTIONS", branch="z9hG4bK-v5", rport=False,
                                   via_port=elsewhere.port))
        assert (await elsewhere.recv(WAIT_S)).get("Via") == (
            f"SIP/2.0/UDP {LOOPBACK}:{elsewhere.port};branch=z9hG4bK-v5")
    finally:
        caller.close()
        elsewhere.close()


async def cancel_of_nothing(sip_port: int) -> None:
    """With the gate shut: a CANCEL for no transaction, and the CANCEL of an INVITE the
    script refused statelessly, both get the script's 481; the latter with the To-tag
    of that 503 (sl's tag is the request's)."""
    caller = await RawSipPeer((LOOPBACK, sip_port)).open()
    try:
        caller.send(caller.request("CANCEL", call_id="nothing@127.0.0.1"))
        unknown = await caller.recv(WAIT_S)
        assert (unknown.status, unknown.reason, unknown.cseq) == (
            481, "Call/Transaction Does Not Exist", (1, "CANCEL"))
        assert to_tag(unknown)
        invite = caller.request("INVITE", body=OFFER)
        caller.send(invite)
        refused = await caller.recv(WAIT_S)
        assert refused.status == 503
        call_id = parse_message(invite.encode()).call_id
        caller.send(caller.request("CANCEL", call_id=call_id, branch=branch_of(invite)))
        late = await caller.recv(WAIT_S)
        assert (late.status, late.cseq) == (481, (1, "CANCEL"))
        assert to_tag(late) == to_tag(refused)
        caller.send(caller.ack_for(refused, invite))
    finally:
        caller.close()


async def cancel_of_a_pending_invite(sip_port: int, mi_port: int) -> None:
    """A CANCEL while the core holds the INVITE: `200 canceling` with tm's To-tag,
    TERMINATED/CANCEL to the core, no 487 from OpenSIPS; the core's 487 (To-tag: the
    key) goes to the caller, and a retransmitted CANCEL gets `200 canceling` again."""
    async with core_and_caller(sip_port, mi_port) as (core, caller):
        invite = caller.request("INVITE", body=OFFER)
        call_id = parse_message(invite.encode()).call_id
        caller.send(invite)
        trying = await caller.recv(WAIT_S)
        assert (trying.status, trying.reason, to_tag(trying)) == (100, "Giving it a try", "")
        assert trying.get("Via") == (f"SIP/2.0/UDP {LOOPBACK}:{caller.port};received="
                                     f"{LOOPBACK};branch={branch_of(invite)};rport={caller.port}")
        key = (await core.event("NEW", call_id))["key"]
        cancel = caller.request("CANCEL", call_id=call_id, branch=branch_of(invite))
        caller.send(cancel)
        canceling = await caller.recv(WAIT_S)
        assert (canceling.status, canceling.reason, canceling.cseq) == (
            200, "canceling", (1, "CANCEL"))
        assert to_tag(canceling) and to_tag(canceling) != key
        terminated = await core.event("TERMINATED", call_id)
        assert (terminated["key"], terminated["method"]) == (key, "CANCEL")
        await core.reply(key, 487, "Request Terminated")
        ended = await caller.recv(WAIT_S)  # the core's: OpenSIPS sent none of its own
        assert (ended.status, ended.reason, ended.cseq) == (
            487, "Request Terminated", (1, "INVITE"))
        assert to_tag(ended) == key and ended.get("Via") == trying.get("Via")
        caller.send(cancel)
        again = await caller.expect(200, timeout=WAIT_S)  # past any 487 retransmission
        assert (again.reason, to_tag(again)) == ("canceling", to_tag(canceling))
        caller.send(caller.ack_for(ended, invite))


async def retransmissions(sip_port: int, mi_port: int) -> None:
    """tm on UDP: a retransmitted INVITE gets the last reply again (a 180 here, not a
    second 100: not processed twice); a final reply to an INVITE, non-2xx or 2xx, comes
    again while it is not ACKed. Both calls ACKed at the end."""
    async with core_and_caller(sip_port, mi_port) as (core, caller):
        invite = caller.request("INVITE", body=OFFER)
        call_id = parse_message(invite.encode()).call_id
        caller.send(invite)
        assert (await caller.recv(WAIT_S)).status == 100
        key = (await core.event("NEW", call_id))["key"]
        await core.reply(key, 180, "Ringing")
        ringing = await caller.recv(WAIT_S)
        assert (ringing.status, to_tag(ringing)) == (180, key)
        caller.send(invite)  # a provisional is never retransmitted: only tm resends it
        resent = await caller.recv(WAIT_S)
        assert (resent.status, to_tag(resent)) == (180, key)
        await core.reply(key, 486, "Busy Here")
        busy = await caller.recv(WAIT_S)
        assert (busy.status, to_tag(busy), busy.get("Contact")) == (
            486, key, f"<sip:{LOOPBACK}:{sip_port}>")
        # Not ACKed: the same 486 again (timer G); a retransmitted INVITE gets it too.
        assert wire(await caller.recv(WAIT_S)) == wire(busy)
        caller.send(invite)
        assert wire(await caller.expect(486, timeout=WAIT_S)) == wire(busy)
        caller.send(caller.ack_for(busy, invite))

        answered = caller.request("INVITE", body=OFFER)
        call_id = parse_message(answered.encode()).call_id
        caller.send(answered)
        assert (await caller.expect(100, timeout=WAIT_S)).call_id == call_id
        key = (await core.event("NEW", call_id))["key"]
        await core.reply(key, 200, "OK", body=OFFER)
        ok = await caller.expect(200, timeout=WAIT_S)
        assert (ok.call_id, to_tag(ok)) == (call_id, key)
        again = await caller.expect(200, timeout=WAIT_S)  # not ACKed: the 200 again
        assert wire(again) == wire(ok)
        caller.send(caller.ack_for(ok, answered))
        caller.send(caller.request("BYE", call_id=call_id, cseq=2, to_tag=key))
        bye = await caller.expect(200, timeout=WAIT_S)
        while bye.cseq != (2, "BYE"):  # a copy of the 200 that crossed the ACK
            bye = await caller.expect(200, timeout=WAIT_S)


async def cancel_crossing_the_answer(sip_port: int, mi_port: int) -> None:
    """The CANCEL crosses the engine's 200 (sent on receipt of it, before the ACK):
    `200 canceling`, TERMINATED/CANCEL to the core, which deletes the session (no BYE
    from OpenSIPS); the caller ACKs its 200 and hangs up: its BYE is answered 200."""
    async with core_and_caller(sip_port, mi_port) as (core, caller):
        invite = caller.request("INVITE", body=OFFER)
        call_id = parse_message(invite.encode()).call_id
        caller.send(invite)
        key = (await core.event("NEW", call_id))["key"]
        await core.reply(key, 200, "OK", body=OFFER)
        ok = await caller.expect(200, timeout=WAIT_S)
        caller.send(caller.request("CANCEL", call_id=call_id, branch=branch_of(invite)))
        canceling = await caller.expect(200, timeout=WAIT_S)
        while canceling.cseq != (1, "CANCEL"):  # a copy of the INVITE's 200 first
            canceling = await caller.expect(200, timeout=WAIT_S)
        assert canceling.reason == "canceling" and to_tag(canceling) != key
        terminated = await core.event("TERMINATED", call_id)
        assert (terminated["key"], terminated["method"]) == (key, "CANCEL")
        # Deleted without a BYE (state 7), as the core does it.
        assert await core.mi.call("ua_session_terminate", {"key": key}) == "OK"
        caller.send(caller.ack_for(ok, invite))
        caller.send(caller.request("BYE", call_id=call_id, cseq=2, to_tag=key))
        bye = await caller.recv(WAIT_S)
        while bye.cseq != (2, "BYE"):  # a copy of the INVITE's 200 that crossed the ACK
            bye = await caller.recv(WAIT_S)
        assert (bye.status, bye.reason, to_tag(bye)) == (200, "OK", key)


async def bye_of_no_session(sip_port: int) -> None:
    """A BYE whose To-tag is a B2B key naming no session: b2b_entities' `200 OK`; with
    another To-tag, or another method with that key, the script's 481."""
    caller = await RawSipPeer((LOOPBACK, sip_port)).open()
    try:
        for method, tag, status in (("BYE", "B2B.1.2.3.4", 200), ("BYE", "abc", 481),
                                    ("INFO", "B2B.1.2.3.4", 481)):
            caller.send(caller.request(method, cseq=2, to_tag=tag))
            answer = await caller.recv(WAIT_S)
            assert (answer.status, answer.cseq, to_tag(answer)) == (status, (2, method), tag)
    finally:
        caller.close()


async def after_the_session_is_deleted(sip_port: int, mi_port: int) -> None:
    """The core answered 486 and deleted the session, the caller ACKed: tm still holds
    the INVITE (a retransmission gets the 486 again), and a CANCEL gets no answer (the
    next reply that comes is the OPTIONS' sent after it)."""
    async with core_and_caller(sip_port, mi_port) as (core, caller):
        invite = caller.request("INVITE", body=OFFER)
        call_id = parse_message(invite.encode()).call_id
        caller.send(invite)
        key = (await core.event("NEW", call_id))["key"]
        await core.reply(key, 486, "Busy Here")
        busy = await caller.expect(486, timeout=WAIT_S)
        assert await core.mi.call("ua_session_terminate", {"key": key}) == "OK"
        caller.send(caller.ack_for(busy, invite))
        caller.send(invite)
        assert wire(await caller.expect(486, timeout=WAIT_S)) == wire(busy)
        caller.send(caller.request("CANCEL", call_id=call_id, branch=branch_of(invite)))
        caller.send(caller.request("OPTIONS", call_id=f"after-{call_id}"))
        reply = await caller.recv(WAIT_S)
        while reply.status == 486:  # a copy that crossed the ACK
            reply = await caller.recv(WAIT_S)
        assert reply.cseq == (1, "OPTIONS"), (reply.status, reply.reason, reply.cseq)
