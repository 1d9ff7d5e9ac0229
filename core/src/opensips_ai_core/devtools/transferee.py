"""The caller's side of a blind transfer (RFC 3515 REFER), as a phone that supports it.

After `SipCaller` has accepted the bot's REFER (202), `BlindTransfer.run` follows it:
a NOTIFY "SIP/2.0 100 Trying" (Event: refer, message/sipfrag), a new INVITE to the
Refer-To URI carrying the REFER's Referred-By, with its own RTP stream (`RtpPeer`),
then a terminating NOTIFY with the new call's final status ("SIP/2.0 200 OK", or the
failure: the target's 4xx-6xx, 408 when it never answered). The bot answers each
NOTIFY and, after a 2xx, ends its call with a BYE (which the `SipCaller` answers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opensips_ai_core.devtools.sip_uac import (
    ReferRequest,
    SipCaller,
    make_sdp,
    parse_media_address,
)
from opensips_ai_core.devtools.softphone import RtpPeer
from opensips_ai_core.signalling.headers import reason_for
from opensips_ai_core.signalling.sip.message import SipParseError, uri_host_port


@dataclass
class Notified:
    """One NOTIFY sent to the bot: its sipfrag and the bot's answer (None: none came)."""

    sipfrag: str
    answered: int | None


@dataclass
class TransferOutcome:
    """How following a REFER went; `leg`/`rtp` are the new call when it was answered."""

    refer: ReferRequest
    status: int
    reason: str
    notified: list[Notified] = field(default_factory=list)
    leg: SipCaller | None = None
    rtp: RtpPeer | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class BlindTransfer:
    """Follows one accepted REFER of the `dialog` (the call with the bot)."""

    def __init__(self, dialog: SipCaller, refer: ReferRequest, *, codec: str = "PCMU",
                 ring_timeout_s: float = 20.0) -> None:
        self.dialog = dialog
        self.refer = refer
        self.codec = codec
        self.ring_timeout_s = ring_timeout_s

    async def _notify(self, outcome: TransferOutcome, status: int, reason: str, *,
                      final: bool) -> None:
        sipfrag = f"SIP/2.0 {status} {reason}"
        answered = await self.dialog.notify(self.refer, sipfrag, final=final)
        outcome.notified.append(Notified(sipfrag, answered))

    async def run(self) -> TransferOutcome:
        outcome = TransferOutcome(self.refer, 100, "Trying")
        await self._notify(outcome, 100, "Trying", final=False)
        uri = self.refer.refer_to.split("?", 1)[0]  # no embedded headers (Replaces...)
        try:
            if not uri.lower().startswith("sip:"):
                raise SipParseError("bad_uri", uri)
            target = uri_host_port(uri)
        except SipParseError:
            outcome.status, outcome.reason = 400, "Bad Request"
            await self._notify(outcome, 400, "Bad Request", final=True)
            return outcome
        await self._call(outcome, uri, target)
        await self._notify(outcome, outcome.status, outcome.reason, final=True)
        return outcome

    async def _call(self, outcome: TransferOutcome, uri: str, target: tuple[str, int]) -> None:
        """The new INVITE; sets the outcome's status and, when answered, its leg."""
        rtp = await RtpPeer(codec=self.codec, payload_type=0 if self.codec == "PCMU" else 8
                            ).open()
        leg = await SipCaller(target, request_uri=uri).open()
        extra = [("Referred-By", self.refer.referred_by)] if self.refer.referred_by else []
        try:
            answer = await leg.invite(make_sdp("127.0.0.1", rtp.local_port, codecs=(self.codec,)),
                                      timeout=self.ring_timeout_s, extra=extra)
        except TimeoutError:
            answer = None
        if answer is None or answer.status >= 300:
            outcome.status, outcome.reason = (408, reason_for(408)) if answer is None \
                else (answer.status, answer.reason)
            await rtp.close()
            leg.close()
            return
        outcome.status, outcome.reason = answer.status, answer.reason
        try:
            ip, port, _ = parse_media_address(answer.body)
        except ValueError:
            outcome.status, outcome.reason = 488, reason_for(488)
            await leg.bye()
            await rtp.close()
            leg.close()
            return
        rtp.start((ip, port))
        outcome.leg, outcome.rtp = leg, rtp
