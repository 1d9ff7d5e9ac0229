"""An asyncio client for OpenSIPS MI over `mi_datagram`: JSON-RPC 2.0 in UDP datagrams.

One UDP socket for every call; each request carries an id and its reply (sent
back to our port) is matched by that id, so concurrent calls never mix. A call
that gets no reply within `timeout` raises `MiTimeoutError`; a JSON-RPC error
reply raises `MiError(code, message)`. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any

log = logging.getLogger("signalling.opensips.mi")

MAX_REPLY_BYTES = 65535


class MiError(Exception):
    """OpenSIPS answered the MI command with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"MI error {code}: {message}")
        self.code = code
        self.message = message


class MiTimeoutError(MiError):
    """No reply in time: OpenSIPS is down, not listening, or the datagram was lost."""

    def __init__(self, method: str, timeout: float, target: tuple[str, int]) -> None:
        super().__init__(-1, f"no reply to {method} from udp:{target[0]}:{target[1]} "
                             f"within {timeout:.1f} s")


class _MiProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: MiClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.client._on_reply(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: OpenSIPS is not (yet) listening; calls will time out.
        log.debug("MI socket error: %s", exc)


class MiClient:
    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.target = (host, port)
        self.timeout = timeout
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self.malformed_replies = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _MiProtocol(self), remote_addr=self.target)

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def call(self, method: str, params: dict[str, Any] | list[Any] | None = None,
                   timeout: float | None = None) -> Any:
        """Run one MI command; return its `result` or raise MiError / MiTimeoutError."""
        if self._transport is None:
            await self.start()
        assert self._transport is not None
        request_id = next(self._ids)
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if params is not None:
            request["params"] = params
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        wait = timeout if timeout is not None else self.timeout
        try:
            self._transport.sendto(json.dumps(request).encode())
            return await asyncio.wait_for(future, wait)
        except TimeoutError:
            raise MiTimeoutError(method, wait, self.target) from None
        finally:
            self._pending.pop(request_id, None)

    def _on_reply(self, data: bytes) -> None:
        try:
            reply = json.loads(data)
            request_id = reply["id"]
        except (ValueError, KeyError, TypeError):
            self.malformed_replies += 1
            log.warning("MI: unparseable reply of %d bytes dropped", len(data))
            return
        future = self._pending.get(request_id) if isinstance(request_id, int) else None
        if future is None or future.done():
            return  # a late reply to a call that timed out
        error = reply.get("error")
        if error is not None:
            if isinstance(error, dict):
                code, message = error.get("code", 0), str(error.get("message", ""))
            else:
                code, message = 0, str(error)
            future.set_exception(MiError(code if isinstance(code, int) else 0, message))
            return
        future.set_result(reply.get("result"))
