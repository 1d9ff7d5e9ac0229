"""A recording CallHandler that answers with the real `offer_answer.negotiate`, and shared helpers."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opensips_ai_core.signalling.base import CallInfo
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.offer_answer import NegotiatedMedia, make_offer, negotiate
from opensips_ai_core.signalling.sdp import SessionDescription
from voice_testkit.procs import LOOPBACK


@dataclass
class RecordingHandler:
    """Answers calls like the call manager would (negotiate + a fake RTP port) and records.

    `answer_delay` keeps new_call pending (to test CANCEL); `refuse` makes it raise.
    """

    answer_delay: float = 0.0
    refuse: Exception | None = None   # SignallingError(code) or any crash
    calls: dict[str, CallInfo] = field(default_factory=dict)
    media: dict[str, NegotiatedMedia] = field(default_factory=dict)
    offers: list[SessionDescription] = field(default_factory=list)
    updates: list[tuple[str, NegotiatedMedia]] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)
    cancelled_new_calls: list[str] = field(default_factory=list)
    _ports: itertools.count = field(default_factory=lambda: itertools.count(35000, 2))
    _versions: dict[str, int] = field(default_factory=dict)

    late_offers: dict[str, SessionDescription] = field(default_factory=dict)
    completed: dict[str, NegotiatedMedia] = field(default_factory=dict)

    async def new_call(self, info: CallInfo,
                       offer: SessionDescription | None) -> SessionDescription:
        self.calls[info.call_id] = info
        if offer is None:  # a late offer: ours, answered in the ACK
            ours = make_offer(LOOPBACK, next(self._ports), session_id=4242)
            self.late_offers[info.call_id] = ours
            return ours
        self.offers.append(offer)
        try:
            if self.answer_delay:
                await asyncio.sleep(self.answer_delay)
        except asyncio.CancelledError:
            self.cancelled_new_calls.append(info.call_id)
            raise
        if self.refuse is not None:
            raise self.refuse
        answer, media = negotiate(offer, LOOPBACK, next(self._ports), session_id=4242)
        self.media[info.call_id] = media
        self._versions[info.call_id] = 1
        return answer

    async def complete_call(self, call_id: str, answer: SessionDescription) -> None:
        ours = self.late_offers[call_id]
        _, media = negotiate(answer, LOOPBACK, ours.media[0].port)
        self.completed[call_id] = media
        self.media[call_id] = media
        self._versions[call_id] = 1

    async def update_call(self, call_id: str, offer: SessionDescription) -> SessionDescription:
        if call_id not in self.media:
            raise SignallingError(481, "Call/Transaction Does Not Exist")
        self._versions[call_id] += 1
        answer, media = negotiate(offer, LOOPBACK, self.media[call_id].remote_port,
                                  session_version=self._versions[call_id], session_id=4242)
        self.updates.append((call_id, media))
        return answer

    async def end_call(self, call_id: str, reason: str) -> None:
        self.ended[call_id] = reason


async def eventually(predicate: Callable[[], object], timeout: float = 10.0,
                     message: str = "condition") -> object:
    """Await until predicate() is truthy (the event loop keeps running meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(0.02)


SIPP_DIR = Path(__file__).resolve().parents[2] / "data" / "sipp"
