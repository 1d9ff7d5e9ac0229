"""The contract between a signalling backend and the call manager.

A backend (OpenSIPS B2B via MI/events, or the direct SIP UAS) turns SIP into
three calls on a `CallHandler` and offers `hangup`. Everything after the SDP
answer is shared by both backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from opensips_ai_core.signalling.sdp import SessionDescription


class SignallingError(Exception):
    """A call is refused with a SIP status (e.g. 488 no common codec, 503 at capacity).

    `retry_after` (seconds) becomes a Retry-After header where the backend can send one.
    """

    def __init__(self, code: int, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class CallInfo:
    """Who calls whom, as signalling saw it (for logs, the dialogue and metrics)."""

    call_id: str          # the backend's key: B2B key for OpenSIPS, SIP Call-ID for direct SIP
    caller: str           # From URI
    callee: str           # To/request URI
    backend: str          # "opensips" or "sip"
    sip_call_id: str = ""


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
