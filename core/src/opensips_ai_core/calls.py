"""The call manager: the `CallHandler` both signalling backends drive.

It negotiates the SDP, opens the call's RTP session on a port from the range,
starts the conversation, follows re-INVITEs (hold/resume) and ends calls from
either side. Both backends share everything from here on.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import numpy as np

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig, CoreSettings
from opensips_ai_core.media.ports import RtpPortAllocator, RtpPortsExhaustedError
from opensips_ai_core.media.session import RtpSession
from opensips_ai_core.pipeline.conversation import Call, Services
from opensips_ai_core.signalling.base import CallInfo, SignallingBackend, SignallingError
from opensips_ai_core.signalling.sdp import SessionDescription, negotiate
from voice_common import get_development_logger
from voice_common.logs import call_id_var

log = get_development_logger("core.calls")

# Our side of the negotiated direction: the far end holds us with sendonly (we answer
# recvonly) or inactive, and then we send nothing.
HOLD_DIRECTIONS = frozenset({"recvonly", "inactive"})


class CallManager:
    def __init__(self, settings: CoreSettings, bot: BotConfig, services: Services,
                 ports: RtpPortAllocator) -> None:
        self.settings = settings
        self.bot = bot
        self.services = services
        self.ports = ports
        self.backend: SignallingBackend | None = None
        self.calls: dict[str, Call] = {}
        self.sessions: dict[str, RtpSession] = {}
        self._versions: dict[str, int] = {}
        self.accepting = True

    # ------------------------------------------------------------ CallHandler
    async def new_call(self, info: CallInfo, offer: SessionDescription) -> SessionDescription:
        token = call_id_var.set(info.call_id)
        try:
            return await self._new_call(info, offer)
        except SignallingError as err:
            metrics.CALLS.labels(info.backend, str(err.code)).inc()
            metrics.SIGNALLING_ERRORS.labels(str(err.code)).inc()
            log.warning("Call %s refused: %s", info.call_id, err)
            raise
        finally:
            call_id_var.reset(token)

    async def _new_call(self, info: CallInfo, offer: SessionDescription) -> SessionDescription:
        if not self.accepting:
            raise SignallingError(503, "Service Unavailable")
        if info.call_id in self.calls:
            raise SignallingError(482, "Loop Detected")
        if len(self.calls) >= self.settings.max_calls:
            raise SignallingError(486, "Busy Here")
        holder: dict[str, Call] = {}

        def on_audio(pcm: np.ndarray) -> None:
            if (call := holder.get("call")) is not None:
                call.on_audio(pcm)

        def on_dtmf(digit: str) -> None:
            if (call := holder.get("call")) is not None:
                call.on_dtmf(digit)

        def on_talkspurt() -> None:
            if (call := holder.get("call")) is not None:
                call.on_first_packet()

        try:
            session = await RtpSession.open(
                self.settings.rtp_bind_address, self.ports, on_audio=on_audio, on_dtmf=on_dtmf,
                on_talkspurt_start=on_talkspurt)
        except (OSError, RtpPortsExhaustedError) as err:
            log.error("No RTP port for %s: %s", info.call_id, err)
            raise SignallingError(503, "Service Unavailable") from None
        try:
            version = secrets.randbelow(2**31)
            answer, media = negotiate(offer, self.settings.sdp_address, session.local_port,
                                      session_version=version)
        except SignallingError:
            await session.close()
            raise
        except Exception as err:  # a parser corner case must not take the process down
            await session.close()
            log.exception("SDP negotiation of %s failed", info.call_id)
            raise SignallingError(488, "Not Acceptable Here") from err
        session.configure(media.remote_ip, media.remote_port, media.codec, media.payload_type,
                          media.dtmf_payload_type)
        session.set_sending(media.direction not in HOLD_DIRECTIONS)
        call = Call(info, session, self.services, self.bot, self.hangup)
        holder["call"] = call
        self.calls[info.call_id] = call
        self.sessions[info.call_id] = session
        self._versions[info.call_id] = version
        metrics.CALLS.labels(info.backend, "answered").inc()
        metrics.ACTIVE_CALLS.set(len(self.calls))
        log.info("Call %s from %s answered: %s/%d, RTP %s:%d <-> %s:%d", info.call_id,
                 info.caller, media.codec, media.payload_type, self.settings.sdp_address,
                 session.local_port, media.remote_ip, media.remote_port)
        call.start()
        return answer

    async def update_call(self, call_id: str, offer: SessionDescription) -> SessionDescription:
        session = self.sessions.get(call_id)
        if session is None:
            raise SignallingError(481, "Call/Transaction Does Not Exist")
        self._versions[call_id] = self._versions.get(call_id, 0) + 1
        answer, media = negotiate(offer, self.settings.sdp_address, session.local_port,
                                  session_version=self._versions[call_id])
        session.configure(media.remote_ip, media.remote_port, media.codec, media.payload_type,
                          media.dtmf_payload_type)
        on_hold = media.direction in HOLD_DIRECTIONS
        session.set_sending(not on_hold)
        log.info("Call %s %s (%s)", call_id, "on hold" if on_hold else "resumed", media.direction)
        return answer

    async def end_call(self, call_id: str, reason: str) -> None:
        call = self.calls.pop(call_id, None)
        session = self.sessions.pop(call_id, None)
        self._versions.pop(call_id, None)
        if call is not None:
            await call.close(reason)
        if session is not None:
            stats = session.stats
            metrics.RTP_PACKETS.labels("in", "ok").inc(stats.packets_in)
            metrics.RTP_PACKETS.labels("out", "ok").inc(stats.packets_out)
            metrics.RTP_PACKETS.labels("in", "stranger").inc(stats.dropped_strangers)
            metrics.RTP_PACKETS.labels("in", "malformed").inc(stats.malformed)
            await session.close()
        metrics.ACTIVE_CALLS.set(len(self.calls))

    # ------------------------------------------------------------ the bot's side
    async def hangup(self, call_id: str) -> None:
        """The bot ends the call: signalling first (BYE), then local clean-up."""
        if self.backend is not None and call_id in self.calls:
            try:
                await self.backend.hangup(call_id)
            except Exception:
                log.exception("Hang-up of %s failed in signalling", call_id)
        await self.end_call(call_id, "bot hung up")

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Refuse new calls and end the current ones."""
        self.accepting = False
        ids = list(self.calls)
        if ids:
            log.info("Ending %d calls for shutdown", len(ids))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self.hangup(i) for i in ids), return_exceptions=True),
                    timeout_s)

    def snapshot(self) -> list[dict[str, object]]:
        return [call.snapshot() for call in self.calls.values()]

