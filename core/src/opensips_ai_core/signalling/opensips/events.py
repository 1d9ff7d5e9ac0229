"""The E_UA_SESSION event listener: JSON-RPC 2.0 notifications from `event_datagram`.

OpenSIPS sends one notification per UDP datagram, from varying source ports, so
the listener accepts any sender (it binds to the address the subscription names,
normally 127.0.0.1). Datagrams that are not a well-formed E_UA_SESSION
notification are dropped and counted per reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opensips_ai_core.signalling.headers import canonical_name

log = logging.getLogger("signalling.opensips.events")

EVENT_NAME = "E_UA_SESSION"
MAX_EVENT_BYTES = 65535


@dataclass(frozen=True)
class UaSessionEvent:
    """The params of one E_UA_SESSION notification, in the order OpenSIPS 3.6 sends them."""

    key: str
    event_type: str            # NEW, UPDATED, TERMINATED, ANSWERED, ...
    entity_type: str           # UAS / UAC
    status: int                # 0 for requests, the reply code for ANSWERED
    reason: str | None
    method: str
    body: str
    headers: str               # the SIP headers, CRLF separated (flag h)
    extra_params: Any = None

    def header(self, name: str) -> str | None:
        """The first header with this name (case-insensitive, compact forms understood)."""
        wanted = canonical_name(name).lower()
        for line in self.headers.replace("\r\n", "\n").split("\n"):
            header, colon, value = line.partition(":")
            if colon and canonical_name(header).lower() == wanted:
                return value.strip()
        return None


@dataclass
class EventStats:
    received: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def parse_event(data: bytes) -> UaSessionEvent:
    """Parse one datagram; raise ValueError naming what is wrong."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise ValueError("not a JSON-RPC 2.0 object")
    if message.get("method") != EVENT_NAME:
        raise ValueError(f"not an {EVENT_NAME} notification: {message.get('method')!r}")
    params = message.get("params")
    if not isinstance(params, dict):
        raise ValueError("params is not an object")
    key, event_type = params.get("key"), params.get("event_type")
    if not isinstance(key, str) or not key or not isinstance(event_type, str):
        raise ValueError("key or event_type missing")
    status = params.get("status") or 0
    if not isinstance(status, int):
        try:
            status = int(status)
        except (TypeError, ValueError):
            raise ValueError(f"status {status!r} is not a number") from None
    return UaSessionEvent(
        key=key, event_type=event_type.upper(),
        entity_type=str(params.get("entity_type") or ""), status=status,
        reason=params.get("reason"), method=str(params.get("method") or "").upper(),
        body=str(params.get("body") or ""), headers=str(params.get("headers") or ""),
        extra_params=params.get("extra_params"),
    )


class _EventProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: EventListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.listener._on_datagram(data)


class EventListener:
    """Receives E_UA_SESSION notifications on udp HOST:PORT and hands each to `on_event`."""

    def __init__(self, host: str, port: int, on_event: Callable[[UaSessionEvent], None]) -> None:
        self.host = host
        self.requested_port = port
        self.on_event = on_event
        self.stats = EventStats()
        self._transport: asyncio.DatagramTransport | None = None
        self._logged: set[str] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _EventProtocol(self), local_addr=(self.host, self.requested_port))

    @property
    def port(self) -> int:
        if self._transport is None:
            return self.requested_port
        return self._transport.get_extra_info("sockname")[1]

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _on_datagram(self, data: bytes) -> None:
        self.stats.received += 1
        try:
            if len(data) > MAX_EVENT_BYTES:
                raise ValueError(f"{len(data)} bytes")
            event = parse_event(data)
        except ValueError as error:
            kind = str(error).split(":")[0]
            self.stats.dropped[kind] = self.stats.dropped.get(kind, 0) + 1
            level = logging.DEBUG if kind in self._logged else logging.WARNING
            self._logged.add(kind)
            log.log(level, "dropped an event datagram (%s)", error)
            return
        self.on_event(event)
