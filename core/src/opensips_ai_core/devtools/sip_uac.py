"""A small SIP UAC for development, tests and benchmarks: the caller's phone over UDP.

One call per `SipCaller`: INVITE/ACK, re-INVITE, BYE; it answers the far end's BYE and
OPTIONS with 200. A REFER in the dialog (the bot's blind transfer, RFC 3515) is
refused with 405 unless an `on_refer` callback is given: then it is accepted (202) and
handed to the callback, which follows it (`devtools.transferee.BlindTransfer`) and
reports through `notify` (Event: refer, message/sipfrag). Messages are read with the
core's own parser (`signalling.sip.message`); the core's UAS is the thing under test,
so nothing more of RFC 3261 is needed here.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opensips_ai_core.signalling.headers import header_uri, reason_for, tag_of
from opensips_ai_core.signalling.sdp import SdpError, parse_sdp
from opensips_ai_core.signalling.sip.message import SipMessage, SipParseError, parse_message
from opensips_ai_core.signalling.sip.transactions import new_branch

SDP_TEMPLATE = (
    "v=0\r\no=caller {sid} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP {pts} 101\r\n{rtpmaps}"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\na=ptime:20\r\n"
)
RTPMAP = {"PCMU": "a=rtpmap:0 PCMU/8000\r\n", "PCMA": "a=rtpmap:8 PCMA/8000\r\n"}
PT = {"PCMU": 0, "PCMA": 8}
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY"
T1, T2 = 0.5, 4.0  # RFC 3261 timers: retransmit from T1, doubling up to T2


def make_sdp(ip: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
             direction: str = "sendrecv") -> str:
    return SDP_TEMPLATE.format(sid=secrets.randbelow(10**9), ip=ip, port=port,
                               pts=" ".join(str(PT[c]) for c in codecs),
                               rtpmaps="".join(RTPMAP[c] for c in codecs), direction=direction)


def parse_media_address(sdp: str) -> tuple[str, int, int]:
    """(ip, port, first payload type) of the first audio stream of an SDP."""
    try:
        session = parse_sdp(sdp)
    except SdpError as error:
        raise ValueError(f"bad SDP ({error}): {sdp!r}") from None
    for media in session.media:
        ip = session.connection_for(media)
        if media.media == "audio" and media.port and ip and media.payload_types:
            return ip, media.port, media.payload_types[0]
    raise ValueError(f"no audio address in SDP: {sdp!r}")


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: dict[str, str]   # lower-case names, the first value of each
    body: str


@dataclass(frozen=True)
class ReferRequest:
    """An accepted REFER: where to call (Refer-To) and who asked (Referred-By)."""

    refer_to: str           # the URI, without its <>
    referred_by: str | None  # the header's value as sent, or None
    cseq: int               # the REFER's CSeq number (the NOTIFYs' Event id)


def _response_of(message: SipMessage) -> SipResponse:
    headers: dict[str, str] = {}
    for name, value in message.headers:
        headers.setdefault(name.lower(), value)
    return SipResponse(message.status or 0, message.reason or "", headers,
                       message.body.decode("utf-8", errors="replace"))


class SipCaller(asyncio.DatagramProtocol):
    """The caller's side of one call; `on_refer` set: it accepts the bot's REFER."""

    def __init__(self, target: tuple[str, int], local_ip: str = "127.0.0.1",
                 user: str = "ai", *, request_uri: str | None = None,
                 on_refer: Callable[[ReferRequest], None] | None = None) -> None:
        self.target = target
        self.local_ip = local_ip
        self.uri = request_uri or f"sip:{user}@{target[0]}:{target[1]}"
        self.call_id = f"{secrets.token_hex(8)}@{local_ip}"
        self.tag = secrets.token_hex(4)
        self.remote_tag = ""
        self.cseq = 1
        self.transport: asyncio.DatagramTransport | None = None
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.bye_received = asyncio.Event()
        self.remote_contact = self.uri
        self.on_refer = on_refer
        self.refers: list[ReferRequest] = []       # every REFER, accepted or refused
        self._pending: dict[str, asyncio.Future[SipResponse]] = {}  # "CSeq" -> response
        self._answered: dict[str, bytes] = {}      # "CSeq" of a request -> our response

    async def open(self) -> SipCaller:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.local_ip, 0))
        return self

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if message.is_request:
            self._on_request(message, addr)
            return
        response = _response_of(message)
        waiter = self._pending.get(message.get("CSeq") or "")
        if waiter is not None:
            if response.status >= 200 and not waiter.done():
                waiter.set_result(response)
        else:
            self.responses.put_nowait(response)

    # ---- requests from the far end -------------------------------------------------------

    def _on_request(self, request: SipMessage, addr: tuple[str, int]) -> None:
        if request.method == "ACK":
            return
        key = request.get("CSeq") or ""
        if key in self._answered:  # a retransmission: the same answer again
            self._send(self._answered[key], addr)
            return
        extra: list[tuple[str, str]] = []
        if request.method in ("BYE", "OPTIONS", "INVITE"):
            code = 200
        elif request.method == "REFER" and self.on_refer is not None:
            code = 202
            extra.append(("Contact", self.contact))
        else:
            code = 405
            extra.append(("Allow", ALLOW))
        self._answered[key] = self._response(request, code, extra)
        self._send(self._answered[key], addr)
        if request.method == "BYE":
            self.bye_received.set()
        elif request.method == "REFER":
            refer = ReferRequest(header_uri(request.get("Refer-To") or ""),
                                 request.get("Referred-By"), request.cseq[0])
            self.refers.append(refer)
            if code == 202 and self.on_refer is not None:
                self.on_refer(refer)

    @staticmethod
    def _response(request: SipMessage, code: int, extra: Iterable[tuple[str, str]]) -> bytes:
        response = SipMessage(status=code, reason="Accepted" if code == 202 else reason_for(code))
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in request.get_all(name):
                response.add(name, value)
        for name, value in extra:
            response.add(name, value)
        return response.to_bytes()

    # ---- our requests --------------------------------------------------------------------

    @property
    def contact(self) -> str:
        return f"<sip:caller@{self.local_ip}:{self.port}>"

    def _request(self, method: str, cseq: int, body: str = "", to_tag: str = "", *,
                 in_dialog: bool = False, extra: Iterable[tuple[str, str]] = (),
                 content_type: str = "application/sdp", branch: str | None = None) -> bytes:
        uri = self.uri if method == "INVITE" and not in_dialog else self.remote_contact
        request = SipMessage(method=method, uri=uri)
        request.add("Via", f"SIP/2.0/UDP {self.local_ip}:{self.port}"
                           f";branch={branch or new_branch()};rport")
        request.add("Max-Forwards", "70")
        request.add("From", f"<sip:caller@{self.local_ip}>;tag={self.tag}")
        request.add("To", f"<{self.uri}>" + (f";tag={to_tag}" if to_tag else ""))
        request.add("Call-ID", self.call_id)
        request.add("CSeq", f"{cseq} {method}")
        request.add("Contact", self.contact)
        request.add("User-Agent", "opensips-ai-devcaller")
        for name, value in extra:
            request.add(name, value)
        if body:
            request.add("Content-Type", content_type)
        request.body = body.encode()
        return request.to_bytes()

    async def invite(self, sdp: str, timeout: float = 30.0,
                     extra: Iterable[tuple[str, str]] = ()) -> SipResponse:
        """Send INVITE (retransmitted per T1 until a response), ACK a final response."""
        assert self.transport is not None
        branch = new_branch()
        message = self._request("INVITE", self.cseq, sdp, extra=extra, branch=branch)
        deadline = time.monotonic() + timeout
        interval, provisional = T1, False
        while True:
            if not provisional:
                self.transport.sendto(message, self.target)
            try:
                response = await asyncio.wait_for(self.responses.get(), interval)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError("no final response to INVITE") from None
                interval = min(interval * 2, T2)
                continue
            if response.status < 200:
                provisional = True
                continue
            self.remote_tag = tag_of(response.headers.get("to")) or ""
            contact = response.headers.get("contact")
            if contact:
                self.remote_contact = header_uri(contact)
            # The ACK of a non-2xx answer is part of the INVITE's transaction: same branch.
            self.transport.sendto(self._request(
                "ACK", self.cseq, to_tag=self.remote_tag,
                branch=branch if response.status >= 300 else None), self.target)
            return response

    async def reinvite(self, sdp: str, timeout: float = 10.0) -> SipResponse:
        """A re-INVITE in the dialog (hold/resume); ACKs the final response."""
        assert self.transport is not None
        self.cseq += 1
        self.transport.sendto(self._request("INVITE", self.cseq, sdp, to_tag=self.remote_tag,
                                            in_dialog=True), self.target)
        while True:
            response = await asyncio.wait_for(self.responses.get(), timeout)
            if response.status >= 200 and response.headers.get("cseq", "").endswith("INVITE"):
                self.transport.sendto(self._request("ACK", self.cseq, to_tag=self.remote_tag),
                                      self.target)
                return response

    async def _in_dialog(self, method: str, timeout: float, body: str = "",
                         extra: Iterable[tuple[str, str]] = (),
                         content_type: str = "application/sdp") -> SipResponse | None:
        """A non-INVITE request in the dialog, retransmitted (Timer E) until its final
        response; None after `timeout` without one."""
        assert self.transport is not None
        self.cseq += 1
        key = f"{self.cseq} {method}"
        message = self._request(method, self.cseq, body, to_tag=self.remote_tag,
                                in_dialog=True, extra=extra, content_type=content_type)
        waiter: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._pending[key] = waiter
        deadline = time.monotonic() + timeout
        interval = T1
        try:
            while time.monotonic() < deadline:
                self.transport.sendto(message, self.target)
                done, _ = await asyncio.wait(
                    {waiter}, timeout=min(interval, max(0.0, deadline - time.monotonic())))
                if done:
                    return waiter.result()
                interval = min(interval * 2, T2)
            return None
        finally:
            self._pending.pop(key, None)

    async def notify(self, refer: ReferRequest, sipfrag: str, *, final: bool,
                     timeout: float = 10.0) -> int | None:
        """A NOTIFY of the REFER's implicit subscription (RFC 3515 2.4.4); the status the
        far end answered, or None. `sipfrag` is a status line ("SIP/2.0 100 Trying")."""
        state = "terminated;reason=noresource" if final else "active;expires=60"
        response = await self._in_dialog(
            "NOTIFY", timeout, body=sipfrag.rstrip("\r\n") + "\r\n",
            extra=[("Event", f"refer;id={refer.cseq}"), ("Subscription-State", state)],
            content_type="message/sipfrag;version=2.0")
        return None if response is None else response.status

    async def bye(self, timeout: float = 5.0) -> int | None:
        if self.bye_received.is_set():
            return None
        response = await self._in_dialog("BYE", timeout)
        return None if response is None else response.status

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def close(self) -> None:
        for waiter in self._pending.values():
            waiter.cancel()
        if self.transport is not None:
            self.transport.close()

