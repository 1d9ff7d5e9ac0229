"""Blind transfer by REFER (RFC 3515) from inside the bot's dialog: the subscription side.

A REFER creates an implicit subscription to the `refer` event: the transferee sends
NOTIFYs whose `message/sipfrag` body is the status line of the new call it placed
("SIP/2.0 100 Trying", then "SIP/2.0 200 OK" or a failure). `ReferSubscription`
follows those NOTIFYs; the backend answers each with 200 and waits for the final one.
Both backends use it: the direct-SIP UAS with its own NOTIFYs, the OpenSIPS backend
with the NOTIFYs that ua_session events carry.
"""

from __future__ import annotations

import asyncio
import re

from opensips_ai_core.signalling.base import TransferResult
from opensips_ai_core.signalling.headers import header_params

_SIPFRAG_STATUS = re.compile(r"^\s*SIP/2\.0\s+([1-6][0-9]{2})\b(.*)$", re.MULTILINE)


def sipfrag_status(body: bytes) -> tuple[int, str] | None:
    """The status code and reason of a message/sipfrag body, or None if it has none."""
    match = _SIPFRAG_STATUS.search(body.decode("utf-8", errors="replace"))
    if match is None:
        return None
    return int(match.group(1)), match.group(2).strip()


def is_refer_notify(method: str | None, event: str | None) -> bool:
    """A NOTIFY of the refer event package (Event: refer, optionally ;id=CSeq)."""
    package = (event or "").split(";")[0].strip().lower()
    return method == "NOTIFY" and package == "refer"


class ReferSubscription:
    """The implicit subscription of one REFER; `final` resolves with the outcome."""

    def __init__(self) -> None:
        self.final: asyncio.Future[tuple[int, str]] = \
            asyncio.get_running_loop().create_future()
        self.progress: list[int] = []   # every sipfrag status seen, in order

    def on_sipfrag(self, body: bytes, subscription_state: str) -> None:
        """A NOTIFY's sipfrag and Subscription-State. A final status or a terminated
        subscription resolves `final`; a terminated one without a final status is a failure."""
        status = sipfrag_status(body)
        state = subscription_state.split(";", maxsplit=1)[0].strip().lower()
        if status is not None:
            self.progress.append(status[0])
        if self.final.done():
            return
        if status is not None and status[0] >= 200:
            self.final.set_result(status)
        elif state == "terminated":
            reason = header_params(subscription_state).get("reason", "")
            self.final.set_result((487, f"subscription terminated ({reason or 'no reason'})"))

    async def outcome(self, timeout_s: float) -> TransferResult:
        """The transfer's result from its final NOTIFY (ok on a 2xx), or 408 when none
        came within `timeout_s`."""
        try:
            code, reason = await asyncio.wait_for(asyncio.shield(self.final), timeout_s)
        except TimeoutError:
            return TransferResult(False, 408, f"no final NOTIFY within {timeout_s:g} s")
        if code >= 300:
            return TransferResult(False, code, f"transfer failed: {code} {reason}")
        return TransferResult(True, code, reason)
