"""A minimal SIP UAC for development, tests and benchmarks: INVITE/ACK/BYE over UDP.

One call per `SipCaller`; it answers the far end's BYE (and OPTIONS) with 200. It is
the caller's side of scripted calls (with `devtools.softphone.RtpPeer` for the audio);
the core's UAS is the thing under test, so nothing more of RFC 3261 is needed here.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass, field

SDP_TEMPLATE = (
    "v=0\r\no=caller {sid} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP {pts} 101\r\n{rtpmaps}"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\na=ptime:20\r\n"
)
RTPMAP = {"PCMU": "a=rtpmap:0 PCMU/8000\r\n", "PCMA": "a=rtpmap:8 PCMA/8000\r\n"}
PT = {"PCMU": 0, "PCMA": 8}


def make_sdp(ip: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
             direction: str = "sendrecv") -> str:
    return SDP_TEMPLATE.format(sid=secrets.randbelow(10**9), ip=ip, port=port,
                               pts=" ".join(str(PT[c]) for c in codecs),
                               rtpmaps="".join(RTPMAP[c] for c in codecs), direction=direction)


def parse_media_address(sdp: str) -> tuple[str, int, int]:
    """(ip, port, first payload type) of the first audio m-line of an SDP."""
    ip = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
    media = re.search(r"^m=audio (\d+) \S+ (\d+)", sdp, re.M)
    if ip is None or media is None:
        raise ValueError(f"no audio address in SDP: {sdp!r}")
    return ip.group(1), int(media.group(1)), int(media.group(2))


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: str


@dataclass
class SipRequest:
    method: str
    uri: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]] = field(default_factory=list)


def parse_sip(data: bytes) -> SipResponse | SipRequest | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    raw: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            raw.append((name.strip(), value.strip()))
    headers = {name.lower(): value for name, value in raw}
    first = lines[0].split(" ", 2)
    if first[0] == "SIP/2.0" and len(first) >= 2:
        return SipResponse(int(first[1]), first[2] if len(first) > 2 else "", headers, body)
    if len(first) == 3:
        return SipRequest(first[0], first[1], headers, raw)
    return None


class SipCaller(asyncio.DatagramProtocol):
    """A minimal UAC: one call, INVITE/ACK/BYE, answers the far end's BYE with 200."""

    def __init__(self, target: tuple[str, int], local_ip: str = "127.0.0.1",
                 user: str = "ai") -> None:
        self.target = target
        self.local_ip = local_ip
        self.uri = f"sip:{user}@{target[0]}:{target[1]}"
        self.call_id = f"{secrets.token_hex(8)}@{local_ip}"
        self.tag = secrets.token_hex(4)
        self.remote_tag = ""
        self.cseq = 1
        self.transport: asyncio.DatagramTransport | None = None
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.bye_received = asyncio.Event()
        self.remote_contact = self.uri

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
        message = parse_sip(data)
        if isinstance(message, SipResponse):
            self.responses.put_nowait(message)
        elif isinstance(message, SipRequest):
            self._answer(message, addr)

    def _answer(self, request: SipRequest, addr: tuple[str, int]) -> None:
        status = "200 OK" if request.method in ("BYE", "OPTIONS", "INVITE") else "405 Not Allowed"
        if request.method == "ACK":
            return
        lines = [f"SIP/2.0 {status}"]
        for name, value in request.raw_headers:
            if name.lower() in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"):
                lines.append(f"{name}: {value}")
        lines.append("Content-Length: 0")
        assert self.transport is not None
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)
        if request.method == "BYE":
            self.bye_received.set()

    def _request(self, method: str, cseq: int, body: str = "", to_tag: str = "",
                 in_dialog: bool = False) -> bytes:
        uri = self.uri if method == "INVITE" and not in_dialog else self.remote_contact
        to = f"<{self.uri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local_ip}:{self.port}"
            f";branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:caller@{self.local_ip}>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:caller@{self.local_ip}:{self.port}>",
            "User-Agent: opensips-ai-devcaller",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    async def invite(self, sdp: str, timeout: float = 30.0) -> SipResponse:
        """Send INVITE (retransmitted per T1 until a response), ACK a final response."""
        assert self.transport is not None
        message = self._request("INVITE", self.cseq, sdp)
        deadline = time.monotonic() + timeout
        interval, provisional = 0.5, False
        while True:
            if not provisional:
                self.transport.sendto(message, self.target)
            try:
                response = await asyncio.wait_for(self.responses.get(), interval)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError("no final response to INVITE") from None
                interval = min(interval * 2, 4.0)
                continue
            if response.status < 200:
                provisional = True
                continue
            self.remote_tag = _tag(response.headers.get("to", ""))
            contact = re.search(r"<([^>]+)>", response.headers.get("contact", ""))
            if contact:
                self.remote_contact = contact.group(1)
            if response.status >= 200:
                self.transport.sendto(self._request("ACK", self.cseq, to_tag=self.remote_tag),
                                      self.target)
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

    async def bye(self, timeout: float = 5.0) -> int | None:
        if self.bye_received.is_set():
            return None
        assert self.transport is not None
        self.cseq += 1
        self.transport.sendto(self._request("BYE", self.cseq, to_tag=self.remote_tag),
                              self.target)
        try:
            while True:
                response = await asyncio.wait_for(self.responses.get(), timeout)
                if response.headers.get("cseq", "").endswith("BYE"):
                    return response.status
        except TimeoutError:
            return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _tag(header: str) -> str:
    match = re.search(r";\s*tag=([^;>\s]+)", header)
    return match.group(1) if match else ""
