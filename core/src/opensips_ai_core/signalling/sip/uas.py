"""`DirectSipBackend`: a small SIP UAS over UDP inside the core (RFC 3261, 3264, 3581).

Hand-written on asyncio's DatagramProtocol because no maintained asyncio SIP UAS
library fits: the Python SIP stacks that exist are either unmaintained, blocking,
thread-based, or full B2BUA/PBX frameworks. A voice bot needs only INVITE/ACK/
BYE/CANCEL/OPTIONS, re-INVITE, retransmissions and offer/answer, which is what
this module does with the ones named below:

- INVITE → 100 Trying → `CallHandler.new_call` → 200 OK (To-tag, Contact,
  Record-Route copied, SDP answer), retransmitted T1, 2*T1 … T2 until the ACK;
  after 64*T1 without ACK the call is ended with a BYE. An INVITE without a body
  is a late offer: the 200 carries the core's offer and the ACK the answer
  (`complete_call`); an ACK without a usable answer ends the call with a BYE
  (`sessions.py`, with re-INVITEs).
- Below the dialogs, the socket, parsing, malformed datagrams, server and client
  transactions and their retransmissions are `endpoint.py`'s (`SipEndpoint`).
- CANCEL → 200 + 487 for the INVITE; BYE → 200; OPTIONS → 200 with Allow/Accept
  (503 with Retry-After while the core drains: `options_refusal`);
  re-INVITE → `update_call` → 200 with the new SDP; unknown dialog → 481; known but
  unsupported methods → 405 with Allow; unknown method names → 501 (names are
  case-sensitive: `options` is unknown); a SIP version other than 2.0 → 505.
- `hangup(call_id)` sends an in-dialog BYE (route set, next CSeq) and waits for its
  final response (200, 481) or the 64*T1 timeout.
- `transfer(call_id, target)`: a blind transfer, an in-dialog REFER (`transfer.py`).
- `dial(call_id, request)`: an outbound call, the core as a UAC (`uac.py`); its
  dialog then lives here like an inbound one.

`end_call` is called when the far end ends the call (BYE, CANCEL, no ACK), not
for calls the bot ends with `hangup` or a transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from opensips_ai_core.signalling.base import CallHandler, CallInfo, OutboundRequest, TransferResult
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.headers import header_uri, reason_for, tag_of
from opensips_ai_core.signalling.sdp import SessionDescription
from opensips_ai_core.signalling.sip.auth import Credentials
from opensips_ai_core.signalling.sip.endpoint import SipEndpoint
from opensips_ai_core.signalling.sip.message import SipMessage
from opensips_ai_core.signalling.sip.sessions import SessionNegotiation
from opensips_ai_core.signalling.sip.transactions import (
    Address,
    Dialog,
    ServerTransaction,
    SipTimers,
    new_tag,
)
from opensips_ai_core.signalling.sip.transfer import ReferTransfers
from opensips_ai_core.signalling.sip.uac import OutboundDialer
from voice_common.devlogger import get_development_logger

log = get_development_logger("signalling.sip")

ALLOWED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")
ALLOW_HEADER = ", ".join(ALLOWED)
KNOWN_METHODS = frozenset({
    *ALLOWED, "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER",
    "MESSAGE", "UPDATE",
})


class DirectSipBackend(SipEndpoint):
    """SignallingBackend that is itself the SIP UAS on udp HOST:PORT."""

    name = "sip"

    def __init__(self, host: str, port: int, public_ip: str | None = None, *,
                 timers: SipTimers | None = None, max_message_size: int = 32 * 1024,
                 contact_user: str = "ai", credentials: Credentials | None = None) -> None:
        super().__init__(host, port, public_ip, timers=timers,
                         max_message_size=max_message_size)
        self.contact_user = contact_user
        self._handler: CallHandler | None = None
        self._dialogs: dict[str, Dialog] = {}
        # Set by the core: while it returns a refusal (a drain), OPTIONS outside a dialog
        # get it too, so that a dispatcher's probing takes this core out of rotation.
        self.options_refusal: Callable[[], SignallingError | None] | None = None
        self._dialer = OutboundDialer(self, credentials)
        self._transfers = ReferTransfers(self)
        self._sessions = SessionNegotiation(self)

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self, handler: CallHandler) -> None:
        self._handler = handler
        await self._listen()
        log.info("direct SIP UAS listening on udp:%s:%d", self.host, self.port)

    @property
    def contact(self) -> str:
        return f"<sip:{self.contact_user}@{self._host_in_uri(self.public_ip)}:{self.port}>"

    async def stop(self) -> None:
        await self._close()
        self._dialogs.clear()

    def active_calls(self) -> list[str]:
        return [d.call_id for d in self._dialogs.values() if d.state != "terminated"]

    # ---- requests (new ones: `SipEndpoint` absorbs retransmissions) ------------------

    def _on_new_request(self, transaction: ServerTransaction, source: Address) -> None:
        request = transaction.request
        method = request.method or ""
        if method not in KNOWN_METHODS:
            self._reply(transaction, 501, extra=[("Allow", ALLOW_HEADER)])
        elif method not in ALLOWED and not (method == "NOTIFY" and tag_of(request.get("To"))):
            # (an in-dialog NOTIFY is the refer subscription's: `_on_in_dialog` takes it)
            self._reply(transaction, 405, extra=[("Allow", ALLOW_HEADER)])
        elif method == "CANCEL":
            self._on_cancel(transaction)
        elif method == "OPTIONS" and not tag_of(request.get("To")):
            self._on_options(transaction)
        elif tag_of(request.get("To")):
            self._on_in_dialog(transaction, source)
        elif method == "INVITE":
            self._on_initial_invite(transaction, source)
        else:  # BYE outside a dialog
            self._reply(transaction, 481)

    def _on_options(self, transaction: ServerTransaction) -> None:
        refusal = self.options_refusal() if self.options_refusal is not None else None
        if refusal is None:
            self._reply(transaction, 200, extra=self._capabilities())
            return
        extra = [("Retry-After", str(refusal.retry_after))] if refusal.retry_after else []
        self._reply(transaction, refusal.code, reason=refusal.reason, extra=extra)

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW_HEADER), ("Accept", "application/sdp"),
                ("Accept-Encoding", "identity"), ("Accept-Language", "en"),
                ("Supported", "")]

    # ---- INVITE -------------------------------------------------------------------------

    def _on_initial_invite(self, transaction: ServerTransaction, source: Address) -> None:
        request = transaction.request
        call_id = request.call_id
        if call_id in self._dialogs:
            # Same Call-ID, new branch, no To-tag: a merged/looped request (RFC 3261 8.2.2.2).
            self._reply(transaction, 482, reason="Loop Detected")
            return
        self._reply(transaction, 100)
        if request.get("Require"):
            self._reply(transaction, 420, extra=[("Unsupported", request.get("Require") or "")])
            return
        offer: SessionDescription | None = None
        if request.body.strip():
            offer = self._sessions.offer_of(transaction)
            if offer is None:
                return
        # else: no body at all, a late offer (RFC 3261 13.2.1): ours goes in the 200.
        dialog = Dialog(
            call_id=call_id, local_tag=new_tag(), remote_tag=tag_of(request.get("From")) or "",
            local_uri="", remote_uri=request.get("From") or "",
            remote_target=header_uri(request.get("Contact") or request.get("From") or ""),
            route_set=request.get_all("Record-Route"), remote_cseq=request.cseq[0],
            invite_key=transaction.key, source=source, awaiting_answer=offer is None,
        )
        dialog.local_uri = f"{request.get('To')};tag={dialog.local_tag}"
        self._dialogs[call_id] = dialog
        self.stats.calls += 1
        info = CallInfo(call_id=call_id, caller=header_uri(request.get("From") or ""),
                        callee=header_uri(request.get("To") or ""), backend=self.name,
                        sip_call_id=call_id)
        dialog.handler_task = self._tasks.spawn(self._answer_call(dialog, transaction, info, offer))

    async def _answer_call(self, dialog: Dialog, transaction: ServerTransaction,
                           info: CallInfo, offer: SessionDescription | None) -> None:
        assert self._handler is not None
        try:
            answer = await self._handler.new_call(info, offer)
        except SignallingError as error:
            extra = [("Retry-After", str(error.retry_after))] \
                if error.retry_after is not None else []
            self._reject(dialog, transaction, error.code, error.reason, extra)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("new_call failed for %s", dialog.call_id)
            self._reject(dialog, transaction, 500, reason_for(500))
            return
        if dialog.state == "terminated":
            return  # cancelled while the handler worked
        dialog.local_sdp = answer
        dialog.answered = True
        self._send_2xx(dialog, transaction, answer)

    def _reject(self, dialog: Dialog, transaction: ServerTransaction, code: int,
                reason: str, extra: Iterable[tuple[str, str]] = ()) -> None:
        self._dialogs.pop(dialog.call_id, None)
        dialog.state = "terminated"
        self._reply(transaction, code, reason=reason, to_tag=dialog.local_tag, extra=extra)

    def _final_non_2xx(self, transaction: ServerTransaction, code: int, reason: str | None,
                       to_tag: str | None) -> None:
        """Send a final error response; `_reply` retransmits it (Timer G) until the ACK."""
        self._reply(transaction, code, reason=reason, to_tag=to_tag)

    def _send_2xx(self, dialog: Dialog, transaction: ServerTransaction,
                  answer: SessionDescription) -> None:
        body = answer.to_text().encode()
        dialog.pending_ack_cseq = transaction.request.cseq[0]
        self._reply(transaction, 200, to_tag=dialog.local_tag, body=body,
                    extra=[("Contact", self.contact), ("Content-Type", "application/sdp"),
                           *self._capabilities()[:2]])
        transaction.retransmitter = self._tasks.spawn(
            self._retransmit(transaction, on_timeout=lambda: self._no_ack(dialog)))

    async def _no_ack(self, dialog: Dialog) -> None:
        log.warning("no ACK for the 200 of %s after %.1f s: ending the call",
                    dialog.call_id, self.timers.transaction_timeout)
        if self._dialogs.get(dialog.call_id) is not dialog:
            return
        dialog.pending_ack_cseq = None
        dialog.state = "confirmed"  # RFC 3261 13.3.1.4: confirmed, then ended with a BYE
        dialog.confirmed.set()
        await self._notify_end(dialog, "no ACK")
        await self._send_bye(dialog)

    def _local_tag(self, call_id: str) -> str | None:
        dialog = self._dialogs.get(call_id)
        return dialog.local_tag if dialog is not None else None

    def _on_ack(self, request: SipMessage) -> None:
        transaction = self._transactions.get(self._transaction_key(request, "INVITE"))
        if transaction is not None and transaction.final_code and transaction.final_code >= 300:
            transaction.acked.set()  # the ACK of a non-2xx final response (same branch)
            return
        dialog = self._dialogs.get(request.call_id)
        if dialog is None or tag_of(request.get("To")) != dialog.local_tag:
            return  # ACKs are never answered
        if dialog.pending_ack_cseq is not None and request.cseq[0] == dialog.pending_ack_cseq:
            dialog.pending_ack_cseq = None
            if dialog.state == "early":
                dialog.state = "confirmed"
            dialog.confirmed.set()
            for transaction in self._transactions.values():
                if (transaction.request.call_id == dialog.call_id
                        and transaction.request.method == "INVITE"
                        and transaction.request.cseq[0] == request.cseq[0]):
                    transaction.acked.set()
            if dialog.awaiting_answer:
                dialog.awaiting_answer = False
                self._tasks.spawn(self._sessions.complete_call(dialog, request))
        else:
            self.stats.retransmissions_absorbed += 1  # a retransmitted ACK

    # ---- CANCEL -------------------------------------------------------------------------

    def _on_cancel(self, transaction: ServerTransaction) -> None:
        invite = self._transactions.get(self._transaction_key(transaction.request, "INVITE"))
        if invite is None:
            self._reply(transaction, 481)
            return
        self._reply(transaction, 200)
        if invite.final_code is not None:
            return  # too late: the INVITE already has its final response
        dialog = self._dialogs.get(invite.request.call_id)
        to_tag = dialog.local_tag if dialog is not None else None
        if dialog is not None:
            self._dialogs.pop(dialog.call_id, None)
            dialog.state = "terminated"
            if dialog.handler_task is not None and not dialog.handler_task.done():
                dialog.handler_task.cancel()
        self._final_non_2xx(invite, 487, reason_for(487), to_tag)
        if dialog is not None:
            self._tasks.spawn(self._notify_end(dialog, "cancelled"))

    # ---- in-dialog requests -------------------------------------------------------------

    def _on_in_dialog(self, transaction: ServerTransaction, source: Address) -> None:
        request = transaction.request
        dialog = self._dialogs.get(request.call_id)
        if (dialog is None or tag_of(request.get("To")) != dialog.local_tag
                or tag_of(request.get("From")) != dialog.remote_tag):
            self._reply(transaction, 481)
            return
        number = request.cseq[0]
        if number <= dialog.remote_cseq:
            self._reply(transaction, 500, reason="Server Internal Error (CSeq out of order)")
            return
        dialog.remote_cseq = number
        if request.method == "BYE":
            self._reply(transaction, 200)
            self._end_dialog(dialog)
            self._tasks.spawn(self._notify_end(dialog, "bye"))
        elif request.method == "OPTIONS":
            self._reply(transaction, 200, extra=self._capabilities())
        elif request.method == "INVITE":
            self._sessions.on_reinvite(dialog, transaction)
        elif request.method == "NOTIFY":
            self._transfers.on_notify(dialog, transaction)
        else:
            self._reply(transaction, 405, extra=[("Allow", ALLOW_HEADER)])

    def _end_dialog(self, dialog: Dialog) -> None:
        dialog.state = "terminated"
        self._dialogs.pop(dialog.call_id, None)
        self._transfers.call_ended(dialog.call_id)
        for transaction in self._transactions.values():
            if transaction.request.call_id == dialog.call_id and transaction.retransmitter:
                transaction.acked.set()  # stop retransmitting the 200: the call is over

    async def _notify_end(self, dialog: Dialog, reason: str) -> None:
        assert self._handler is not None
        try:
            await self._handler.end_call(dialog.call_id, reason)
        except Exception:
            log.exception("end_call failed for %s", dialog.call_id)

    # ---- the bot hangs up ---------------------------------------------------------------

    async def hangup(self, call_id: str) -> None:
        dialog = self._dialogs.get(call_id)
        if dialog is None:
            log.info("hangup for %s: no such call (already ended)", call_id)
            return
        if not dialog.answered:
            # Not answered yet: a BYE is not allowed; reject the INVITE instead.
            transaction = self._transactions.get(dialog.invite_key)
            if dialog.handler_task is not None and not dialog.handler_task.done():
                dialog.handler_task.cancel()
            self._end_dialog(dialog)
            if transaction is not None and transaction.final_code is None:
                self._final_non_2xx(transaction, 480, reason_for(480), dialog.local_tag)
            return
        if not dialog.confirmed.is_set():
            # RFC 3261 15: no BYE before the ACK of our 2xx (or its timeout).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dialog.confirmed.wait(), self.timers.transaction_timeout)
        if self._dialogs.get(call_id) is not dialog:
            return
        self._end_dialog(dialog)
        await self._send_bye(dialog)

    async def _send_bye(self, dialog: Dialog) -> int | None:
        """Send an in-dialog BYE and wait for its final response; None on timeout."""
        dialog.state = "terminated"
        self._dialogs.pop(dialog.call_id, None)
        response = await self._in_dialog_request(dialog, "BYE")
        code = response.status if response is not None else None
        if code is None:
            log.warning("BYE for %s: no response after %.1f s", dialog.call_id,
                        self.timers.transaction_timeout)
        elif code == 481:
            log.info("BYE for %s: 481, the far end had already ended the call", dialog.call_id)
        elif code >= 300:
            log.warning("BYE for %s answered %d", dialog.call_id, code)
        return code

    # ---- outbound calls (the core as a UAC: `uac.py`) ----------------------------------

    def _on_invite_response(self, response: SipMessage, branch: str) -> bool:
        return self._dialer.on_response(response, branch)

    async def dial(self, call_id: str, request: OutboundRequest,
                   progress: Callable[[int, str], None] | None = None) -> int:
        """Place a call (SIP Call-ID `call_id`); 2xx when answered, else SignallingError."""
        return await self._dialer.dial(call_id, request, progress)

    def cancel_dial(self, call_id: str) -> bool:
        """Stop ringing an outbound call (CANCEL); False when it is not ringing."""
        return self._dialer.cancel(call_id)

    async def _notify_end_id(self, call_id: str, reason: str) -> None:
        """end_call for a call that may have no dialog (an outbound call that failed)."""
        dialog = self._dialogs.get(call_id)
        if dialog is not None:
            self._end_dialog(dialog)
        assert self._handler is not None
        try:
            await self._handler.end_call(call_id, reason)
        except Exception:
            log.exception("end_call failed for %s", call_id)

    # ---- blind transfer (REFER, RFC 3515: `transfer.py`) -------------------------------

    async def transfer(self, call_id: str, target: str, *,
                       timeout_s: float = 30.0) -> TransferResult:
        """REFER the caller to `target` inside the call's dialog; on a 2xx sipfrag, BYE."""
        return await self._transfers.transfer(call_id, target, timeout_s=timeout_s)
