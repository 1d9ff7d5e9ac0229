"""The contract between a signalling backend and the call manager.

A backend (OpenSIPS B2B via MI/events, or the direct SIP UAS) turns SIP into
three calls on a `CallHandler` and offers `hangup`. Everything after the SDP
answer is shared by both backends. A refusal is a `SignallingError` (errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from opensips_ai_core.signalling.sdp import SessionDescription


@dataclass(frozen=True)
class CallInfo:
    """Who calls whom, as signalling saw it (for logs, the dialogue and metrics)."""

    call_id: str          # the backend's key: B2B key for OpenSIPS, SIP Call-ID for direct SIP
    caller: str           # From URI
    callee: str           # To/request URI
    backend: str          # "opensips" or "sip"
    sip_call_id: str = ""
    direction: str = "inbound"   # "outbound" for calls the core placed (POST /calls)


@dataclass(frozen=True)
class TransferResult:
    """How a blind transfer (REFER) ended.

    `ok` is True once the far end reported the transferred call answered (sipfrag 2xx);
    the backend has then ended the bot's call itself (BYE / ua_session_terminate).
    Otherwise `code` is the refusal of the REFER (405, 603...), the sipfrag's final
    status (408, 486...), 408 when no final NOTIFY came in time, or None when the
    REFER got no response at all; the call goes on.
    """

    ok: bool
    code: int | None
    reason: str


@dataclass(frozen=True)
class OutboundRequest:
    """An outbound call to place (POST /calls)."""

    to: str                              # the callee's SIP URI
    from_uri: str | None = None          # our From URI; default the backend's own
    caller_id: str | None = None         # the From display name
    max_ring_s: float = 30.0             # CANCEL after this long without an answer


class CallHandler(Protocol):
    """Implemented by the core's call manager."""

    async def new_call(self, info: CallInfo,
                       offer: SessionDescription | None) -> SessionDescription:
        """Accept a call: return the SDP answer, or raise SignallingError(code, reason).

        `offer` None is an INVITE without SDP (a late offer): the return value is then
        the core's offer, and the answer comes to `complete_call` (from the ACK).
        """
        ...

    async def complete_call(self, call_id: str, answer: SessionDescription) -> None:
        """The answer to the offer `new_call` made for a late-offer INVITE (from its ACK).

        Raises SignallingError when the answer is unusable: the backend ends the call.
        """
        ...

    async def update_call(self, call_id: str, offer: SessionDescription) -> SessionDescription:
        """A re-INVITE (hold/resume, new address): return the fresh SDP answer."""
        ...

    async def end_call(self, call_id: str, reason: str) -> None:
        """The far end hung up (BYE), cancelled, or the dialog died."""
        ...


class SignallingBackend(Protocol):
    name: str

    async def start(self, handler: CallHandler) -> None: ...

    async def hangup(self, call_id: str) -> None:
        """The bot ends an answered call (BYE / ua_session_terminate)."""
        ...

    async def stop(self) -> None: ...


class TransferringBackend(Protocol):
    """A backend that can transfer an answered call (both backends implement it)."""

    async def transfer(self, call_id: str, target: str, *,
                       timeout_s: float = 30.0) -> TransferResult:
        """Blind-transfer the caller of `call_id` to `target` (a SIP URI), RFC 3515 REFER.

        Waits for the outcome (the final NOTIFY, or `timeout_s` without one). On success
        the backend ends the bot's call; `CallHandler.end_call` is not called for it.
        """
        ...


class DialingBackend(Protocol):
    """A backend that can place outbound calls (both backends implement it)."""

    async def dial(self, call_id: str, request: OutboundRequest) -> int:
        """Place a call whose key is `call_id`; return the final status (200 when answered).

        The answered call then runs through `CallHandler.new_call(info, None)` (our SDP
        offer) and `complete_call` (the callee's answer), like an inbound late offer.
        Raises SignallingError for a final failure before the answer.
        """
        ...
