"""A test double of OpenSIPS 3.6.8's B2B UA session interface, on the real wire format.

OpenSIPS is in no registry CI can install from, so this peer plays its part as
docs/opensips.md records it: watched on a real OpenSIPS 3.6.8 with the project's
script (tests/core/signalling/test_opensips_real.py runs the same paths against a real
one when an `opensips` binary is on PATH). It speaks real UDP on 127.0.0.1:

- an MI server like `mi_datagram`: JSON-RPC 2.0 requests in, the reply to the
  sender's port; `uptime` ("Now", "Up since", "Up time": "Up since" names the run),
  `event_subscribe` (positional or named params, expire 0 unsubscribes),
  `ua_session_reply` (reason mandatory -> -32602 "Invalid params" with its "data"
  line; unknown key or no request waiting for that method -> 500 "Failed to send
  reply"), `ua_session_terminate` (unanswered -> 500 "Failed to terminate session";
  a rejected/cancelled session, state 7, is deleted without a BYE),
  `ua_session_update`, `ua_session_list` (the real fields: a UAS session's key is its
  `to_tag`, a UAC session's its `callid`, `dlg` the key's local index; 400 "Bad format
  for b2b key", 404 "Entity not found"), anything else -> -32601;
- an event sender like `event_datagram`: one JSON-RPC notification per datagram,
  fields in OpenSIPS' order (key, event_type, entity_type, status, reason, method,
  body, headers, extra_params), each from a fresh socket (a new source port), only
  to subscriptions that have not expired;
- the SIP reply OpenSIPS builds from `ua_session_reply`, as b2b_entities does: the
  request's Via/From/To/Call-ID/CSeq, then the header text of `ua_build_hdrs` (with a
  `body`: `content_type` copied as a raw header line, default
  `Content-Type: application/sdp\\r\\n`, then `extra_headers`; without a body:
  as many uninitialised bytes as `extra_headers` has, shown as "?"), then
  `Contact: <sip:HOST:PORT>\\r\\n`, the body. A bare `application/sdp` therefore
  yields the broken `application/sdpContact:` line, and a Retry-After passed without
  a body never reaches the caller;
- the script's gate (core/opensips/opensips.cfg): `shv_set` (cfgutils; name, type,
  value required; type "s..." a string, else an int) sets the shared variables and
  `shv_get {name}` reads one (`{"VAR": {"type": "integer", "value": 1}}`, unknown:
  404 "Not found"; without a name all of them), which
  start as the script declares them (`ai_core` 0, `ai_retry_after` 5, `ai_lease` 0,
  `ai_owner` 0)
  with every run; while `ai_core` is not 1 a caller's INVITE is answered `503 Service
  Unavailable (no core)` (`(draining)` at 2) with `Retry-After: <ai_retry_after>` by
  the script itself (`script_replies`): no session, no event; the script's
  `timer_route[ai_gate_lease, 1]`: while `ai_core` is not 0, `ai_lease` loses a
  second each second, and at 0 the gate closes (`ai_core` 0, `ai_retry_after` 5);
- with `sip=True`, a real SIP socket (`sip_port`, sip_script.py) where callers and
  probes (SIPp) get what the script answers: OPTIONS 200 or the gate's 503, the gate's
  503 to an INVITE, or 100 and a session whose `ua_session_reply` replies go back
  to the caller; with the Via's `received`/`rport`, CANCEL (`200 canceling` and
  TERMINATED, or 481), retransmitted INVITEs absorbed and final replies retransmitted
  until the ACK, as tm and the core do (sip_script.py says what it does not play);
- `restart()`: a new run with a new start time that has forgotten every
  subscription, session and shared variable; keys are looked up by their hash and local index only,
  as in b2b_entities, so an old run's key may name a new run's session;
- sessions kept when the gate is open but nobody is subscribed (a caller's NEW goes
  to no one) and when the core that answered them is gone, as the real one keeps them;
- the CANCEL that crosses the engine's 200 OK (`cancel` on an answered session);
- transfer and outbound calls: `ua_session_update` builds the request's headers the
  same way, plus the `Content-Type: application/sdp` OpenSIPS adds after the Contact
  to a request given a body (even an empty one) and no Content-Type; only in an
  established session; the REFER's reply comes as ANSWERED/REJECTED with method
  REFER (`refer_reply`), the caller's NOTIFYs as UPDATED NOTIFY (`notify`), answered
  with `ua_session_reply`; `ua_session_client_start` (ruri, to, from required)
  creates a UAC session keyed by its Call-ID whose replies are
  EARLY/ANSWERED/REJECTED (`callee_reply`; a rejected one is deleted at once);
  `ua_session_terminate` on an unanswered UAC session is a CANCEL.

Session states are b2b_entities' own: 1 new (waiting for the engine),
5 established, 7 terminated (rejected or cancelled).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from voice_testkit.sip_script import SipScript

LOOPBACK = "127.0.0.1"
EVENT = "E_UA_SESSION"
STATE_NEW, STATE_ESTABLISHED, STATE_TERMINATED = 1, 5, 7
# For readers of older tests: state 1 was called "waiting", 7 "rejected".
STATE_WAITING, STATE_REJECTED = STATE_NEW, STATE_TERMINATED
DEFAULT_SDP_CONTENT_TYPE = "Content-Type: application/sdp\r\n"
# b2b_parse_key: PREFIX.hash_index.local_index.<anything>; only the two numbers are used.
KEY_FORMAT = re.compile(r"^B2B\.(\d+)\.(\d+)\.")
# The script's shared variables (modparam("cfgutils", "shvset", ...)) as each run starts.
SCRIPT_SHARED_VARIABLES: dict[str, int | str] = {"ai_core": 0, "ai_retry_after": 5,
                                                  "ai_lease": 0, "ai_owner": 0}
# timer_route[ai_gate_lease, 1]: the gate's lease loses a second each second.
LEASE_TICK_S = 1.0
SERVER = "OpenSIPS (3.6.8 (x86_64/linux))"
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


class InvalidParamsError(RpcError):
    """mi_datagram's -32602, with the "data" line OpenSIPS 3.6.8 adds."""

    data = "Too few or too many parameters"

    def __init__(self) -> None:
        super().__init__(-32602, "Invalid params")


