"""Blind transfer and outbound calls through OpenSIPS 3.6 b2b_entities (docs/opensips.md).

Transfer: MI `ua_session_update` with method REFER sends the REFER inside the
caller's UA session. Its reply comes back as an E_UA_SESSION event (ANSWERED for a
2xx, REJECTED for >= 300, method REFER); the caller's NOTIFYs come as UPDATED events
(method NOTIFY, the sipfrag in `body`), each answered with `ua_session_reply` 200.
On a 2xx sipfrag the call is ended with `ua_session_terminate` (BYE).

In 3.6.8 `ua_session_update` copies `extra_headers` into the request only when a
`body` is given (without one, as many uninitialised bytes went out on the wire): the
REFER therefore goes with `body: ""` and `content_type: ""`, so that our Refer-To and
Referred-By lines go out exactly; OpenSIPS then adds `Content-Type: application/sdp`
to the body-less REFER (Content-Length 0), which the transferee ignores.

Outbound: MI `ua_session_client_start` (ruri, to, from, body = our SDP offer, flags)
answers the new UAC session's key (its Call-ID) before any reply arrives; provisional
replies raise EARLY (100 Trying raises nothing), the 2xx ANSWERED
(b2b_entities ACKs it unless flag `d`), a final failure REJECTED. Giving up before the
answer is `ua_session_terminate`, which b2b_entities turns into a CANCEL for a client
entity that is not confirmed yet. Digest challenges are answered by OpenSIPS itself
(uac_auth credentials in the script), not by the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opensips_ai_core.signalling.base import CallInfo, OutboundRequest, TransferResult
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.headers import reason_for
from opensips_ai_core.signalling.opensips.events import UaSessionEvent
from opensips_ai_core.signalling.opensips.mi import MiError
from opensips_ai_core.signalling.refer import ReferSubscription
from opensips_ai_core.signalling.sdp import SdpError, parse_sdp

if TYPE_CHECKING:
    from opensips_ai_core.signalling.opensips.backend import OpenSipsBackend

log = logging.getLogger("signalling.opensips.control")

REFER_REPLY_TIMEOUT_S = 32.0      # 64*T1: no reply to the REFER at all
MAX_UNCLAIMED = 64                # UAC events seen before client_start answered its key
Progress = Callable[[int, str], None]


@dataclass
class _Transfer:
    subscription: ReferSubscription
    reply: asyncio.Future[tuple[int, str]]


@dataclass
class _Outbound:
    call_id: str
    key: str
    progress: Progress | None
    outcome: asyncio.Future[UaSessionEvent]      # ANSWERED or REJECTED
    answered: bool = False
    events: list[UaSessionEvent] = field(default_factory=list)


class OpenSipsCallControl:
    """Transfer and dialing for an `OpenSipsBackend` (which routes the events here)."""

    def __init__(self, backend: OpenSipsBackend) -> None:
        self.backend = backend
        self._transfers: dict[str, _Transfer] = {}
        self._outbound: dict[str, _Outbound] = {}          # by B2B key
        self._outbound_calls: dict[str, _Outbound] = {}    # by our call id
        self._unclaimed: dict[str, list[UaSessionEvent]] = {}

    # ---- events -------------------------------------------------------------------------

    def on_event(self, event: UaSessionEvent) -> bool:
        """Take the events of transfers and outbound calls; False for the others."""
        transfer = self._transfers.get(event.key)
        if transfer is not None and event.method == "REFER" and event.event_type in (
                "ANSWERED", "REJECTED", "EARLY"):
            if event.status >= 200 and not transfer.reply.done():
                transfer.reply.set_result((event.status, event.reason or ""))
            return True
        if event.event_type == "UPDATED" and event.method == "NOTIFY":
            self.backend._tasks.spawn(self._on_notify(event, transfer))
            return True
        outbound = self._outbound.get(event.key)
        if outbound is not None:
            self._on_outbound_event(outbound, event)
            return True
        if event.entity_type == "UAC" and event.event_type in ("EARLY", "ANSWERED",
                                                               "REJECTED"):
            # Before ua_session_client_start's answer named the key: keep it for dial().
            if len(self._unclaimed) < MAX_UNCLAIMED:
                self._unclaimed.setdefault(event.key, []).append(event)
            return True
        return False

    async def _on_notify(self, event: UaSessionEvent, transfer: _Transfer | None) -> None:
        if transfer is None:
            await self.backend._reply(event.key, "NOTIFY", 481, "Subscription Does Not Exist")
            return
        await self.backend._reply(event.key, "NOTIFY", 200, "OK")
        transfer.subscription.on_sipfrag(event.body.encode(),
                                         event.header("Subscription-State") or "")

    # ---- transfer -----------------------------------------------------------------------

    async def transfer(self, call_id: str, target: str, timeout_s: float) -> TransferResult:
        backend = self.backend
        session = backend._sessions.get(call_id)
        answered = session is not None and (
            session.answered or (session.answering is not None
                                 and await asyncio.shield(session.answering)))
        if session is None or not answered:
            return TransferResult(False, 481, "no such answered call")
        if call_id in self._transfers:
            return TransferResult(False, 491, "a transfer of this call is already under way")
        loop = asyncio.get_running_loop()
        transfer = _Transfer(ReferSubscription(), loop.create_future())
        self._transfers[call_id] = transfer
        referred_by = session.info.callee or f"sip:ai@{backend.event_socket_host}"
        headers = f"Refer-To: <{target}>\r\nReferred-By: <{referred_by}>\r\n"
        try:
            log.info("transfer of %s to %s: REFER through ua_session_update", call_id, target)
            try:
                await backend.mi.call("ua_session_update", {
                    "key": call_id, "method": "REFER", "body": "", "content_type": "",
                    "extra_headers": headers})
            except MiError as error:
                return TransferResult(False, None, f"ua_session_update REFER failed: {error}")
            try:
                code, reason = await asyncio.wait_for(asyncio.shield(transfer.reply),
                                                      REFER_REPLY_TIMEOUT_S)
            except TimeoutError:
                return TransferResult(False, None, "no reply to the REFER")
            if code >= 300:
                return TransferResult(False, code, f"REFER refused: {code} {reason}")
            outcome = await transfer.subscription.outcome(timeout_s)
            if not outcome.ok:
                return outcome
        finally:
            self._transfers.pop(call_id, None)
            transfer.reply.cancel()
            transfer.subscription.final.cancel()
        log.info("transfer of %s to %s succeeded (%s %s): ua_session_terminate", call_id,
                 target, outcome.code, outcome.reason)
        if backend._sessions.pop(call_id, None) is not None:
            await backend._terminate(call_id)
        return outcome

    # ---- outbound calls -----------------------------------------------------------------

    async def dial(self, call_id: str, request: OutboundRequest,
                   progress: Progress | None) -> int:
        backend = self.backend
        handler = backend._handler
        assert handler is not None
        from_uri = request.from_uri or f"sip:ai@{backend.event_socket_host}"
        info = CallInfo(call_id=call_id, caller=from_uri, callee=request.to,
                        backend=backend.name, direction="outbound")
        offer = await handler.new_call(info, None)  # may raise SignallingError (capacity)
        outbound: _Outbound | None = None
        try:
            params = {"ruri": request.to, "to": request.to,
                      "from": f"{request.caller_id},{from_uri}" if request.caller_id
                      else from_uri, "body": offer.to_text(), "flags": "rbh"}
            if backend.outbound_socket:
                params["socket"] = backend.outbound_socket
            try:
                key = await backend.mi.call("ua_session_client_start", params)
            except MiError as error:
                raise SignallingError(500, f"ua_session_client_start failed: {error}") from None
            if not isinstance(key, str) or not key:
                raise SignallingError(500, f"ua_session_client_start answered {key!r}")
            outbound = _Outbound(call_id, key, progress,
                                 asyncio.get_running_loop().create_future())
            self._outbound[key] = outbound
            self._outbound_calls[call_id] = outbound
            for event in self._unclaimed.pop(key, []):
                self._on_outbound_event(outbound, event)
            try:
                final = await asyncio.wait_for(asyncio.shield(outbound.outcome),
                                               request.max_ring_s)
            except TimeoutError:
                log.info("outbound %s: no answer in %g s: ua_session_terminate (CANCEL)",
                         call_id, request.max_ring_s)
                await backend._terminate(key)
                raise SignallingError(487, "Request Terminated (no answer in time)") from None
            if final.event_type != "ANSWERED":
                raise SignallingError(final.status or 500,
                                      final.reason or reason_for(final.status or 500))
            try:
                answer = parse_sdp(final.body)
            except SdpError as error:
                await backend._terminate(key)
                raise SignallingError(488, f"unusable SDP answer: {error}") from None
            outbound.answered = True
            await handler.complete_call(call_id, answer)
            return final.status
        except BaseException as error:
            if outbound is not None:
                self._forget(outbound)
                if outbound.answered:
                    await backend._terminate(outbound.key)
            reason = f"outbound call failed: {error}" if isinstance(error, SignallingError) \
                else "outbound call cancelled"
            await backend._notify_end(call_id, reason)
            raise

    def _on_outbound_event(self, outbound: _Outbound, event: UaSessionEvent) -> None:
        if event.event_type == "EARLY":
            # Events come from several OpenSIPS worker processes and may cross: a 180
            # reported after the 200 (seen on 3.6.8) is stale.
            if outbound.progress is not None and not outbound.outcome.done():
                outbound.progress(event.status, event.reason or "")
        elif event.event_type in ("ANSWERED", "REJECTED") and event.method == "INVITE":
            if outbound.progress is not None:
                outbound.progress(event.status, event.reason or "")
            if not outbound.outcome.done():
                outbound.outcome.set_result(event)
        elif event.event_type == "TERMINATED":
            self._forget(outbound)
            if outbound.answered:
                self.backend._tasks.spawn(self.backend._notify_end(
                    outbound.call_id, event.method.lower() or "terminated"))
            elif not outbound.outcome.done():
                outbound.outcome.set_result(event)
        elif event.event_type == "UPDATED" and event.method == "INVITE":
            # A re-INVITE from the callee: not followed on outbound calls yet.
            self.backend._tasks.spawn(self.backend._reply(outbound.key, "INVITE", 488))

    def _forget(self, outbound: _Outbound) -> None:
        self._outbound.pop(outbound.key, None)
        self._outbound_calls.pop(outbound.call_id, None)

    def cancel(self, call_id: str) -> bool:
        """DELETE /calls/{id} while ringing: end the wait now (CANCEL follows)."""
        outbound = self._outbound_calls.get(call_id)
        if outbound is None or outbound.outcome.done():
            return False
        outbound.outcome.set_exception(SignallingError(487, "Request Terminated (cancelled)"))
        self.backend._tasks.spawn(self.backend._terminate(outbound.key))
        return True

    async def hangup(self, call_id: str) -> bool:
        """Hang up an answered outbound call; False when `call_id` is not one."""
        outbound = self._outbound_calls.get(call_id)
        if outbound is None:
            return False
        self._forget(outbound)
        with contextlib.suppress(MiError):
            await self.backend._terminate(outbound.key)
        return True

    def active(self) -> list[str]:
        return [o.call_id for o in self._outbound_calls.values() if o.answered]

    def answered_keys(self) -> list[str]:
        """The B2B keys of the answered outbound calls."""
        return [key for key, o in self._outbound.items() if o.answered]

    def keys(self) -> set[str]:
        """The B2B keys of the outbound calls under way (UAC sessions), claimed or not."""
        return set(self._outbound) | set(self._unclaimed)

    def release(self, key: str, reason: str) -> bool:
        """OpenSIPS no longer holds this outbound call's session: end it locally."""
        outbound = self._outbound.get(key)
        if outbound is None:
            return False
        self._forget(outbound)
        if outbound.answered:
            self.backend._tasks.spawn(self.backend._notify_end(outbound.call_id, reason))
        elif not outbound.outcome.done():
            outbound.outcome.set_exception(SignallingError(503, f"Service Unavailable ({reason})"))
        return True

