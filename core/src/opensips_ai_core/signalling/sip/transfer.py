"""Blind transfer of a direct-SIP call: an in-dialog REFER (RFC 3515) and its NOTIFYs.

`ReferTransfers.transfer` sends the REFER (Refer-To, Referred-By) inside the call's
dialog; the NOTIFYs of its implicit subscription (`signalling/refer.py` reads their
sipfrag) are answered 200, other in-dialog NOTIFYs 481; a 2xx sipfrag ends the call
with a BYE. A call that ends meanwhile ends its transfer with 481.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from opensips_ai_core.signalling.base import TransferResult
from opensips_ai_core.signalling.headers import header_uri
from opensips_ai_core.signalling.refer import ReferSubscription, is_refer_notify
from opensips_ai_core.signalling.sip.transactions import Dialog, ServerTransaction
from voice_common.devlogger import get_development_logger

if TYPE_CHECKING:
    from opensips_ai_core.signalling.sip.uas import DirectSipBackend

log = get_development_logger("signalling.sip")


class ReferTransfers:
    """The transfers under way of a `DirectSipBackend` (which routes NOTIFYs here)."""

    def __init__(self, backend: DirectSipBackend) -> None:
        self.backend = backend
        self._refers: dict[str, ReferSubscription] = {}  # call id → its REFER's subscription

    async def transfer(self, call_id: str, target: str, *,
                       timeout_s: float = 30.0) -> TransferResult:
        """REFER the caller to `target` inside the call's dialog; on a 2xx sipfrag, BYE.

        The REFER carries Refer-To and Referred-By; the 202 is followed by NOTIFYs
        (Event: refer, message/sipfrag) that `on_notify` answers 200 and feeds here.
        """
        backend = self.backend
        dialog = backend._dialogs.get(call_id)
        if dialog is None or not dialog.answered:
            return TransferResult(False, 481, "no such answered call")
        if call_id in self._refers:
            return TransferResult(False, 491, "a transfer of this call is already under way")
        subscription = ReferSubscription()
        self._refers[call_id] = subscription
        try:
            if not dialog.confirmed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dialog.confirmed.wait(),
                                           backend.timers.transaction_timeout)
            if backend._dialogs.get(call_id) is not dialog:
                return TransferResult(False, 481, "the call ended")
            referred_by = header_uri(dialog.local_uri)
            log.info("transfer of %s to %s: REFER", call_id, target)
            response = await backend._in_dialog_request(dialog, "REFER", [
                ("Refer-To", f"<{target}>"), ("Referred-By", f"<{referred_by}>"),
                ("Contact", backend.contact)])
            if response is None or response.status is None:
                return TransferResult(False, None, "no response to the REFER")
            if response.status >= 300:
                return TransferResult(False, response.status,
                                      f"REFER refused: {response.status} {response.reason}")
            outcome = await subscription.outcome(timeout_s)
            if not outcome.ok:
                return outcome
        finally:
            self._refers.pop(call_id, None)
            subscription.final.cancel()
        log.info("transfer of %s to %s succeeded (%s %s): BYE", call_id, target, outcome.code,
                 outcome.reason)
        if backend._dialogs.get(call_id) is dialog:
            backend._end_dialog(dialog)
            await backend._send_bye(dialog)
        return outcome

    def on_notify(self, dialog: Dialog, transaction: ServerTransaction) -> None:
        request = transaction.request
        subscription = self._refers.get(dialog.call_id)
        if subscription is None or not is_refer_notify(request.method, request.get("Event")):
            self.backend._reply(transaction, 481, reason="Subscription Does Not Exist")
            return
        self.backend._reply(transaction, 200)
        subscription.on_sipfrag(request.body, request.get("Subscription-State") or "")

    def call_ended(self, call_id: str) -> None:
        """The call's dialog ended: a transfer under way cannot finish now."""
        refer = self._refers.get(call_id)
        if refer is not None and not refer.final.done():
            refer.final.set_result((481, "the call ended during the transfer"))
