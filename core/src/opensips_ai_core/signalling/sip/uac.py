"""Outbound calls of the direct SIP backend: the core as a UAC (RFC 3261 13.2, 17.1.1).

`OutboundDialer.dial` places one call through the backend's socket:

- the call manager's SDP offer (`CallHandler.new_call(info, None)`, the late-offer
  path) goes in the INVITE; the 2xx's SDP is the answer (`complete_call`), and the
  answered call is a dialog of the backend like an inbound one (BYE either way,
  re-INVITE, REFER);
- Timer A retransmissions until a provisional response; 1xx are reported to
  `progress` (180/183: "ringing");
- 401/407 are answered once per challenge with digest credentials (`auth`), a
  3xx is followed once (its first Contact), every non-2xx final response is ACKed in
  its transaction;
- after `max_ring_s` without an answer a CANCEL goes out (RFC 3261 9.1: only after a
  provisional response; without one the INVITE times out after 64*T1) and the 487 ends
  the attempt; a 2xx that crosses the CANCEL is ACKed and ended with a BYE;
- 2xx retransmissions are ACKed again for 64*T1 (the UAC core's duty, 13.2.2.4).

The From is a logical identity (8.1.1.3): the request's `from`, else `sip:ai@HOST`
without a port, which 19.1.1 (Table 1) does not allow in a From or To URI. Where the
core listens (the port included) is the Contact's job (8.1.1.8), `backend.contact`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opensips_ai_core.signalling.base import CallInfo, OutboundRequest
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.headers import header_uri, reason_for, tag_of
from opensips_ai_core.signalling.sdp import SdpError, SessionDescription, parse_sdp
from opensips_ai_core.signalling.sip.auth import (
    Credentials,
    DigestError,
    authorization,
    parse_challenge,
)
from opensips_ai_core.signalling.sip.message import SipMessage, uri_host_port
from opensips_ai_core.signalling.sip.transactions import (
    Address,
    Dialog,
    backoff_intervals,
    new_branch,
    new_tag,
)
from voice_common.devlogger import get_development_logger

if TYPE_CHECKING:
    from opensips_ai_core.signalling.sip.uas import DirectSipBackend

log = get_development_logger("signalling.sip.uac")

# (status, reason) of each provisional or final response, as it arrives.
Progress = Callable[[int, str], None]


@dataclass
class _InviteClient:
    branch: str
    call_id: str
    # None: a wake-up (the call is to be cancelled now)
    responses: asyncio.Queue[SipMessage | None] = field(default_factory=asyncio.Queue)
    cancel_now: bool = False


class OutboundDialer:
    """Places calls for a `DirectSipBackend` (which routes INVITE responses here)."""

    def __init__(self, backend: DirectSipBackend, credentials: Credentials | None) -> None:
        self.backend = backend
        self.credentials = credentials
        self._clients: dict[str, _InviteClient] = {}
        self._acks: dict[tuple[str, int], tuple[bytes, Address]] = {}  # re-ACK 2xx retransmits

    # ---- responses routed from the backend --------------------------------------------

    def on_response(self, response: SipMessage, branch: str) -> bool:
        """Take a response to one of our INVITEs; False when it is not ours."""
        number, method = response.cseq
        if method != "INVITE":
            return False
        client = self._clients.get(branch)
        if client is not None:
            client.responses.put_nowait(response)
            return True
        ack = self._acks.get((response.call_id, number))
        if ack is not None and response.status is not None and 200 <= response.status < 300:
            self.backend._send(*ack)  # a retransmitted 2xx: our ACK was lost
            return True
        return False

    def cancel(self, call_id: str) -> bool:
        """Give up ringing now (DELETE /calls/{id}): CANCEL as after max_ring_s."""
        for client in self._clients.values():
            if client.call_id == call_id:
                client.cancel_now = True
                client.responses.put_nowait(None)
                return True
        return False

    # ---- placing a call ---------------------------------------------------------------

    async def dial(self, call_id: str, request: OutboundRequest,
                   progress: Progress | None = None) -> int:
        backend = self.backend
        handler = backend._handler
        assert handler is not None
        from_uri = request.from_uri or \
            f"sip:{backend.contact_user}@{backend._host_in_uri(backend.public_ip)}"
        info = CallInfo(call_id=call_id, caller=from_uri, callee=request.to,
                        backend=backend.name, sip_call_id=call_id, direction="outbound")
        offer = await handler.new_call(info, None)  # may raise SignallingError (capacity)
        try:
            return await self._invite(call_id, request, from_uri, offer, progress)
        except BaseException as error:
            reason = f"outbound call failed: {error}" if isinstance(error, SignallingError) \
                else "outbound call cancelled"
            await backend._notify_end_id(call_id, reason)
            raise

    async def _invite(self, call_id: str, request: OutboundRequest, from_uri: str,
                      offer: SessionDescription, progress: Progress | None) -> int:
        backend = self.backend
        loop = asyncio.get_running_loop()
        ring_at = loop.time() + request.max_ring_s
        display = f'"{request.caller_id}" ' if request.caller_id else ""
        local_from = f"{display}<{from_uri}>;tag={new_tag()}"
        target = request.to
        cseq = 0
        redirected = False
        authorized: set[str] = set()
        auth_headers: list[tuple[str, str]] = []
        while True:
            cseq += 1
            invite = self._build_invite(target, request.to, local_from=local_from,
                                        call_id=call_id, cseq=cseq, offer=offer,
                                        extra=auth_headers)
            destination = await backend._resolve(uri_host_port(target))
            final, cancelled = await self._transaction(invite, destination, ring_at, progress)
            status = final.status or 0
            if 200 <= status < 300:
                await self._answered(call_id, invite, final, destination, cancelled)
                return status
            if status in (401, 407) and self.credentials is not None:
                header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
                answer = "Authorization" if status == 401 else "Proxy-Authorization"
                challenge_value = final.get(header) or ""
                try:
                    challenge = parse_challenge(challenge_value)
                except DigestError as error:
                    raise SignallingError(status, f"cannot authenticate: {error}") from None
                if challenge.nonce in authorized:
                    raise SignallingError(status, "credentials refused")
                authorized.add(challenge.nonce)
                auth_headers = [(answer, authorization(challenge, self.credentials, "INVITE",
                                                       target))]
                continue
            if 300 <= status < 400 and not redirected and final.get("Contact"):
                redirected = True
                target = header_uri(final.get("Contact") or "")
                log.info("outbound %s redirected (%d) to %s", call_id, status, target)
                auth_headers = []
                continue
            raise SignallingError(status, final.reason or reason_for(status))

    def _build_invite(self, target: str, to: str, *, local_from: str, call_id: str,
                      cseq: int, offer: SessionDescription,
                      extra: list[tuple[str, str]]) -> SipMessage:
        backend = self.backend
        invite = SipMessage(method="INVITE", uri=target)
        invite.add("Via", f"SIP/2.0/UDP {backend._host_in_uri(backend.public_ip)}:"
                          f"{backend.port};branch={new_branch()};rport")
        invite.add("Max-Forwards", "70")
        invite.add("From", local_from)
        invite.add("To", f"<{to}>")
        invite.add("Call-ID", call_id)
        invite.add("CSeq", f"{cseq} INVITE")
        invite.add("Contact", backend.contact)
        for name, value in backend._capabilities()[:2]:
            invite.add(name, value)
        for name, value in extra:
            invite.add(name, value)
        invite.add("User-Agent", "opensips-ai-core")
        invite.add("Content-Type", "application/sdp")
        invite.body = offer.to_text().encode()
        return invite

    async def _transaction(self, invite: SipMessage, destination: Address,
                           ring_at: float, progress: Progress | None
                           ) -> tuple[SipMessage, bool]:
        """One INVITE client transaction: its final response (non-2xx already ACKed), and
        whether it was cancelled."""
        backend = self.backend
        loop = asyncio.get_running_loop()
        branch = _branch_of(invite)
        client = _InviteClient(branch, invite.call_id)
        self._clients[branch] = client
        data = invite.to_bytes()
        timeout_at = loop.time() + backend.timers.transaction_timeout  # Timer B
        intervals = backoff_intervals(backend.timers)
        resend_at: float | None = loop.time() + next(intervals)  # Timer A
        provisional = False
        cancelled = False
        try:
            backend._send(data, destination)
            while True:
                if provisional and not cancelled and loop.time() >= ring_at:
                    cancelled = True  # RFC 3261 9.1: a CANCEL only after a provisional
                    log.info("outbound %s: no answer in time: CANCEL", invite.call_id)
                    self._send_cancel(invite, destination)
                    resend_at = loop.time() + backend.timers.t1
                    intervals = backoff_intervals(backend.timers)
                wakes = [timeout_at]
                if resend_at is not None:
                    wakes.append(resend_at)
                if provisional and not cancelled:
                    wakes.append(ring_at)
                try:
                    response = await asyncio.wait_for(client.responses.get(),
                                                      max(0.0, min(wakes) - loop.time()))
                except TimeoutError:
                    now = loop.time()
                    if now >= timeout_at:
                        raise SignallingError(408, "Request Timeout (no final response)") \
                            from None
                    if resend_at is not None and now >= resend_at:
                        # Timer A for the INVITE, Timer E for the CANCEL
                        backend._send(data, destination) if not cancelled \
                            else self._send_cancel(invite, destination)
                        backend.stats.retransmissions_sent += 1
                        resend_at = now + next(intervals)
                    continue
                if response is None:  # cancel(): ring time is up
                    ring_at = loop.time()
                    continue
                status = response.status or 0
                if progress is not None:
                    progress(status, response.reason or "")
                if status < 200:
                    provisional = True
                    if not cancelled:
                        resend_at = None
                    continue
                if status >= 300:
                    self._ack_non_2xx(invite, response, destination)
                return response, cancelled
        finally:
            self._clients.pop(branch, None)

    def _send_cancel(self, invite: SipMessage, destination: Address) -> None:
        cancel = SipMessage(method="CANCEL", uri=invite.uri)
        for name in ("Via", "Max-Forwards", "From", "To", "Call-ID"):
            cancel.add(name, invite.get(name) or "")
        cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
        self.backend._send(cancel.to_bytes(), destination)

    def _ack_non_2xx(self, invite: SipMessage, response: SipMessage,
                     destination: Address) -> None:
        """RFC 3261 17.1.1.3: same branch, To of the response."""
        ack = SipMessage(method="ACK", uri=invite.uri)
        for name in ("Via", "Max-Forwards", "From"):
            ack.add(name, invite.get(name) or "")
        ack.add("To", response.get("To") or invite.get("To") or "")
        ack.add("Call-ID", invite.call_id)
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        self.backend._send(ack.to_bytes(), destination)

    async def _answered(self, call_id: str, invite: SipMessage, response: SipMessage,
                        destination: Address, too_late: bool) -> None:
        """A 2xx: ACK it, make the dialog, hand the SDP answer to the call manager."""
        backend = self.backend
        route_set = list(reversed(response.get_all("Record-Route")))
        remote_target = header_uri(response.get("Contact") or invite.uri or "")
        dialog = Dialog(
            call_id=call_id, local_tag=tag_of(invite.get("From")) or "",
            remote_tag=tag_of(response.get("To")) or "", local_uri=invite.get("From") or "",
            remote_uri=response.get("To") or "", remote_target=remote_target,
            route_set=route_set, remote_cseq=0, invite_key=("", "", ""), source=destination,
            local_cseq=invite.cseq[0], state="confirmed", answered=True)
        dialog.confirmed.set()
        ack = SipMessage(method="ACK", uri=remote_target)
        ack.add("Via", f"SIP/2.0/UDP {backend._host_in_uri(backend.public_ip)}:"
                       f"{backend.port};branch={new_branch()};rport")
        ack.add("Max-Forwards", "70")
        ack.add("From", dialog.local_uri)
        ack.add("To", dialog.remote_uri)
        ack.add("Call-ID", call_id)
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        for route in route_set:
            ack.add("Route", route)
        next_hop = header_uri(route_set[0]) if route_set else remote_target
        try:
            ack_to = await backend._resolve(uri_host_port(next_hop))
        except (OSError, ValueError):
            ack_to = destination
        key = (call_id, invite.cseq[0])
        self._acks[key] = (ack.to_bytes(), ack_to)
        asyncio.get_running_loop().call_later(backend.timers.transaction_timeout,
                                              self._acks.pop, key, None)
        backend._send(ack.to_bytes(), ack_to)
        backend._dialogs[call_id] = dialog
        if too_late:  # the 2xx crossed our CANCEL: the call is not wanted any more
            await backend._send_bye(dialog)
            raise SignallingError(487, "Request Terminated (answered after the ring time)")
        try:
            answer = parse_sdp(response.body.decode("utf-8"))
        except (SdpError, UnicodeDecodeError) as error:
            log.warning("outbound %s: unusable SDP answer (%s): BYE", call_id, error)
            await backend._send_bye(dialog)
            raise SignallingError(488, "Not Acceptable Here (unusable SDP answer)") from None
        assert backend._handler is not None
        try:
            await backend._handler.complete_call(call_id, answer)
        except SignallingError:
            with contextlib.suppress(Exception):
                await backend._send_bye(dialog)
            raise


def _branch_of(message: SipMessage) -> str:
    via = message.get("Via") or ""
    for param in via.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "branch":
            return value.strip()
    return ""
