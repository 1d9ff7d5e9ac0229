"""A raw UDP SIP peer for tests: sends hand-written datagrams, collects what comes back."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from opensips_ai_core.signalling.sip.message import SipMessage, SipParseError, parse_message
from voice_testkit.procs import LOOPBACK

OFFER = (
    "v=0\r\no=softphone 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
_counter = itertools.count(1)


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.queue.put_nowait(data)


@dataclass
class RawSipPeer:
    target: tuple[str, int]
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    transport: asyncio.DatagramTransport | None = None

    async def open(self) -> RawSipPeer:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Collector(self.queue), local_addr=(LOOPBACK, 0))
        return self

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes | str) -> None:
        assert self.transport is not None
        self.transport.sendto(data.encode() if isinstance(data, str) else data, self.target)

    async def recv(self, timeout: float = 5.0) -> SipMessage:
        data = await asyncio.wait_for(self.queue.get(), timeout)
        try:
            return parse_message(data, 1 << 20)
        except SipParseError as error:
            # A 400 copies the request's broken CSeq: keep what could be parsed.
            assert error.partial is not None, error
            return error.partial

    async def expect(self, status: int | None = None, method: str | None = None,
                     timeout: float = 5.0) -> SipMessage:
        """The next message with this status (or request method); others are skipped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {status or method} within {timeout} s")
            try:
                message = await self.recv(remaining)
            except TimeoutError:
                raise AssertionError(f"no {status or method} within {timeout} s") from None
            if (status is not None and message.status == status) or \
                    (method is not None and message.method == method):
                return message

    async def drain(self, duration: float) -> list[SipMessage]:
        """Everything that arrives within `duration` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        messages = []
        while (remaining := deadline - loop.time()) > 0:
            try:
                messages.append(await self.recv(remaining))
            except TimeoutError:
                break
        return messages

    def request(self, method: str, *, call_id: str | None = None, cseq: int = 1,
                branch: str | None = None, to_tag: str | None = None,
                from_tag: str = "caller1", body: str = "", via_port: int | None = None,
                rport: bool = True, extra: str = "", cseq_method: str | None = None) -> str:
        """A well-formed request from this peer (override pieces to break it)."""
        call_id = call_id or f"raw-{next(_counter)}@127.0.0.1"
        branch = branch or f"z9hG4bK-raw-{next(_counter)}"
        to = f"<sip:ai@{self.target[0]}:{self.target[1]}>" + (f";tag={to_tag}" if to_tag else "")
        via = f"SIP/2.0/UDP {LOOPBACK}:{via_port or self.port};branch={branch}"
        lines = [
            f"{method} sip:ai@{self.target[0]}:{self.target[1]} SIP/2.0",
            f"Via: {via}{';rport' if rport else ''}",
            f"From: \"Raw\" <sip:raw@{LOOPBACK}:{self.port}>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {cseq_method or method}",
            f"Contact: <sip:raw@{LOOPBACK}:{self.port}>",
            "Max-Forwards: 70",
        ]
        if extra:
            lines.append(extra.rstrip("\r\n"))
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def ack_for(self, response: SipMessage, invite: str) -> str:
        """The ACK for a 2xx (new branch) or a non-2xx (the INVITE's branch)."""
        invite_message = parse_message(invite.encode())
        number = invite_message.cseq[0]
        branch = None
        if response.status and response.status >= 300:
            branch = invite_message.get("Via").split("branch=")[1].split(";")[0]  # type: ignore[union-attr]
        to_tag = response.get("To").split("tag=")[1]  # type: ignore[union-attr]
        return self.request("ACK", call_id=response.call_id, cseq=number, branch=branch,
                            to_tag=to_tag)
