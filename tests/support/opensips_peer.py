"""A test double of OpenSIPS 3.6.8's B2B UA session interface, on the real wire format.

OpenSIPS cannot be installed here (it is in no reachable registry), so this peer
is built from the documented wire format in shared/OPENSIPS-WIRE.md, observed on
a real OpenSIPS 3.6.8. It speaks real UDP on 127.0.0.1:

- an MI server like `mi_datagram`: JSON-RPC 2.0 requests in, the reply to the
  sender's port; `event_subscribe` (positional or named params, expire 0
  unsubscribes), `ua_session_reply` (reason mandatory → -32602 "Invalid params";
  unknown key or nothing to answer → 500 "Failed to send reply"),
  `ua_session_terminate` (not answered → 500 "Failed to terminate session"),
  `ua_session_update`, `ua_session_list` (404 "Entity not found"), anything else
  → -32601;
- an event sender like `event_datagram`: one JSON-RPC notification per datagram,
  fields in OpenSIPS' order (key, event_type, entity_type, status, reason, method,
  body, headers, extra_params), each from a fresh socket (a new source port), only
  to subscriptions that have not expired.

Session states follow the document where it names them (5 = established,
7 = rejected/cancelled); 1 is this double's name for "waiting for the engine".
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = "127.0.0.1"
EVENT = "E_UA_SESSION"
STATE_WAITING, STATE_ESTABLISHED, STATE_REJECTED = 1, 5, 7
SIPP_OFFER = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n"
)


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


INVALID_PARAMS = RpcError(-32602, "Invalid params")


@dataclass
class PeerSession:
    key: str
    call_id: str
    headers: str
    state: int = STATE_WAITING
    pending: str | None = "INVITE"      # the request waiting for the engine's reply
    cseq: int = 1
    replies: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Subscription:
    socket: str
    expires_at: float


class _MiProtocol(asyncio.DatagramProtocol):
    def __init__(self, peer: OpenSipsPeer) -> None:
        self.peer = peer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        reply = self.peer._handle_datagram(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class OpenSipsPeer:
    def __init__(self, mi_port: int = 0, *, answering: bool = True) -> None:
        self.requested_port = mi_port
        self.answering = answering          # False: bound but silent, like a stuck process
        self.subscriptions: dict[str, Subscription] = {}
        self.subscribe_calls: list[tuple[float, Any]] = []
        self.sessions: dict[str, PeerSession] = {}
        self.mi_log: list[tuple[str, Any, dict[str, Any]]] = []  # (method, params, reply)
        self.terminated: list[str] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._changed = asyncio.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> OpenSipsPeer:
        self._loop = asyncio.get_running_loop()
        self._transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _MiProtocol(self), local_addr=(LOOPBACK, self.requested_port))
        return self

    @property
    def mi_port(self) -> int:
        assert self._transport is not None
        return self._transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            await asyncio.sleep(0.01)  # the socket closes on the loop's next turn

    # ---- MI ------------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _handle_datagram(self, data: bytes) -> bytes | None:
        if not self.answering:
            return None
        try:
            request = json.loads(data)
            method, request_id = request["method"], request.get("id")
        except (ValueError, KeyError, TypeError):
            return json.dumps({"jsonrpc": "2.0", "error": {"code": -32700,
                                                           "message": "Parse error"},
                               "id": None}).encode()
        params = request.get("params")
        try:
            reply: dict[str, Any] = {"jsonrpc": "2.0", "result": self._dispatch(method, params),
                                     "id": request_id}
        except RpcError as error:
            reply = {"jsonrpc": "2.0", "error": {"code": error.code, "message": error.message},
                     "id": request_id}
        self.mi_log.append((method, params, reply))
        self._notify()
        return json.dumps(reply).encode()

    def _dispatch(self, method: str, params: Any) -> Any:
        handlers = {
            "event_subscribe": self._event_subscribe,
            "ua_session_reply": self._ua_session_reply,
            "ua_session_terminate": self._ua_session_terminate,
            "ua_session_update": self._ua_session_update,
            "ua_session_list": self._ua_session_list,
        }
        if method not in handlers:
            raise RpcError(-32601, "Method not found")
        return handlers[method](params)

    @staticmethod
    def _named(params: Any, names: tuple[str, ...], required: int) -> list[Any]:
        """Positional or named params → a list in `names` order; -32602 when short."""
        if isinstance(params, list):
            values = list(params) + [None] * (len(names) - len(params))
        elif isinstance(params, dict):
            values = [params.get(name) for name in names]
        elif params is None:
            values = [None] * len(names)
        else:
            raise INVALID_PARAMS
        if any(v is None for v in values[:required]) or len(values) > len(names):
            raise INVALID_PARAMS
        return values

    def _event_subscribe(self, params: Any) -> str:
        event, target, expire = self._named(params, ("event", "socket", "expire"), 2)
        if event != EVENT or not str(target).startswith("udp:"):
            raise RpcError(500, "Cannot subscribe")
        expire = 3600 if expire is None else int(expire)
        self.subscribe_calls.append((self._now(), params))
        if expire == 0:
            self.subscriptions.pop(target, None)
        else:
            self.subscriptions[target] = Subscription(target, self._now() + expire)
        return "OK"

    def _ua_session_reply(self, params: Any) -> str:
        if not isinstance(params, dict):
            raise INVALID_PARAMS
        key, method, code, reason = (params.get(n) for n in ("key", "method", "code", "reason"))
        if key is None or method is None or code is None or reason is None:
            raise INVALID_PARAMS
        try:
            code = int(code)
        except (TypeError, ValueError):
            raise INVALID_PARAMS from None
        session = self.sessions.get(key)
        if session is None or session.pending is None:
            raise RpcError(500, "Failed to send reply")
        session.replies.append(dict(params))
        if code >= 200:
            session.pending = None
            if code < 300:
                session.state = STATE_ESTABLISHED
            elif session.state != STATE_ESTABLISHED:
                session.state = STATE_REJECTED  # a refused re-INVITE keeps the call
        return "OK"

    def _ua_session_terminate(self, params: Any) -> str:
        if not isinstance(params, dict) or not params.get("key"):
            raise INVALID_PARAMS
        session = self.sessions.get(params["key"])
        if session is None or session.state != STATE_ESTABLISHED:
            raise RpcError(500, "Failed to terminate session")
        # OpenSIPS sends the BYE; its 200 raises no event (the entity is already gone).
        del self.sessions[session.key]
        self.terminated.append(session.key)
        return "OK"

    def _ua_session_update(self, params: Any) -> str:
        if not isinstance(params, dict) or not params.get("key") or not params.get("method"):
            raise INVALID_PARAMS
        if params["key"] not in self.sessions:
            raise RpcError(500, "Failed to send request")
        return "OK"

    def _ua_session_list(self, params: Any) -> Any:
        key = params.get("key") if isinstance(params, dict) else None
        if key is None:
            return [{"key": s.key, "state": s.state} for s in self.sessions.values()]
        session = self.sessions.get(key)
        if session is None:
            raise RpcError(404, "Entity not found")
        return {"key": session.key, "state": session.state}

    # ---- waiting ------------------------------------------------------------------------

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        if self._loop is not None:
            self._loop.create_task(wake())

    async def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> Any:
        async def waiting() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

        try:
            return await asyncio.wait_for(waiting(), timeout)
        except TimeoutError:
            raise AssertionError(f"peer: timed out after {timeout} s waiting for {what}") from None

    async def wait_reply(self, key: str, count: int = 1, timeout: float = 10.0
                         ) -> dict[str, Any]:
        """The `count`-th ua_session_reply accepted for this key (1 = the first)."""
        def replies() -> list[dict[str, Any]]:
            return [p for m, p, r in self.mi_log
                    if m == "ua_session_reply" and isinstance(p, dict) and p.get("key") == key
                    and "result" in r]

        await self.wait_for(lambda: len(replies()) >= count, timeout, f"reply {count} to {key}")
        return replies()[count - 1]

    def live_subscriptions(self) -> list[str]:
        now = self._now()
        return [s.socket for s in self.subscriptions.values() if s.expires_at > now]

    # ---- events -------------------------------------------------------------------------

    def send_event(self, key: str, event_type: str, method: str, body: str = "",
                   headers: str = "", *, status: int = 0, reason: str | None = None,
                   extra_params: Any = None) -> int:
        """Send one E_UA_SESSION notification to each live subscriber; return how many."""
        params = {  # insertion order = OpenSIPS 3.6's field order
            "key": key, "event_type": event_type, "entity_type": "UAS", "status": status,
            "reason": reason, "method": method, "body": body, "headers": headers,
            "extra_params": extra_params,
        }
        data = json.dumps({"jsonrpc": "2.0", "method": EVENT, "params": params}).encode()
        return self.send_raw(data)

    def send_raw(self, data: bytes) -> int:
        targets = self.live_subscriptions()
        for target in targets:
            _, host, port = target.split(":")
            # A fresh socket per datagram: OpenSIPS' events come from varying source ports.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.bind((LOOPBACK, 0))
                sender.sendto(data, (host, int(port)))
        return len(targets)

    def call_headers(self, call_id: str, cseq: int, method: str, to_tag: str | None = None,
                     content_length: int = 0) -> str:
        """Headers as SIPp sends them through OpenSIPS (CRLF after every line)."""
        to = "ai <sip:ai@127.0.0.1:5060>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-9574-1-0",
            "From: sipp <sip:sipp@127.0.0.1:5070>;tag=9574SIPpTag091",
            f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
            "Contact: sip:sipp@127.0.0.1:5070", "Max-Forwards: 70", "Subject: Performance Test",
        ]
        if content_length:
            lines += ["Content-Type: application/sdp", f"Content-Length:   {content_length}"]
        else:
            lines.append("Content-Length: 0")
        return "".join(f"{line}\r\n" for line in lines)

    def new_call(self, body: str = SIPP_OFFER, method: str = "INVITE") -> str:
        """A caller's INVITE reaches ua_session_server_init: NEW. Returns the B2B key."""
        parts = (random.randint(100, 999), random.randint(100, 999),
                 random.randint(10**9, 2 * 10**9), random.randint(10**9, 2 * 10**9))
        key = "B2B." + ".".join(map(str, parts))
        call_id = f"{random.randint(1, 9999)}-{random.randint(1, 99999)}@127.0.0.1"
        self.sessions[key] = PeerSession(key, call_id, "", pending=method)
        self.send_event(key, "NEW", method, body,
                        self.call_headers(call_id, 1, method, None, len(body)))
        return key

    def reinvite(self, key: str, body: str) -> None:
        session = self.sessions[key]
        session.cseq += 1
        session.pending = "INVITE"
        self.send_event(key, "UPDATED", "INVITE", body,
                        self.call_headers(session.call_id, session.cseq, "INVITE", key,
                                          len(body)))

    def bye(self, key: str) -> None:
        """The caller hangs up; OpenSIPS answers the BYE itself and reports TERMINATED."""
        session = self.sessions.pop(key)
        self.send_event(key, "TERMINATED", "BYE", "",
                        self.call_headers(session.call_id, session.cseq + 1, "BYE", key))

    def cancel(self, key: str) -> None:
        """The caller cancels: OpenSIPS answers "200 canceling" but sends no 487."""
        session = self.sessions[key]
        self.send_event(key, "TERMINATED", "CANCEL", "",
                        self.call_headers(session.call_id, 1, "CANCEL"))
