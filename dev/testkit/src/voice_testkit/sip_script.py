"""The SIP side of the OpenSIPS double (`OpenSipsPeer(sip=True)`): core/opensips/opensips.cfg,
tm, sl and b2b_entities as OpenSIPS 3.6.8 answered real SIP callers (docs/opensips.md,
"The double's SIP side against OpenSIPS 3.6.8").

On a real UDP socket on 127.0.0.1, for requests from outside a dialog:

- OPTIONS: `200 OK` while the gate is open (`$shv(ai_core)` 1), else the gate's refusal;
- INVITE with the gate shut: the script's stateless `503 Service Unavailable (no core)`
  (`(draining)` at 2) with `Retry-After: $shv(ai_retry_after)`, answered again for each
  retransmission; with the gate open: an INVITE transaction, `100 Giving it a try`, a UA
  session and its NEW event, then the replies the engine sends with `ua_session_reply`;
- CANCEL: matched to an INVITE transaction by Call-ID and top Via branch. Matched:
  `200 canceling` (tm's To-tag), and the first one raises TERMINATED/CANCEL; OpenSIPS
  sends no 487 (the engine does); once the core has deleted the session, no answer at
  all. Unmatched (no transaction: unknown, another branch, or an INVITE the gate
  refused statelessly): the script's `481`;
- in a dialog: an ACK is absorbed (and stops its INVITE's retransmissions); a BYE of a
  session is answered `200 OK` and raises TERMINATED; a BYE whose To-tag is a B2B key
  of no session (deleted, or an older run's) `200 OK` without an event; anything else
  `481`. Other methods: `405`.

Like OpenSIPS' core, every reply's top Via gets `;received=<source IP>` and `;rport=<source
port>` when the request's Via has `;rport` (and the reply goes to the source address);
without `rport`, `received` only when the Via's host is not the source IP, and the reply
goes to the source IP at the Via's port. Like tm, a retransmitted INVITE is absorbed:
it gets the transaction's last reply again (100, a provisional, or the final) and is not
processed twice; a final reply to an INVITE (2xx or not) is retransmitted, 500 ms
doubling up to 4 s, until its ACK or the end of the script's `fr_timeout` (5 s) after it,
so 4 copies at most.

Unlike the real one: transactions are kept as long as the socket (tm forgets them after
its wait timer: an INVITE retransmitted 9 s after its ACK was a new call there, 0.7 s
after it got the last reply); the To-tags of sl and tm have the real ones' shape
(`XXXX.<32 hex>`, `XXXX-<32 hex>`, the same for a request's retransmissions and for the
CANCEL of a refused INVITE) but not their values; TCP, and a request whose Via already has
`received`, are not played.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voice_testkit.procs import LOOPBACK

if TYPE_CHECKING:
    from voice_testkit.opensips_peer import OpenSipsPeer

# tm's final-reply retransmission on UDP (timer G): T1 doubling up to T2, for as long as
# the script's modparam("tm", "fr_timeout", 5) lets it wait for the ACK.
T1_S, T2_S = 0.5, 4.0
FINAL_REPLY_WAIT_S = 5.0
DEFAULT_SIP_PORT = 5060
# A To-tag b2b_entities takes for one of its keys (b2b_parse_key's format).
B2B_KEY = re.compile(r"^B2B\.\d+\.\d+\.")
# The top Via's sent-by ("SIP/2.0/UDP host[:port]") and the parameters after it.
VIA = re.compile(r"^(?P<name>Via|v)(?P<colon>\s*:\s*)(?P<proto>SIP\s*/\s*2\.0\s*/\s*\S+)\s+"
                 r"(?P<host>\[[^\]]+\]|[^\s:;,]+)(?::(?P<port>\d+))?(?P<params>[^,\r\n]*)"
                 r"(?P<rest>.*)$", re.I)


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


def via_branch(headers: str) -> str:
    match = re.search(r";\s*branch=([^;,\s]+)", header(headers, "via"), re.I)
    return match.group(1) if match else ""


def from_tag(headers: str) -> str:
    match = re.search(r";\s*tag=([^;,\s]+)", header(headers, "from"), re.I)
    return match.group(1) if match else ""


def stamp_via(headers: str, source: tuple[str, int]) -> tuple[str, tuple[str, int]]:
    """The headers with the top Via as OpenSIPS' core writes it into its replies, and
    where the replies go (RFC 3261 18.2.2, RFC 3581), as 3.6.8 did:

    - `;rport` in the Via: `;received=<source IP>` right after the sent-by, `rport`
      given the source port in place; the replies go to the source address;
    - no `rport`, the Via's host not the source IP: `;received=<source IP>` right after
      the sent-by; the replies go to the source IP at the Via's port;
    - no `rport`, the Via's host the source IP: the Via as it came, the replies to its
      host and port.
    """
    lines = headers.split("\r\n")
    index = next((i for i, line in enumerate(lines) if VIA.match(line)), None)
    if index is None:
        return headers, source
    via = VIA.match(lines[index])
    assert via is not None
    params = via["params"]
    rport = re.search(r";\s*rport(?:=\d*)?(?=;|\s|$)", params, re.I)
    sent_by = via["host"] + (f":{via['port']}" if via["port"] else "")
    received = ""
    if rport is not None:
        params = params[:rport.start()] + f";rport={source[1]}" + params[rport.end():]
        received = f";received={source[0]}"
        destination = source
    else:
        if via["host"] != source[0]:
            received = f";received={source[0]}"
        destination = (source[0], int(via["port"] or DEFAULT_SIP_PORT))
    lines[index] = (f"{via['name']}{via['colon']}{via['proto']} {sent_by}{received}{params}"
                    f"{via['rest']}")
    return "\r\n".join(lines), destination


def plain_reply(headers: str, code: int, reason: str, to_tag: str) -> str:
    """A reply as sl/tm build it: Via, To (tagged, unless `to_tag` is empty), From,
    Call-ID, CSeq, Server."""
    lines = {line.partition(":")[0].strip().lower(): line
             for line in headers.split("\r\n") if line}
    to = lines["to"] + ("" if ";tag=" in lines["to"] or not to_tag else f";tag={to_tag}")
    copied = [lines["via"], to, lines["from"], lines["call-id"], lines["cseq"]]
    return (f"SIP/2.0 {code} {reason}\r\n" + "".join(f"{line}\r\n" for line in copied)
            + "Server: OpenSIPS (3.6.8 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n")


@dataclass
class InviteTransaction:
    """tm's server transaction of a caller's INVITE handed to a UA session."""

    key: str                              # the session's B2B key (its To-tag)
    call_id: str
    branch: str
    destination: tuple[str, int]          # where its replies go
    last_reply: str                       # what a retransmitted INVITE gets again
    final: bool = False
    acked: bool = False
    cancelled: bool = False               # a CANCEL has been answered (and reported)
    final_copies: int = 0                 # how often the final reply went out by itself
    retransmitting: asyncio.Task[None] | None = field(default=None, repr=False)


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
        # INVITE transactions by (Call-ID, top Via branch), and by session key.
        self.transactions: dict[tuple[str, str], InviteTransaction] = {}
        self.by_key: dict[str, InviteTransaction] = {}
        self.received_requests: list[str] = []  # the methods that reached the script
        # sl's and tm's To-tags: a prefix of the run, then a hash of the request.
        self._sl_prefix = secrets.token_hex(2)
        self._tm_prefix = secrets.token_hex(2)

    async def start(self) -> SipScript:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(LOOPBACK, self.requested_port))
        return self

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        """Close the socket and end every retransmission (none is left running)."""
        tasks = [t.retransmitting for t in self.transactions.values()
                 if t.retransmitting is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.close()

    def close(self) -> None:
        for transaction in self.transactions.values():
            if transaction.retransmitting is not None:
                transaction.retransmitting.cancel()
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
        method, raw_headers, body, to_tag = request
        self.received_requests.append(method)
        # The replies carry the Via as the core stamps it; the events the request as it came.
        headers, destination = stamp_via(raw_headers, addr)
        if to_tag:
            self._in_dialog(method, headers, to_tag, destination)
        elif method == "OPTIONS":
            self.send(plain_reply(headers, 200, "OK", self.sl_tag(headers))
                      if self.peer.gate_open()
                      else self.peer.script_refusal(headers, self.sl_tag(headers)),
                      destination)
        elif method == "INVITE":
            self._invite(raw_headers, headers, body, destination)
        elif method == "CANCEL":
            self._cancel(raw_headers, headers, destination)
        elif method != "ACK":
            self.send(plain_reply(headers, 405, "Method Not Allowed", self.sl_tag(headers)),
                      destination)
        self.peer._notify()

    def _in_dialog(self, method: str, headers: str, to_tag: str,
                   destination: tuple[str, int]) -> None:
        if method == "ACK":
            # b2b_entities takes a session's ACK (the ACK of a non-2xx on the INVITE's
            # branch, of a 2xx on a new one); the script absorbs the others.
            transaction = self.by_key.get(to_tag)
            if transaction is not None and transaction.call_id == header(headers, "call-id"):
                self._acked(transaction)
            return
        session = self.peer.sessions.get(to_tag)
        if method == "BYE" and session is not None:
            self.send(plain_reply(headers, 200, "OK", to_tag), destination)
            self.peer.bye(to_tag)
            return
        if method == "BYE" and B2B_KEY.match(to_tag):
            # b2b_entities answers a BYE whose To-tag is a B2B key of no session itself
            # (one it deleted, or an older run's): 200, no event.
            self.send(plain_reply(headers, 200, "OK", to_tag), destination)
            return
        self.send(plain_reply(headers, 481, "Call/Transaction Does Not Exist", to_tag),
                  destination)

    def _invite(self, raw_headers: str, headers: str, body: str,
                destination: tuple[str, int]) -> None:
        call_id = header(headers, "call-id")
        transaction = self.transactions.get((call_id, via_branch(headers)))
        if transaction is not None:
            # A retransmission: tm absorbs it and sends its last reply again.
            self.send(transaction.last_reply, transaction.destination)
            return
        if not self.peer.gate_open():
            # Stateless: no transaction, so a retransmission runs the script again.
            self.send(self.peer.script_refusal(headers, self.sl_tag(headers)), destination)
            return
        # mf_process_maxfwd_header: the NEW carries the INVITE as the script left it.
        forwards = header(raw_headers, "max-forwards")
        if forwards.isdigit():
            raw_headers = raw_headers.replace(f"Max-Forwards: {forwards}\r\n",
                                              f"Max-Forwards: {int(forwards) - 1}\r\n")
        trying = plain_reply(headers, 100, "Giving it a try", "")
        key = self.peer.new_key()
        transaction = InviteTransaction(key, call_id, via_branch(headers), destination, trying)
        self.transactions[(call_id, transaction.branch)] = transaction
        self.by_key[key] = transaction
        self.send(trying, destination)
        self.peer.answer_caller(key, call_id, raw_headers, body, destination,
                                reply_headers=headers)

    def _cancel(self, raw_headers: str, headers: str, destination: tuple[str, int]) -> None:
        transaction = self.transactions.get((header(headers, "call-id"), via_branch(headers)))
        if transaction is None:
            # The script: t_check_trans() found nothing -> send_reply(481).
            self.send(plain_reply(headers, 481, "Call/Transaction Does Not Exist",
                                  self.sl_tag(headers)), destination)
            return
        if transaction.key not in self.peer.sessions:
            # The core deleted the session: tm still has the INVITE, b2b_entities no
            # entity to cancel, and nothing is sent.
            return
        self.send(plain_reply(headers, 200, "canceling", self.tm_tag(headers)), destination)
        if not transaction.cancelled:
            transaction.cancelled = True
            # TERMINATED/CANCEL carries the CANCEL as it came.
            self.peer.cancel(transaction.key, raw_headers)

    def reply_to_invite(self, key: str, reply: str, code: int) -> bool:
        """Send a UA session's reply to its caller's INVITE (ua_session_reply) through the
        INVITE's transaction: kept as its last reply, and a final one retransmitted until
        the ACK. False when the session has no such transaction (not a SIP caller's)."""
        transaction = self.by_key.get(key)
        if transaction is None or transaction.final:
            return False
        transaction.last_reply = reply
        self.send(reply, transaction.destination)
        if code >= 200:
            transaction.final = True
            transaction.final_copies = 1
            transaction.retransmitting = asyncio.get_running_loop().create_task(
                self._retransmit(transaction))
        return True

    async def _retransmit(self, transaction: InviteTransaction) -> None:
        """Timer G: the final reply again after T1, 2*T1, ... (at most T2 apart) until
        the ACK, for at most FINAL_REPLY_WAIT_S after it went out (counted in nominal
        intervals, so a late loop never adds a copy: 4 in all without an ACK)."""
        interval, waited = T1_S, 0.0
        while waited + interval <= FINAL_REPLY_WAIT_S:
            await asyncio.sleep(interval)
            waited += interval
            if transaction.acked:
                break
            self.send(transaction.last_reply, transaction.destination)
            transaction.final_copies += 1
            interval = min(2 * interval, T2_S)
        self.peer._notify()  # for waiters on `retransmitting`

    def _acked(self, transaction: InviteTransaction) -> None:
        transaction.acked = True
        if transaction.retransmitting is not None:
            transaction.retransmitting.cancel()
        self.peer._notify()

    def sl_tag(self, headers: str) -> str:
        """sl's To-tag: the same for a request's retransmissions and its CANCEL."""
        return f"{self._sl_prefix}.{self._request_hash(headers)}"

    def tm_tag(self, headers: str) -> str:
        return f"{self._tm_prefix}-{self._request_hash(headers)}"

    @staticmethod
    def _request_hash(headers: str) -> str:
        identity = "\n".join((header(headers, "call-id"), from_tag(headers), via_branch(headers)))
        return hashlib.md5(identity.encode()).hexdigest()

    @property
    def retransmitting(self) -> int:
        """How many final replies are still being retransmitted."""
        return sum(1 for t in self.transactions.values() if not t.acked
                   and t.retransmitting is not None and not t.retransmitting.done())
