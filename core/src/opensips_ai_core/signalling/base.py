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
    """A call is refused with a SIP status (e.g. 488 no common codec, 415 no body)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


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

    async def new_call(self, info: CallInfo, offer: SessionDescription) -> SessionDescription:
        """Accept a call: return the SDP answer, or raise SignallingError(code, reason)."""
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
