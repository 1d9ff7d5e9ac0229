"""Offer/answer after the INVITE in the direct SIP dialogs (RFC 3261 13.2.1, 14; RFC 3264).

- An INVITE's SDP offer is read here (`offer_of`: 415 for another body type or
  encoding, 400 for malformed SDP).
- A late offer (an INVITE without a body: the core's offer went in the 200) is
  completed by the ACK's answer (`complete_call` → `CallHandler.complete_call`); an
  ACK without a usable answer ends the call with a BYE.
- A re-INVITE refreshes the remote target (Contact) and asks `CallHandler.update_call`
  for the answer (the session version goes on: `continue_session`); an offerless one
  gets the current session as the offer; one that overlaps an unfinished INVITE gets
  500 with Retry-After (RFC 3261 14.2).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.headers import header_uri, reason_for
from opensips_ai_core.signalling.offer_answer import continue_session
from opensips_ai_core.signalling.sdp import SdpError, SessionDescription, parse_sdp
from opensips_ai_core.signalling.sip.message import SipMessage
from opensips_ai_core.signalling.sip.transactions import Dialog, ServerTransaction
from voice_common.devlogger import get_development_logger

if TYPE_CHECKING:
    from opensips_ai_core.signalling.sip.uas import DirectSipBackend

log = get_development_logger("signalling.sip")


class SessionNegotiation:
    """The SDP offers and answers of a `DirectSipBackend`'s dialogs after the INVITE's."""

    def __init__(self, backend: DirectSipBackend) -> None:
        self.backend = backend

    def offer_of(self, transaction: ServerTransaction) -> SessionDescription | None:
        """The SDP offer of an INVITE, or None after answering 415/400."""
        backend = self.backend
        request = transaction.request
        content_type = (request.get("Content-Type") or "").split(";")[0].strip().lower()
        encoding = (request.get("Content-Encoding") or "identity").strip().lower()
        if not request.body.strip() or content_type != "application/sdp" \
                or encoding != "identity":
            backend._reply(transaction, 415, extra=[("Accept", "application/sdp"),
                                                    ("Accept-Encoding", "identity")])
            return None
        try:
            return parse_sdp(request.body.decode("utf-8"))
        except (SdpError, UnicodeDecodeError) as error:
            log.warning("bad SDP in INVITE %s: %s", request.call_id, error)
            backend._reply(transaction, 400, reason="Bad Request (malformed SDP)",
                           extra=[("Warning", f'399 {backend.public_ip} "{str(error)[:80]}"')])
            return None

    def on_reinvite(self, dialog: Dialog, transaction: ServerTransaction) -> None:
        backend = self.backend
        request = transaction.request
        if dialog.pending_ack_cseq is not None or (
                dialog.handler_task is not None and not dialog.handler_task.done()):
            # The previous INVITE is not finished (RFC 3261 14.2).
            backend._reply(transaction, 500, extra=[("Retry-After", "1")])
            return
        backend._reply(transaction, 100)
        contact = request.get("Contact")
        if contact:
            dialog.remote_target = header_uri(contact)  # a target refresh (RFC 3261 12.2.2)
        if not request.body.strip():
            # An offerless re-INVITE: our current session is the offer (RFC 3261 14.2).
            if dialog.local_sdp is None:
                backend._final_non_2xx(transaction, 488, reason_for(488), dialog.local_tag)
                return
            answer = dialog.local_sdp  # unchanged session: same version
            dialog.local_sdp = answer
            backend._send_2xx(dialog, transaction, answer)
            return
        offer = self.offer_of(transaction)
        if offer is None:
            return
        dialog.handler_task = backend._tasks.spawn(self._update_call(dialog, transaction, offer))

    async def _update_call(self, dialog: Dialog, transaction: ServerTransaction,
                           offer: SessionDescription) -> None:
        backend = self.backend
        assert backend._handler is not None
        try:
            answer = await backend._handler.update_call(dialog.call_id, offer)
        except SignallingError as error:
            backend._final_non_2xx(transaction, error.code, error.reason, dialog.local_tag)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("update_call failed for %s", dialog.call_id)
            backend._final_non_2xx(transaction, 500, reason_for(500), dialog.local_tag)
            return
        if dialog.state == "terminated":
            return
        answer = continue_session(dialog.local_sdp, answer)
        dialog.local_sdp = answer
        backend._send_2xx(dialog, transaction, answer)

    async def complete_call(self, dialog: Dialog, ack: SipMessage) -> None:
        """A late offer's answer, from the ACK; without a usable one the call ends (BYE)."""
        backend = self.backend
        assert backend._handler is not None
        try:
            if not ack.body.strip():
                raise SignallingError(488, "no SDP answer in the ACK")
            answer = parse_sdp(ack.body.decode("utf-8"))
            await backend._handler.complete_call(dialog.call_id, answer)
            return
        except (SdpError, UnicodeDecodeError, SignallingError) as error:
            log.warning("late offer of %s: unusable answer in the ACK (%s): ending the call",
                        dialog.call_id, error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("complete_call failed for %s", dialog.call_id)
        if backend._dialogs.get(dialog.call_id) is not dialog:
            return
        await backend._notify_end(dialog, "no usable SDP answer")
        await backend._send_bye(dialog)
