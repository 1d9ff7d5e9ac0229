"""The signalling error: a call refused with a SIP status, shared by the SDP layer and
both backends."""

from __future__ import annotations


class SignallingError(Exception):
    """A call is refused with a SIP status (e.g. 488 no common codec, 503 at capacity).

    `retry_after` (seconds) becomes a Retry-After header where the backend can send one.
    """

    def __init__(self, code: int, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
