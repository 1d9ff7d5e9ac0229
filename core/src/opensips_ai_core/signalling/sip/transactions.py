"""Timers, statistics and the per-transaction / per-dialog state of the direct SIP UAS."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from opensips_ai_core.signalling.sdp import SessionDescription
from opensips_ai_core.signalling.sip.message import SipMessage

Address = tuple[str, int]
BRANCH_MAGIC = "z9hG4bK"


@dataclass(frozen=True)
class SipTimers:
    """RFC 3261 timers. Tests shrink T1 so that 64*T1 give-ups take seconds, not 32 s."""

    t1: float = 0.5
    t2: float = 4.0

    @property
    def transaction_timeout(self) -> float:
        return 64 * self.t1


@dataclass
class SipStats:
    """What the UAS saw; malformed datagrams are counted per kind."""

    datagrams: int = 0
    requests: int = 0
    responses_received: int = 0
    responses_sent: int = 0
    retransmissions_sent: int = 0
    retransmissions_absorbed: int = 0
    bad_requests_answered: int = 0
    malformed_dropped: int = 0
    stray_responses: int = 0
    calls: int = 0
    malformed: dict[str, int] = field(default_factory=dict)


@dataclass
class ServerTransaction:
    """A request we answer; keeps the last response to absorb retransmissions."""

    key: tuple[str, str, str]
    request: SipMessage
    reply_to: Address
    source: Address
    last_response: bytes | None = None
    final_code: int | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    retransmitter: asyncio.Task[None] | None = None


@dataclass
class Dialog:
    """One call's dialog as the UAS (RFC 3261 12.1.1)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str                   # our To header value, with our tag
    remote_uri: str                  # the caller's From header value, with its tag
    remote_target: str               # the caller's Contact URI
    route_set: list[str]             # Record-Route values in received order
    remote_cseq: int
    invite_key: tuple[str, str, str]
    source: Address
    local_cseq: int = 0
    state: str = "early"             # early → confirmed → terminated
    answered: bool = False           # a 2xx was sent for the initial INVITE
    pending_ack_cseq: int | None = None
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    handler_task: asyncio.Task[None] | None = None
    local_sdp: SessionDescription | None = None
    awaiting_answer: bool = False    # a late offer: our offer went in the 200, the ACK answers


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return f"{BRANCH_MAGIC}-{secrets.token_hex(8)}"


def backoff_intervals(timers: SipTimers):
    """T1, 2*T1, ... capped at T2: the retransmission intervals of RFC 3261 17.1.2.2/13.3.1.4."""
    interval = timers.t1
    while True:
        yield interval
        interval = min(interval * 2, timers.t2)
