"""The SIP side of the OpenSIPS double (`OpenSipsPeer(sip=True)`): core/opensips/opensips.cfg
and b2b_entities as OpenSIPS 3.6.8 answered real SIP callers (docs/opensips.md).

On a real UDP socket on 127.0.0.1, for requests from outside a dialog:

- OPTIONS: `200 OK` while the gate is open (`$shv(ai_core)` 1), else the gate's refusal;
- INVITE with the gate shut: the script's stateless `503 Service Unavailable (no core)`
  (`(draining)` at 2) with `Retry-After: $shv(ai_retry_after)`, answered again for each
  retransmission; with the gate open: `100 Giving it a try`, a UA session and its NEW
  event, then the replies the engine sends with `ua_session_reply` (retransmissions get
  the 100 again);
- in a dialog: an ACK is absorbed; a BYE of a session is answered `200 OK` and raises
  TERMINATED; anything else `481`. Other methods: `405`.

Not played: CANCEL (answered 481 here), retransmission of final replies, and the
Via's `received`/`rport` parameters OpenSIPS adds when the request asks for them.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

from voice_testkit.procs import LOOPBACK

if TYPE_CHECKING:
    from voice_testkit.opensips_peer import OpenSipsPeer


def parse_request(data: bytes) -> tuple[str, str, str, str] | None:
    """(method, header text with CRLF after each line, body, the To-tag or "") of a
    request; None for a response or something unreadable."""
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    first, _, headers = head.partition("\r\n")
    parts = first.split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0":
        return None
    lines = [line for line in headers.split("\r\n") if line]
    to = next((line for line in lines if line.lower().startswith(("to:", "t:"))), "")
    to_tag = to.split(";tag=")[1].split(";")[0] if ";tag=" in to else ""
    return parts[0], "".join(f"{line}\r\n" for line in lines), body, to_tag


def header(headers: str, name: str) -> str:
    for line in headers.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


def plain_reply(headers: str, code: int, reason: str, to_tag: str) -> str:
    """A reply as sl/tm build it: Via, To (tagged, unless `to_tag` is empty), From,
    Call-ID, CSeq, Server."""
    lines = {line.partition(":")[0].strip().lower(): line
             for line in headers.split("\r\n") if line}
    to = lines["to"] + ("" if ";tag=" in lines["to"] or not to_tag else f";tag={to_tag}")
    copied = [lines["via"], to, lines["from"], lines["call-id"], lines["cseq"]]
    return (f"SIP/2.0 {code} {reason}\r\n" + "".join(f"{line}\r\n" for line in copied)
            + "Server: OpenSIPS (3.6.8 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, script: SipScript) -> None:
        self.script = script

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.script.received(data, (addr[0], addr[1]))


class SipScript:
    def __init__(self, peer: OpenSipsPeer, port: int = 0) -> None:
        self.peer = peer
        self.requested_port = port
        self.transport: asyncio.DatagramTransport | None = None
        self.keys: dict[str, str] = {}          # a caller's Call-ID -> its session's key
        self.received_requests: list[str] = []  # the methods that reached the script

    async def start(self) -> SipScript:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(LOOPBACK, self.requested_port))
        return self

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def send(self, message: str, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(message.encode(), addr)

    def received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_request(data)
        if request is None:
            return  # a response (to a BYE OpenSIPS sent, say): tm absorbs it
        method, headers, body, to_tag = request
        self.received_requests.append(method)
        if to_tag:
            self._in_dialog(method, headers, to_tag, addr)
        elif method == "OPTIONS":
            self.send(plain_reply(headers, 200, "OK", self._sl_tag())
                      if self.peer.gate_open() else self.peer.script_refusal(headers), addr)
        elif method == "INVITE":
            self._invite(headers, body, addr)
        elif method == "CANCEL":
            self.send(plain_reply(headers, 481, "Call/Transaction Does Not Exist",
                                  self._sl_tag()), addr)
        elif method != "ACK":
            self.send(plain_reply(headers, 405, "Method Not Allowed", self._sl_tag()), addr)
        self.peer._notify()

    def _in_dialog(self, method: str, headers: str, to_tag: str,
                   addr: tuple[str, int]) -> None:
        if method == "ACK":
            return  # b2b_entities takes a session's ACK; the script absorbs the others
        session = self.peer.sessions.get(to_tag)
        if method == "BYE" and session is not None:
            self.send(plain_reply(headers, 200, "OK", to_tag), addr)
            self.peer.bye(to_tag)
            return
        self.send(plain_reply(headers, 481, "Call/Transaction Does Not Exist", to_tag), addr)

    def _invite(self, headers: str, body: str, addr: tuple[str, int]) -> None:
        call_id = header(headers, "call-id")
        key = self.keys.get(call_id)
        if key is not None and key in self.peer.sessions:
            # A retransmission: tm answers it with its last provisional.
            self.send(plain_reply(headers, 100, "Giving it a try", ""), addr)
            return
        if not self.peer.gate_open():
            self.send(self.peer.script_refusal(headers), addr)
            return
        # mf_process_maxfwd_header: the NEW carries the INVITE as the script left it.
        forwards = header(headers, "max-forwards")
        if forwards.isdigit():
            headers = headers.replace(f"Max-Forwards: {forwards}\r\n",
                                      f"Max-Forwards: {int(forwards) - 1}\r\n")
        self.send(plain_reply(headers, 100, "Giving it a try", ""), addr)
        key = self.peer.new_key()
        self.keys[call_id] = key
        self.peer.answer_caller(key, call_id, headers, body, addr)

    @staticmethod
    def _sl_tag() -> str:
        return f"b298.{secrets.token_hex(16)}"