INVALID_PARAMS = InvalidParamsError()


def slot_of(key: str) -> tuple[int, int] | None:
    """(hash_index, local_index) of a B2B key, or None when b2b_parse_key refuses it."""
    match = KEY_FORMAT.match(key)
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass
class PeerSession:
    key: str
    call_id: str
    headers: str                        # the headers of the request waiting for a reply
    state: int = STATE_NEW
    pending: str | None = "INVITE"      # the request waiting for the engine's reply
    cseq: int = 1
    replies: list[dict[str, Any]] = field(default_factory=list)
    sip_replies: list[str] = field(default_factory=list)  # the SIP replies OpenSIPS sent
    entity: str = "UAS"
    requests: list[str] = field(default_factory=list)  # in-dialog requests OpenSIPS sent
    invite: dict[str, Any] | None = None     # a UAC session's ua_session_client_start
    caller: tuple[str, int] | None = None    # where a SIP caller's replies go (sip=True)


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

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        answer = self.peer._handle_datagram(data)
        if answer is None or self.transport is None:
            return
        method, reply = answer
        if method in self.peer.lose_answers:
            return
        delay = self.peer.answer_delay.get(method, 0.0)
        if delay:
            asyncio.get_running_loop().call_later(delay, self._send, reply, addr)
        else:
            self._send(reply, addr)

    def _send(self, reply: bytes, addr: tuple) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class OpenSipsPeer:
    def __init__(self, mi_port: int = 0, *, answering: bool = True,
                 sip_socket: str = "127.0.0.1:5060", sip: bool = False) -> None:
        self.requested_port = mi_port
        # sip=True: a real SIP socket on 127.0.0.1 (a free port, `sip_port`) where the
        # script's own answers are played (sip_script.py): OPTIONS and the gate's 503.
        self.sip = sip
        self.requested_sip_port = 0
        self._sip: SipScript | None = None
        self._lease: asyncio.Task[None] | None = None
        self.answering = answering          # False: bound but silent, like a stuck process
        self.refuse_subscribe = False       # True: event_subscribe answers an error
        # MI methods whose requests are carried out but whose answers are lost (UDP).
        self.lose_answers: set[str] = set()
        # MI methods whose answers leave this many seconds late (a busy MI process).
        self.answer_delay: dict[str, float] = {}
        self.sip_socket = sip_socket        # the address in the Contact of OpenSIPS' replies
        self.subscriptions: dict[str, Subscription] = {}
        self.subscribe_calls: list[tuple[float, Any]] = []
        self.sessions: dict[str, PeerSession] = {}
        self.mi_log: list[tuple[str, Any, dict[str, Any]]] = []  # (method, params, reply)
        self.terminated: list[str] = []     # ua_session_terminate that sent a BYE
        self.deleted: list[str] = []        # ua_session_terminate of a state 7 session
        self.timed_out: list[str] = []     # sessions ended by ua_default_timeout
        # Every SIP reply built from ua_session_reply, by key (kept after the deletion).
        self.sip_sent: dict[str, list[str]] = {}
        self.cancelled: list[str] = []      # ua_session_terminate of a ringing UAC session
        self.shared: dict[str, int | str] = dict(SCRIPT_SHARED_VARIABLES)  # $shv(...)
        # The script's own replies to callers it did not hand to a core, by B2B key
        # (the key new_call returned; no session has it).
        self.script_replies: dict[str, str] = {}
        self.lease_lapses = 0               # gates closed by the lease timer
        self.run = 1                        # which OpenSIPS process this is
        self.started = time.time()          # its start time ("Up since")
        self._next_local = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._changed = asyncio.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> OpenSipsPeer:
        self._loop = asyncio.get_running_loop()
        self._transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _MiProtocol(self), local_addr=(LOOPBACK, self.requested_port))
        self.requested_port = self.mi_port  # a restart binds the same port again
        if self.sip:
            self._sip = await SipScript(self, self.requested_sip_port).start()
            self.requested_sip_port = self._sip.port
            self.sip_socket = f"{LOOPBACK}:{self._sip.port}"
        self._lease = self._loop.create_task(self._lease_timer())
        return self

    @property
    def sip_port(self) -> int:
        assert self._sip is not None, "OpenSipsPeer(sip=True) has a SIP socket"
        return self._sip.port

    async def _lease_timer(self) -> None:
        """The script's timer_route[ai_gate_lease, 1]: while the gate is not 0, a second
        off `ai_lease` each second; at 0, the gate closed as "no core", Retry-After 5."""
        while True:
            await asyncio.sleep(LEASE_TICK_S)
            if self.shared.get("ai_core") == 0:
                continue
            lease = self.shared.get("ai_lease")
            if isinstance(lease, int) and lease > 0:
                self.shared["ai_lease"] = lease - 1
            else:
                self.shared["ai_retry_after"] = 5
                self.shared["ai_core"] = 0
                self.lease_lapses += 1
                self._notify()

    @property
    def mi_port(self) -> int:
        assert self._transport is not None
        return self._transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        if self._lease is not None:
            self._lease.cancel()
            await asyncio.gather(self._lease, return_exceptions=True)
            self._lease = None
        if self._sip is not None:
            await self._sip.stop()  # its retransmissions end with it
            self._sip = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            await asyncio.sleep(0.01)  # the socket closes on the loop's next turn

    async def restart(self, down_for: float = 0.0) -> None:
        """OpenSIPS restarts: MI is gone for `down_for` s, then a new process answers.

        The new run has a later "Up since" (a real start takes well over a second),
        no subscriptions and no sessions; its B2B keys start from the same slots.
        """
        await self.stop()
        if down_for:
            await asyncio.sleep(down_for)
        self.subscriptions.clear()
        self.sessions.clear()
        self.shared = dict(SCRIPT_SHARED_VARIABLES)
        self.run += 1
        self.started = max(time.time(), self.started + 1.0)
        self._next_local = 0
        await self.start()
        self._notify()

    # ---- MI ------------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _handle_datagram(self, data: bytes) -> tuple[str, bytes] | None:
        if not self.answering:
            return None
        try:
            request = json.loads(data)
            method, request_id = request["method"], request.get("id")
        except (ValueError, KeyError, TypeError):
            return "", json.dumps({"jsonrpc": "2.0", "error": {"code": -32700,
                                                               "message": "Parse error"},
                                   "id": None}).encode()
        params = request.get("params")
        try:
            reply: dict[str, Any] = {"jsonrpc": "2.0", "result": self._dispatch(method, params),
                                     "id": request_id}
        except RpcError as error:
            detail: dict[str, Any] = {"code": error.code, "message": error.message}
            if isinstance(error, InvalidParamsError):
                detail["data"] = error.data
            reply = {"jsonrpc": "2.0", "error": detail, "id": request_id}
        self.mi_log.append((method, params, reply))
        self._notify()
        return method, json.dumps(reply).encode()

    def _dispatch(self, method: str, params: Any) -> Any:
        handlers = {
            "uptime": self._uptime,
            "event_subscribe": self._event_subscribe,
            "ua_session_reply": self._ua_session_reply,
            "ua_session_terminate": self._ua_session_terminate,
            "ua_session_update": self._ua_session_update,
            "ua_session_list": self._ua_session_list,
            "ua_session_client_start": self._ua_session_client_start,
            "shv_set": self._shv_set,
            "shv_get": self._shv_get,
        }
        if method not in handlers:
            raise RpcError(-32601, "Method not found")
        return handlers[method](params)

    @staticmethod
    def _named(params: Any, names: tuple[str, ...], required: int) -> list[Any]:
        """Positional or named params -> a list in `names` order; -32602 when short."""
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

    def find(self, key: Any) -> PeerSession | None:
        """The session b2b_entities finds for a key: by hash and local index only."""
        slot = slot_of(key) if isinstance(key, str) else None
        if slot is None:
            return None
        return next((s for s in self.sessions.values() if slot_of(s.key) == slot), None)

    def _uptime(self, _params: Any) -> dict[str, str]:
        now = time.time()
        return {"Now": time.ctime(now), "Up since": time.ctime(self.started),
                "Up time": f"{int(now - self.started)} [sec]"}

    def _event_subscribe(self, params: Any) -> str:
        event, target, expire = self._named(params, ("event", "socket", "expire"), 2)
        if event != EVENT or not str(target).startswith("udp:") or self.refuse_subscribe:
            raise RpcError(500, "Cannot subscribe")
        expire = 3600 if expire is None else int(expire)
        self.subscribe_calls.append((self._now(), params))
        if expire == 0:
            self.subscriptions.pop(target, None)
        else:
            self.subscriptions[target] = Subscription(target, self._now() + expire)
        return "OK"

    def _shv_set(self, params: Any) -> str:
        name, kind, value = self._named(params, ("name", "type", "value"), 3)
        if str(kind)[:1] in ("s", "S"):
            self.shared[str(name)] = str(value)
        else:
            try:
                self.shared[str(name)] = int(value)
            except (TypeError, ValueError):
                raise INVALID_PARAMS from None
        return "OK"

    def _shv_get(self, params: Any) -> Any:
        """One variable, as cfgutils prints it; unknown: 404 "Not found". Without a
        name: every variable, in a list inside a list (as 3.6.8 answered)."""
        (name,) = self._named(params, ("name",), 0)
        if name is None:
            return [[{"name": key, **self._shv_value(value)}
                     for key, value in reversed(self.shared.items())]]
        if str(name) not in self.shared:
            raise RpcError(404, "Not found")
        return {"VAR": self._shv_value(self.shared[str(name)])}

    @staticmethod
    def _shv_value(value: int | str) -> dict[str, Any]:
        return {"type": "string" if isinstance(value, str) else "integer", "value": value}

    def gate_open(self) -> bool:
        """The script hands new callers to a core (`$shv(ai_core) == 1`)."""
        return self.shared.get("ai_core") == 1

    def script_refusal(self, headers: str, sl_tag: str = "b298.sl") -> str:
        """The script's route[refuse_no_core] for a request with these headers:
        send_reply 503, stateless, as 3.6.8 sent it: Via, To (with sl's tag), From,
        Call-ID, CSeq, the appended Retry-After, OpenSIPS' Server header."""
        lines = {line.partition(":")[0].strip().lower(): line
                 for line in headers.split("\r\n") if line}
        to = lines["to"] + ("" if ";tag=" in lines["to"] else f";tag={sl_tag}")
        copied = [lines["via"], to, lines["from"], lines["call-id"], lines["cseq"]]
        why = "draining" if self.shared.get("ai_core") == 2 else "no core"
        return (f"SIP/2.0 503 Service Unavailable ({why})\r\n"
                + "".join(f"{line}\r\n" for line in copied)
                + f"Retry-After: {self.shared.get('ai_retry_after')}\r\n"
                + f"Server: {SERVER}\r\nContent-Length: 0\r\n\r\n")

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
        session = self.find(key)
        if session is None or session.pending is None or session.pending != method:
            # No transaction to answer: unknown key, already answered (a CANCEL that
            # crossed the 200), or a method mismatch.
            raise RpcError(500, "Failed to send reply")
        session.replies.append(dict(params))
        session.sip_replies.append(self._build_reply(session, code, str(reason), params))
        self.sip_sent.setdefault(session.key, []).append(session.sip_replies[-1])
        # A SIP caller's INVITE is answered through its transaction (kept for
        # retransmitted INVITEs, a final reply retransmitted until the ACK); any other
        # request's reply goes out as it is.
        if session.caller is not None and self._sip is not None and not (
                method == "INVITE"
                and self._sip.reply_to_invite(session.key, session.sip_replies[-1], code)):
            self._sip.send(session.sip_replies[-1], session.caller)
        if code >= 200:
            session.pending = None
            if code < 300:
                session.state = STATE_ESTABLISHED  # the caller ACKs at once
            elif session.state != STATE_ESTABLISHED:
                session.state = STATE_TERMINATED   # a refused re-INVITE keeps the call
        return "OK"

    def _build_reply(self, session: PeerSession, code: int, reason: str,
                     params: dict[str, Any]) -> str:
        """The SIP reply as b2b_entities + tm build it from ua_session_reply's params."""
        copied = []
        for line in session.headers.split("\r\n"):
            name = line.partition(":")[0].strip().lower()
            if name in ("via", "from", "call-id", "cseq"):
                copied.append(line + "\r\n")
            elif name == "to":
                copied.append(line + ("" if ";tag=" in line else f";tag={session.key}")
                              + "\r\n")
        body = str(params.get("body") or "")
        extra = build_hdrs(params.get("body"), params.get("content_type"),
                           params.get("extra_headers"))
        extra += f"Contact: <sip:{self.sip_socket}>\r\n"
        return (f"SIP/2.0 {code} {reason}\r\n" + "".join(copied) + extra
                + f"Content-Length: {len(body.encode())}\r\n\r\n" + body)

    def _ua_session_terminate(self, params: Any) -> str:
        if not isinstance(params, dict) or not params.get("key"):
            raise INVALID_PARAMS
        session = self.find(params["key"])
        if session is not None and session.entity == "UAC" and session.state == STATE_NEW:
            # b2b_entities sends a CANCEL for a client entity not confirmed yet, then
            # deletes it: the 487 that follows raises no event.
            del self.sessions[session.key]
            self.cancelled.append(session.key)
            return "OK"
        if session is None or session.state not in (STATE_ESTABLISHED, STATE_TERMINATED):
            raise RpcError(500, "Failed to terminate session")
        del self.sessions[session.key]
        if session.state == STATE_TERMINATED:
            self.deleted.append(session.key)      # no BYE in the terminated state
        else:
            # OpenSIPS sends the BYE; its 200 raises no event (the entity is already gone).
            self.terminated.append(session.key)
        return "OK"

    def _ua_session_update(self, params: Any) -> str:
        if not isinstance(params, dict) or not params.get("key") or not params.get("method"):
            raise INVALID_PARAMS
        session = self.find(params["key"])
        if session is None or session.state != STATE_ESTABLISHED:
            raise RpcError(500, "Failed to send sequential request")
        session.cseq += 1
        headers = build_hdrs(params.get("body"), params.get("content_type"),
                             params.get("extra_headers"))
        headers += f"Contact: <sip:{self.sip_socket}>\r\n"
        if params.get("body") is not None and not re.search(
                r"(?im)^(content-type|c)\s*:", headers):
            # b2breq_complete_ehdr: a request with a body (even an empty one) and no
            # Content-Type among its headers gets one, after the Contact.
            headers += DEFAULT_SDP_CONTENT_TYPE
        body = str(params.get("body") or "")
        session.requests.append(
            f"{params['method']} sip:sipp@127.0.0.1:5070 SIP/2.0\r\n"
            f"CSeq: {session.cseq} {params['method']}\r\n"
            f"Content-Length: {len(body.encode())}\r\n"
            + headers + "\r\n" + body)
        return "OK"

    def _ua_session_client_start(self, params: Any) -> str:
        if not isinstance(params, dict) or not all(
                isinstance(params.get(n), str) for n in ("ruri", "to", "from")):
            raise INVALID_PARAMS
        key = self.new_key()
        # A client session's key is the Call-ID of its INVITE (its From-tag is a hash).
        session = PeerSession(key, key, "", pending=None, entity="UAC", invite=dict(params))
        self.sessions[key] = session
        return key

    def _entry(self, session: PeerSession) -> dict[str, Any]:
        """One session as ua_session_list prints it (mi_print_b2be_dlg's fields, as
        OpenSIPS 3.6.8 printed them): `dlg` is the key's local index; a UAS session's
        key is its `to_tag`, a UAC session's its `callid` (no `ruri` there)."""
        slot = slot_of(session.key)
        common = {"dlg": slot[1] if slot else 0, "logic_key": "", "mod_name": "b2b_entities",
                  "state": session.state, "last_invite_cseq": 1, "last_method": 1,
                  "db_flag": 2}
        host = self.sip_socket.rpartition(":")[0]
        if session.entity == "UAC":
            invite = session.invite or {}
            return {**common, "last_invite_cseq": 2, "callid": session.key, "from": "",
                    "from_uri": str(invite.get("from", "")).rpartition(",")[2],
                    "from_tag": "eab1440d41ebad101122721b99a5c6f4-4a11", "to": "",
                    "to_uri": str(invite.get("to", "")).rpartition(",")[2],
                    "to_tag": "callee" if session.state == STATE_ESTABLISHED else "",
                    "cseq": {"caller": 2, "callee": 1},
                    "contact": {"caller": f"sip:{self.sip_socket}", "callee": ""},
                    "send_sock": host}
        return {
            **common, "ruri": "sip:ai@127.0.0.1:5060", "callid": session.call_id,
            "from": "sipp", "from_uri": "sip:sipp@127.0.0.1:5070",
            "from_tag": "9574SIPpTag091", "to": "ai", "to_uri": "sip:ai@127.0.0.1:5060",
            "to_tag": session.key, "cseq": {"caller": 1, "callee": session.cseq},
            "contact": {"caller": "sip:sipp@127.0.0.1:5070",
                        "callee": f"sip:{self.sip_socket}"},
            "send_sock": host,
        }

    def _ua_session_list(self, params: Any) -> Any:
        key = params.get("key") if isinstance(params, dict) else None
        if key is None:
            return [self._entry(s) for s in self.sessions.values()]
        if slot_of(key) is None:
            raise RpcError(400, "Bad format for b2b key")
        session = self.find(key)
        if session is None:
            raise RpcError(404, "Entity not found")
        return self._entry(session)

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

    def accepted(self, method: str, key: str | None = None) -> list[dict[str, Any]]:
        """The params of every `method` call OpenSIPS answered with a result."""
        return [p for m, p, r in self.mi_log
                if m == method and "result" in r
                and (key is None or (isinstance(p, dict) and p.get("key") == key))]

    def refused(self, method: str, key: str | None = None) -> list[dict[str, Any]]:
        """The error objects OpenSIPS answered to `method` calls (for this key)."""
        return [r["error"] for m, p, r in self.mi_log
                if m == method and "error" in r
                and (key is None or (isinstance(p, dict) and p.get("key") == key))]

    async def wait_reply(self, key: str, count: int = 1, timeout: float = 10.0
                         ) -> dict[str, Any]:
        """The `count`-th ua_session_reply accepted for this key (1 = the first)."""
        await self.wait_for(lambda: len(self.accepted("ua_session_reply", key)) >= count,
                            timeout, f"reply {count} to {key}")
        return self.accepted("ua_session_reply", key)[count - 1]

    def live_subscriptions(self) -> list[str]:
        now = self._now()
        return [s.socket for s in self.subscriptions.values() if s.expires_at > now]

    # ---- events -------------------------------------------------------------------------

    def send_event(self, key: str, event_type: str, method: str, body: str = "",
                   headers: str = "", *, status: int = 0, reason: str | None = None,
                   extra_params: Any = None, entity_type: str = "UAS") -> int:
        """Send one E_UA_SESSION notification to each live subscriber; return how many."""
        params = {  # insertion order = OpenSIPS 3.6's field order
            "key": key, "event_type": event_type, "entity_type": entity_type, "status": status,
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
        """Headers as SIPp sends them through OpenSIPS (CRLF after every line). An initial
        INVITE reaches the event after the script's mf_process_maxfwd_header (69);
        in-dialog requests are taken by b2b_entities before the script (70)."""
        to = "ai <sip:ai@127.0.0.1:5060>" + (f";tag={to_tag}" if to_tag else "")
        max_forwards = 69 if method == "INVITE" and not to_tag else 70
        lines = [
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-9574-1-0",
            "From: sipp <sip:sipp@127.0.0.1:5070>;tag=9574SIPpTag091",
            f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
            "Contact: sip:sipp@127.0.0.1:5070", f"Max-Forwards: {max_forwards}",
            "Subject: Performance Test",
        ]
        if content_length:
            lines += ["Content-Type: application/sdp", f"Content-Length:   {content_length}"]
        else:
            lines.append("Content-Length: 0")
        return "".join(f"{line}\r\n" for line in lines)

    def new_key(self) -> str:
        """A key as b2b_generate_key makes it; local indexes restart with each run."""
        self._next_local += 1
        return (f"B2B.{random.randint(0, 511)}.{self._next_local}."
                f"{int(self.started)}.{random.randint(10**8, 2 * 10**9)}")

    def new_call(self, body: str = SIPP_OFFER, method: str = "INVITE",
                 key: str | None = None) -> str:
        """A caller's INVITE reaches ua_session_server_init: NEW. Returns the B2B key.

        With the gate closed the script answers it itself (`script_replies[key]`): no
        session, no event."""
        key = key or self.new_key()
        call_id = f"{random.randint(1, 9999)}-{random.randint(1, 99999)}@127.0.0.1"
        headers = self.call_headers(call_id, 1, method, None, len(body))
        if method == "INVITE" and not self.gate_open():
            self.script_replies[key] = self.script_refusal(headers)
            self._notify()
            return key
        self.sessions[key] = PeerSession(key, call_id, headers, pending=method)
        self.send_event(key, "NEW", method, body, headers)
        return key

    def answer_caller(self, key: str, call_id: str, headers: str, body: str,
                      caller: tuple[str, int], *, reply_headers: str | None = None) -> None:
        """A real SIP caller's INVITE passed the gate (sip_script.py): a UA session
        whose replies go back to the caller, and its NEW (with the INVITE's headers as
        they came; the replies copy `reply_headers`, the Via stamped by the core)."""
        self.sessions[key] = PeerSession(key, call_id, reply_headers or headers,
                                         caller=caller)
        self.send_event(key, "NEW", "INVITE", body, headers)

    def reinvite(self, key: str, body: str) -> None:
        session = self.sessions[key]
        session.cseq += 1
        session.pending = "INVITE"
        session.headers = self.call_headers(session.call_id, session.cseq, "INVITE", key,
                                            len(body))
        self.send_event(key, "UPDATED", "INVITE", body, session.headers)

    def bye(self, key: str) -> None:
        """The caller hangs up; OpenSIPS answers the BYE itself and reports TERMINATED."""
        session = self.sessions.pop(key)
        self.send_event(key, "TERMINATED", "BYE", "",
                        self.call_headers(session.call_id, session.cseq + 1, "BYE", key))

    def time_out(self, key: str) -> None:
        """`ua_default_timeout` expires: OpenSIPS sends the caller a BYE and deletes the
        session, raising no event (as OpenSIPS 3.6.8 did on the wire)."""
        del self.sessions[key]
        self.timed_out.append(key)
        self._notify()

    def cancel(self, key: str, headers: str | None = None) -> None:
        """The caller cancels: OpenSIPS answers "200 canceling" but sends no 487.

        The session turns terminated (7). While the INVITE waits for the engine, its
        transaction stays open for the engine's final reply (a 487, or a 200 that
        crossed the CANCEL). On an answered session the CANCEL crossed OpenSIPS' 200:
        the INVITE has its final reply, so a 487 from the engine fails (500).
        """
        session = self.sessions[key]
        session.state = STATE_TERMINATED
        self.send_event(key, "TERMINATED", "CANCEL", "",
                        headers or self.call_headers(session.call_id, 1, "CANCEL"))

    # ---- transfer (REFER) and outbound calls -----------------------------------------------

    def refer_reply(self, key: str, code: int, reason: str) -> None:
        """The caller's reply to the engine's REFER (b2b_tm_cback: ANSWERED / REJECTED)."""
        session = self.sessions[key]
        headers = self.call_headers(session.call_id, session.cseq, "REFER", key)
        self.send_event(key, "ANSWERED" if code < 300 else "REJECTED", "REFER", "", headers,
                        status=code, reason=reason)

    def notify(self, key: str, sipfrag: str, subscription_state: str) -> None:
        """The caller's NOTIFY of the refer subscription: UPDATED, waiting for a reply."""
        session = self.sessions[key]
        session.cseq += 1
        session.pending = "NOTIFY"
        body = sipfrag if sipfrag.endswith("\r\n") else sipfrag + "\r\n"
        headers = self.call_headers(session.call_id, session.cseq, "NOTIFY", key).replace(
            "Content-Length: 0\r\n",
            f"Event: refer\r\nSubscription-State: {subscription_state}\r\n"
            f"Content-Type: message/sipfrag;version=2.0\r\nContent-Length: {len(body)}\r\n")
        self.send_event(key, "UPDATED", "NOTIFY", body, headers)

    def callee_reply(self, key: str, code: int, reason: str, body: str = "") -> None:
        """A reply to a UAC session's INVITE: EARLY (1xx), ANSWERED (2xx, auto-ACKed),
        REJECTED (>= 300)."""
        session = self.sessions[key]
        kind = "EARLY" if code < 200 else "ANSWERED" if code < 300 else "REJECTED"
        if kind == "ANSWERED":
            session.state = STATE_ESTABLISHED
        elif kind == "REJECTED":
            # b2b_entities ACKs the final failure and deletes the client entity at once
            # (it is no longer listed, unlike a rejected UAS session).
            del self.sessions[key]
        to = str((session.invite or {}).get("to", ""))
        headers = (f"Via: SIP/2.0/UDP {self.sip_socket};branch=z9hG4bK-b2b\r\n"
                   f"From: <{(session.invite or {}).get('from', '')}>;tag=b2bfrom\r\n"
                   f"To: <{to}>;tag=callee\r\nCall-ID: {session.call_id}\r\n"
                   f"CSeq: 1 INVITE\r\nContent-Length: {len(body)}\r\n")
        self.send_event(key, kind, "INVITE", body, headers, status=code, reason=reason,
                        entity_type="UAC")

    def callee_bye(self, key: str) -> None:
        session = self.sessions.pop(key)
        self.send_event(key, "TERMINATED", "BYE", "",
                        self.call_headers(session.call_id, 2, "BYE", key), entity_type="UAC")


def build_hdrs(body: Any, content_type: Any, extra_headers: Any) -> str:
    """ua_build_hdrs of b2b_entities 3.6.8: the header text a request or reply gets."""
    extra = "" if extra_headers is None else str(extra_headers)
    if body is None:
        return "?" * len(extra)  # allocated, never filled: uninitialised bytes
    head = DEFAULT_SDP_CONTENT_TYPE if content_type is None else str(content_type)
    return head + extra
