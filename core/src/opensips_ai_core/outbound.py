"""Outbound calls placed through the HTTP API (`POST /calls`), on either backend.

`OutboundCalls.place` validates the request (`DialRequest`), checks that a call could
be taken now, and dials in the background; the answered call then runs through the
call manager like an inbound one (its bot may be overridden per call). Each placed
call keeps a small record for `GET /calls/{id}`: dialing → ringing → answered →
ended, or failed with the SIP code. `DELETE /calls/{id}` cancels a ringing call or
hangs up an answered one. Records are kept for `KEEP_S` after the call ended.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig
from opensips_ai_core.signalling.base import OutboundRequest
from opensips_ai_core.signalling.errors import SignallingError
from voice_common import get_development_logger

log = get_development_logger("core.outbound")

KEEP_S = 3600.0
MAX_RECORDS = 1000
_SIP_URI = re.compile(r"^sips?:[^\s<>\"'\\]+$", re.IGNORECASE)


class OutboundRequestError(ValueError):
    """A request that cannot be placed: the HTTP API answers 400 with this one line."""


class DialRequest(BaseModel):
    """The JSON body of POST /calls."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(max_length=256)
    from_: str | None = Field(None, alias="from", max_length=256)
    caller_id: str | None = Field(None, max_length=64)
    max_ring_s: float = Field(30.0, gt=0, le=300)
    bot: dict[str, Any] = Field(default_factory=dict)

    @field_validator("to", "from_")
    @classmethod
    def _sip_uri(cls, value: str | None) -> str | None:
        if value is not None and not _SIP_URI.match(value):
            raise ValueError("must be a sip: or sips: URI")
        return value

    @field_validator("caller_id")
    @classmethod
    def _display_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.isprintable() or '"' in value or "\\" in value):
            raise ValueError("must be printable, without quotes or backslashes")
        return value


def parse_dial_request(body: object, bot: BotConfig) -> tuple[OutboundRequest, BotConfig]:
    """The request and the call's bot (the core's, with the overrides); or one-line error."""
    if not isinstance(body, dict):
        raise OutboundRequestError("the body must be a JSON object")
    try:
        request = DialRequest.model_validate(body)
    except ValidationError as err:
        raise OutboundRequestError(_one_line(err)) from None
    try:
        call_bot = BotConfig.model_validate({**bot.model_dump(), **request.bot}) \
            if request.bot else bot
    except ValidationError as err:
        raise OutboundRequestError("bot: " + _one_line(err)) from None
    return OutboundRequest(to=request.to, from_uri=request.from_, caller_id=request.caller_id,
                           max_ring_s=request.max_ring_s), call_bot


def _one_line(err: ValidationError) -> str:
    problems = []
    for item in err.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "body"
        problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


class Dialer(Protocol):
    async def dial(self, call_id: str, request: OutboundRequest,
                   progress: Any = None) -> int: ...


class CallControl(Protocol):
    """What this needs of the call manager."""

    backend: Any
    calls: dict[str, Any]

    def refusal(self) -> SignallingError | None: ...
    def override_bot(self, call_id: str, bot: BotConfig) -> None: ...
    async def hangup(self, call_id: str) -> None: ...


@dataclass
class OutboundCall:
    id: str
    to: str
    state: str = "dialing"        # dialing → ringing → answered → ended; or failed
    code: int | None = None
    reason: str = ""
    created: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    task: asyncio.Task[None] | None = None

    def snapshot(self) -> dict[str, object]:
        return {"call_id": self.id, "to": self.to, "state": self.state, "code": self.code,
                "reason": self.reason, "created": self.created,
                "answered_at": self.answered_at, "ended_at": self.ended_at}


class OutboundCalls:
    def __init__(self, manager: CallControl, bot: BotConfig) -> None:
        self.manager = manager
        self.bot = bot
        self.records: dict[str, OutboundCall] = {}

    @property
    def supported(self) -> bool:
        return hasattr(self.manager.backend, "dial")

    def place(self, body: object) -> OutboundCall:
        """Validate and start dialing; OutboundRequestError (400) or SignallingError (503)."""
        request, call_bot = parse_dial_request(body, self.bot)
        if not self.supported:
            raise SignallingError(501, "the signalling backend cannot place calls")
        if (refused := self.manager.refusal()) is not None:
            raise refused
        self._forget_old()
        call_id = f"{secrets.token_hex(12)}@opensips-ai-core"
        record = OutboundCall(call_id, request.to)
        self.records[call_id] = record
        if call_bot is not self.bot:
            self.manager.override_bot(call_id, call_bot)
        record.task = asyncio.get_running_loop().create_task(
            self._dial(record, request), name=f"dial:{call_id}")
        log.info("Outbound call %s to %s placed", call_id, request.to)
        return record

    async def _dial(self, record: OutboundCall, request: OutboundRequest) -> None:
        def progress(status: int, reason: str) -> None:
            if status in (180, 183) and record.state == "dialing":
                record.state = "ringing"
            record.code, record.reason = status, reason

        try:
            code = await self.manager.backend.dial(record.id, request, progress)
        except SignallingError as err:
            record.state, record.code, record.reason = "failed", err.code, err.reason
            record.ended_at = time.time()
            metrics.OUTBOUND_CALLS.labels(str(err.code)).inc()
            log.info("Outbound call %s to %s failed: %d %s", record.id, record.to, err.code,
                     err.reason)
            return
        except asyncio.CancelledError:
            record.state, record.reason = "failed", "cancelled"
            record.ended_at = time.time()
            raise
        except Exception as err:
            log.exception("Outbound call %s failed in signalling", record.id)
            record.state, record.reason = "failed", f"{type(err).__name__}: {err}"
            record.ended_at = time.time()
            metrics.OUTBOUND_CALLS.labels("error").inc()
            return
        record.state, record.code, record.answered_at = "answered", code, time.time()
        metrics.OUTBOUND_CALLS.labels("answered").inc()
        log.info("Outbound call %s to %s answered", record.id, record.to)

    def get(self, call_id: str) -> OutboundCall | None:
        record = self.records.get(call_id)
        if record is not None and record.state == "answered" \
                and call_id not in self.manager.calls:
            record.state, record.ended_at = "ended", time.time()
        return record

    async def hang_up(self, call_id: str) -> OutboundCall | None:
        """Cancel a call still ringing, or hang up an answered one."""
        record = self.get(call_id)
        if record is None:
            return None
        if record.state in ("dialing", "ringing"):
            cancel = getattr(self.manager.backend, "cancel_dial", None)
            if cancel is not None:
                cancel(call_id)  # CANCEL on the wire; the dial task ends with 487
            elif record.task is not None:
                record.task.cancel()
        elif record.state == "answered":
            await self.manager.hangup(call_id)
            record.state, record.ended_at, record.reason = "ended", time.time(), "hung up"
        return record

    def _forget_old(self) -> None:
        now = time.time()
        for call_id, record in list(self.records.items()):
            if record.ended_at is not None and now - record.ended_at > KEEP_S:
                del self.records[call_id]
        while len(self.records) >= MAX_RECORDS:
            oldest = next(iter(self.records))
            del self.records[oldest]
