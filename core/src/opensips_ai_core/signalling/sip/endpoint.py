"""The SIP transport and transaction layers of the direct backend (RFC 3261 17, 18).

`SipEndpoint` owns the UDP socket and everything below the dialogs; the UAS on top of
it (`uas.DirectSipBackend`) gets each new request once, through `_on_new_request`,
and each ACK through `_on_ack`:

- datagrams are parsed (`message.py`); malformed ones are counted per kind in `stats`,
  logged once per kind (one line, no traceback), answered 400 (513 when oversized, 505
  for another SIP version) when enough headers are there, dropped otherwise;
- server transactions are keyed by Via branch, sent-by and method: a retransmitted
  request gets the last response again; a non-INVITE transaction absorbs them for
  64*T1 (Timer J);
- a final response is retransmitted T1, 2*T1 … T2 apart until its ACK or 64*T1 (the
  2xx by the UAS core, Timer G/H for the others), then freed after Timer I;
- non-INVITE client transactions (BYE, REFER): Timer E retransmissions, Timer F;
  `_in_dialog_request` sends one inside a dialog (route set, next CSeq);
- responses go where RFC 3261 18.2.2 / RFC 3581 say (rport → the source address),
  with received=/rport= stamped on the top Via.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable

from opensips_ai_core.signalling.headers import header_uri, reason_for, tag_of
from opensips_ai_core.signalling.sip.message import (
    MANDATORY_HEADERS,
    SipMessage,
    SipParseError,
    parse_message,
    parse_via,
    uri_host_port,
)
from opensips_ai_core.signalling.sip.transactions import (
    Address,
    Dialog,
    ServerTransaction,
    SipStats,
    SipTimers,
    backoff_intervals,
    new_branch,
    new_tag,
)
from opensips_ai_core.tasks import TaskSet
from voice_common.devlogger import get_development_logger

log = get_development_logger("signalling.sip")

USER_AGENT = "opensips-ai-core"
_RPORT_EMPTY = re.compile(r";\s*rport(?=\s*(;|$))", re.IGNORECASE)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.endpoint._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) for an earlier send: nothing to do but note it.
        log.debug("SIP socket error: %s", exc)


class SipEndpoint:
    """A SIP endpoint on udp HOST:PORT up to the transaction layer; subclassed by the UAS."""

    def __init__(self, host: str, port: int, public_ip: str | None = None, *,
                 timers: SipTimers | None = None, max_message_size: int = 32 * 1024) -> None:
        self.host = host
        self.requested_port = port
        self.public_ip = public_ip or (host if host not in ("0.0.0.0", "::", "") else "127.0.0.1")
        self.timers = timers or SipTimers()
        self.max_message_size = max_message_size
        self.stats = SipStats()
        self._transport: asyncio.DatagramTransport | None = None
        self._transactions: dict[tuple[str, str, str], ServerTransaction] = {}
        self._client_transactions: dict[str, asyncio.Future[SipMessage]] = {}
        self._tasks = TaskSet(log, "SIP")
        self._logged_kinds: set[str] = set()

    # ---- what the UAS on top answers ----------------------------------------------------

    def _on_new_request(self, transaction: ServerTransaction, source: Address) -> None:
        """A request that is not a retransmission (nor an ACK): answer it."""
        raise NotImplementedError

    def _on_ack(self, request: SipMessage) -> None:
        raise NotImplementedError

    def _on_invite_response(self, response: SipMessage, branch: str) -> bool:
        """Take a response to one of our INVITE client transactions; False: not one."""
        return False

    def _local_tag(self, call_id: str) -> str | None:
        """The To-tag of our responses in the call's dialog, if there is one."""
        return None

    # ---- socket -------------------------------------------------------------------------

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, self.requested_port),
            family=family)
        self._transport = transport

    @property
    def port(self) -> int:
        if self._transport is None:
            return self.requested_port
        return self._transport.get_extra_info("sockname")[1]

    async def _close(self) -> None:
        await self._tasks.cancel_all()
        for future in self._client_transactions.values():
            future.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._transactions.clear()

    # ---- receiving ----------------------------------------------------------------------

    def _on_datagram(self, data: bytes, source: Address) -> None:
        self.stats.datagrams += 1
        if not data.strip(b"\r\n"):
            return  # CRLF keep-alive (RFC 5626): nothing to answer
        try:
            message = parse_message(data, self.max_message_size)
        except SipParseError as error:
            self._on_malformed(error, source)
            return
        try:
            if message.is_request:
                self.stats.requests += 1
                self._on_request(message, source)
            else:
                self.stats.responses_received += 1
                self._on_response(message)
        except SipParseError as error:  # e.g. an unparseable Via found while handling
            if error.partial is None:
                error.partial = message  # well-formed enough to answer 400 to the source
            self._on_malformed(error, source)
        except Exception as error:  # a bug must cost one datagram, not the socket or a log flood
            kind = f"handler:{type(error).__name__}"
            self.stats.malformed[kind] = self.stats.malformed.get(kind, 0) + 1
            first = kind not in self._logged_kinds
            self._logged_kinds.add(kind)
            log.log(logging.ERROR if first else logging.DEBUG,
                    "SIP from %s:%d not handled: %s: %s", source[0], source[1],
                    type(error).__name__, str(error)[:200], exc_info=not first)

    def _on_malformed(self, error: SipParseError, source: Address) -> None:
        self.stats.malformed[error.kind] = self.stats.malformed.get(error.kind, 0) + 1
        level = logging.DEBUG if error.kind in self._logged_kinds else logging.WARNING
        self._logged_kinds.add(error.kind)
        log.log(level, "malformed SIP from %s:%d (%s); further ones of this kind at DEBUG",
                source[0], source[1], error)
        partial = error.partial
        answerable = (
            partial is not None and partial.is_request and partial.method != "ACK"
            and all(partial.get(name) for name in MANDATORY_HEADERS)
        )
        if not answerable or partial is None:
            self.stats.malformed_dropped += 1
            return
        code = {"oversized": 513, "unsupported_version": 505}.get(error.kind, 400)
        response = self._response(partial, code, source, extra=[
            ("Warning", f'399 {self.public_ip} "{error.kind}: {error.detail[:80]}"')])
        self._send(response.to_bytes(), self._reply_address(partial, source))
        self.stats.bad_requests_answered += 1

    def _on_request(self, request: SipMessage, source: Address) -> None:
        if request.method == "ACK":
            self._on_ack(request)
            return
        key = self._transaction_key(request)
        existing = self._transactions.get(key)
        if existing is not None:
            # A retransmission: answer with the last response, if there is one yet.
            self.stats.retransmissions_absorbed += 1
            if existing.last_response is not None:
                self._send(existing.last_response, existing.reply_to)
            return
        transaction = ServerTransaction(key, request, self._reply_address(request, source), source)
        self._transactions[key] = transaction
        if request.method != "INVITE":
            # Timer J: a non-INVITE transaction absorbs retransmissions for 64*T1.
            asyncio.get_running_loop().call_later(
                self.timers.transaction_timeout, self._transactions.pop, key, None)
        self._on_new_request(transaction, source)

    # ---- transactions -------------------------------------------------------------------

    async def _retransmit(self, transaction: ServerTransaction,
                          on_timeout: Callable[[], Awaitable[None]] | None) -> None:
        """Resend the final response T1, 2*T1 … T2 apart until ACKed or 64*T1 passed;
        then `on_timeout()` if it was never ACKed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timers.transaction_timeout
        for interval in backoff_intervals(self.timers):
            wait = min(interval, deadline - loop.time())
            if wait <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(transaction.acked.wait(), wait)
            if transaction.acked.is_set():
                break
            if loop.time() >= deadline:
                break
            if transaction.last_response is not None:
                self._send(transaction.last_response, transaction.reply_to)
                self.stats.retransmissions_sent += 1
        # Keep the transaction a little to absorb late INVITE/ACK retransmissions (Timer I).
        loop.call_later(self.timers.t2 + self.timers.t1, self._drop_transaction, transaction)
        if transaction.acked.is_set() or on_timeout is None:
            return
        await on_timeout()

    def _drop_transaction(self, transaction: ServerTransaction) -> None:
        if self._transactions.get(transaction.key) is transaction:
            del self._transactions[transaction.key]

    async def _client_request(self, branch: str, data: bytes,
                              destination: Address) -> SipMessage | None:
        """A non-INVITE client transaction: Timer E retransmissions, Timer F timeout."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SipMessage] = loop.create_future()
        self._client_transactions[branch] = future
        deadline = loop.time() + self.timers.transaction_timeout
        try:
            self._send(data, destination)
            for interval in backoff_intervals(self.timers):
                wait = min(interval, deadline - loop.time())
                if wait <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), wait)
                self._send(data, destination)
                self.stats.retransmissions_sent += 1
            return None
        finally:
            self._client_transactions.pop(branch, None)

    async def _in_dialog_request(self, dialog: Dialog, method: str,
                                 extra: Iterable[tuple[str, str]] = (),
                                 body: bytes = b"") -> SipMessage | None:
        """Send a request inside `dialog` (route set, next CSeq); its final response or None."""
        dialog.local_cseq += 1
        branch = new_branch()
        request = SipMessage(method=method, uri=dialog.remote_target)
        request.add("Via", f"SIP/2.0/UDP {self._host_in_uri(self.public_ip)}:{self.port}"
                           f";branch={branch};rport")
        request.add("Max-Forwards", "70")
        request.add("From", dialog.local_uri)
        request.add("To", dialog.remote_uri)
        request.add("Call-ID", dialog.call_id)
        request.add("CSeq", f"{dialog.local_cseq} {method}")
        for route in dialog.route_set:
            request.add("Route", route)
        for name, value in extra:
            request.add(name, value)
        request.add("User-Agent", USER_AGENT)
        request.body = body
        destination_uri = header_uri(dialog.route_set[0]) if dialog.route_set \
            else dialog.remote_target
        try:
            destination = await self._resolve(uri_host_port(destination_uri))
        except (OSError, ValueError) as error:  # SipParseError and UnicodeError are ValueErrors
            log.warning("%s for %s: cannot resolve %s (%s); using the INVITE's source",
                        method, dialog.call_id, destination_uri, error)
            destination = dialog.source
        return await self._client_request(branch, request.to_bytes(), destination)

    def _on_response(self, response: SipMessage) -> None:
        vias = response.get_all("Via")
        branch = parse_via(vias[0]).branch if vias else ""
        if self._on_invite_response(response, branch):
            return  # a response to one of our outbound INVITEs
        future = self._client_transactions.get(branch)
        if future is None or future.done():
            self.stats.stray_responses += 1
            return
        if response.status is not None and response.status >= 200:
            future.set_result(response)

    # ---- sending ------------------------------------------------------------------------

    @staticmethod
    def _host_in_uri(host: str) -> str:
        return f"[{host}]" if ":" in host else host

    async def _resolve(self, host_port: tuple[str, int]) -> Address:
        host, port = host_port
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return host, port
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        # An AF_INET/AF_INET6 socket address begins with the host as a string.
        return str(infos[0][4][0]), port

    def _transaction_key(self, request: SipMessage, method: str | None = None
                         ) -> tuple[str, str, str]:
        via = parse_via(request.get_all("Via")[0])
        branch = via.branch
        if not branch.startswith("z9hG4bK"):
            # RFC 2543 peers: no usable branch; Call-ID, CSeq number and From-tag instead.
            branch = f"{request.call_id}|{request.cseq[0]}|{tag_of(request.get('From'))}"
        return branch, f"{via.host}:{via.port or 5060}", method or request.method or ""

    def _reply_address(self, request: SipMessage, source: Address) -> Address:
        """RFC 3261 18.2.2 with RFC 3581: rport → the source address and port."""
        try:
            via = parse_via(request.get_all("Via")[0])
        except (SipParseError, IndexError):
            return source
        if "rport" in via.params:
            return source
        host = via.params.get("received") or via.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            host = source[0]
        return host, via.port or 5060

    def _response(self, request: SipMessage, code: int, source: Address | None = None, *,
                  reason: str | None = None, to_tag: str | None = None,
                  extra: Iterable[tuple[str, str]] = (), body: bytes = b"") -> SipMessage:
        response = SipMessage(status=code, reason=reason or reason_for(code))
        for index, via in enumerate(request.get_all("Via")):
            stamped = self._stamp_via(via, source) if index == 0 and source else via
            response.add("Via", stamped)
        response.add("From", request.get("From") or "")
        to = request.get("To") or ""
        if code > 100 and not tag_of(to):
            to = f"{to};tag={to_tag or new_tag()}"
        response.add("To", to)
        response.add("Call-ID", request.call_id)
        response.add("CSeq", request.get("CSeq") or "")
        if request.method == "INVITE" and 100 < code < 300:
            for route in request.get_all("Record-Route"):
                response.add("Record-Route", route)
        response.add("Server", USER_AGENT)
        for name, value in extra:
            response.add(name, value)
        response.body = body
        return response

    @staticmethod
    def _stamp_via(via: str, source: Address) -> str:
        """Add received= (and fill rport=) to the top Via (RFC 3261 18.2.1, RFC 3581 4)."""
        try:
            parsed = parse_via(via)
        except SipParseError:
            return via
        has_rport = "rport" in parsed.params
        if (has_rport or parsed.host != source[0]) and "received" not in parsed.params:
            via = f"{via};received={source[0]}"
        if has_rport and not parsed.params["rport"]:
            via = _RPORT_EMPTY.sub(f";rport={source[1]}", via, count=1)
        return via

    def _reply(self, transaction: ServerTransaction, code: int, *, reason: str | None = None,
               to_tag: str | None = None, extra: Iterable[tuple[str, str]] = (),
               body: bytes = b"") -> None:
        request = transaction.request
        if to_tag is None and code > 100:
            to_tag = self._local_tag(request.call_id)
        response = self._response(request, code, transaction.source, reason=reason,
                                  to_tag=to_tag, extra=extra, body=body)
        data = response.to_bytes()
        if code >= 200:
            transaction.final_code = code
        transaction.last_response = data
        self._send(data, transaction.reply_to)
        if code >= 300 and request.method == "INVITE" and transaction.retransmitter is None:
            # Timer G until the ACK, Timer H gives up; then the transaction is freed.
            transaction.retransmitter = self._tasks.spawn(
                self._retransmit(transaction, on_timeout=None))

    def _send(self, data: bytes, destination: Address) -> None:
        if self._transport is None:
            return
        self._transport.sendto(data, destination)
        if data.startswith(b"SIP/2.0 "):
            self.stats.responses_sent += 1
        log.debug_data_flow("sip->udp", data.split(b"\r\n", 1)[0].decode(errors="replace"),
                            len(data))
