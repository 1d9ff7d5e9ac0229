"""The call manager: the `CallHandler` both signalling backends drive.

It admits calls, negotiates the SDP, opens the call's RTP session on a port from
the range, starts the conversation, follows re-INVITEs (hold/resume) and ends
calls from either side. Both backends share everything from here on.

Admission follows what the call needs: a call slot (CORE_MAX_CALLS, else 486), a
speech-recognition stream (CORE_ASR_MAX_STREAMS, which must match the ASR
service's ASR_MAX_CONCURRENT_STREAMS, else 503 with Retry-After: a call the
recognizer refuses would be answered and never heard) and an RTP port (else 503).
A slot is held from the INVITE until the call's RTP session and ASR stream are
closed, and released on every failure of the set-up. When the bot hangs up, the
slot, port and stream are released at once; the BYE transaction goes on by itself.

A drain (`start_drain`, then `drain`) refuses new calls with 503 and Retry-After while
the active ones go on until they end or the drain's time is up; then each still going
hears the bot's closing line and gets a BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import secrets

import numpy as np

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig, CoreSettings
from opensips_ai_core.media.ports import RtpPortAllocator, RtpPortsExhaustedError
from opensips_ai_core.media.session import RtpSession
from opensips_ai_core.pipeline.conversation import Call, Services
from opensips_ai_core.recording.archive import CallArchive
from opensips_ai_core.recording.audio import CallRecorder
from opensips_ai_core.signalling.base import CallInfo, SignallingBackend, TransferResult
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.offer_answer import NegotiatedMedia, make_offer, negotiate
from opensips_ai_core.signalling.sdp import SessionDescription
from voice_common import get_development_logger
from voice_common.logs import call_id_var

log = get_development_logger("core.calls")

# Our side of the negotiated direction: the far end holds us with sendonly (we answer
# recvonly) or inactive, and then we send nothing.
HOLD_DIRECTIONS = frozenset({"recvonly", "inactive"})
# Retry-After (seconds) of a 503 at capacity: about one short call's turn.
RETRY_AFTER_S = 5


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
        # Late offers: our offer is out, the answer (the ACK's SDP) not yet in.
        self._awaiting_answer: dict[str, tuple[CallInfo, _Callbacks]] = {}
        # Calls holding a slot: from admission until their media and ASR stream are closed.
        self._admitted: set[str] = set()
        self._byes: set[asyncio.Task[None]] = set()
        self.accepting = True
        # Set while draining: when the drain's time is up (loop time), for Retry-After.
        self.drain_deadline: float | None = None
        self._released = asyncio.Event()  # a slot was freed (what a drain waits on)
        # Per-call bots (an outbound call's overrides), taken when the call starts.
        self._bots: dict[str, BotConfig] = {}
        # Recordings, transcripts, the post-call webhook (recording/archive.py).
        self.archive = CallArchive(settings)
        self._closing: dict[str, Call] = {}  # ended, closing, not archived yet
        self._recorders: dict[str, CallRecorder] = {}

    # ------------------------------------------------------------ capacity
    @property
    def held_slots(self) -> int:
        return len(self._admitted)

    def refusal(self) -> SignallingError | None:
        """Why a new call would be refused now, or None when one can be taken."""
        if (draining := self.drain_refusal()) is not None:
            return draining
        if not self.accepting:
            return SignallingError(503, "Service Unavailable (shutting down)")
        if self.held_slots >= self.settings.max_calls:
            return SignallingError(486, "Busy Here")
        if self.held_slots >= self.settings.asr_max_streams:
            return SignallingError(503, "Service Unavailable (speech recognition at capacity)",
                                   retry_after=RETRY_AFTER_S)
        if len(self.ports.in_use) >= self.ports.capacity:
            return SignallingError(503, "Service Unavailable (no free RTP port)",
                                   retry_after=RETRY_AFTER_S)
        return None

    def capacity(self) -> dict[str, object]:
        """For /health: what is held against which limit."""
        return {"calls": len(self.calls), "slots_held": self.held_slots,
                "max_calls": self.settings.max_calls,
                "asr_max_streams": self.settings.asr_max_streams,
                "rtp_ports_in_use": len(self.ports.in_use),
                "rtp_ports": self.ports.capacity}

    # ------------------------------------------------------------ CallHandler
    async def new_call(self, info: CallInfo,
                       offer: SessionDescription | None) -> SessionDescription:
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

    async def _new_call(self, info: CallInfo,
                        offer: SessionDescription | None) -> SessionDescription:
        if info.call_id in self._admitted:
            raise SignallingError(482, "Loop Detected")
        if (refused := self.refusal()) is not None:
            raise refused
        self._admitted.add(info.call_id)
        session: RtpSession | None = None
        try:
            callbacks = _Callbacks()
            try:
                session = await RtpSession.open(
                    self.settings.rtp_bind_address, self.ports, on_audio=callbacks.on_audio,
                    on_dtmf=callbacks.on_dtmf, on_talkspurt_start=callbacks.on_talkspurt)
            except (OSError, RtpPortsExhaustedError) as err:
                log.error("No RTP port for %s: %s", info.call_id, err)
                raise SignallingError(503, "Service Unavailable (no free RTP port)",
                                      retry_after=RETRY_AFTER_S) from None
            version = secrets.randbelow(2**31)
            if offer is None:
                ours = make_offer(self.settings.sdp_address, session.local_port, version)
                self.sessions[info.call_id] = session
                self._versions[info.call_id] = version
                self._awaiting_answer[info.call_id] = (info, callbacks)
                log.info("Call %s from %s: no SDP in the INVITE, offering ours on RTP %s:%d",
                         info.call_id, info.caller, self.settings.sdp_address,
                         session.local_port)
                return ours
            answer, media = self._negotiate(info.call_id, offer, session.local_port, version)
            self._start(info, session, callbacks, media, version)
            return answer
        except BaseException:
            # Whatever failed (a refusal, a bug, a CANCEL): nothing of the call may stay.
            self._awaiting_answer.pop(info.call_id, None)
            self.sessions.pop(info.call_id, None)
            self._versions.pop(info.call_id, None)
            if session is not None:
                await session.close()
            self._admitted.discard(info.call_id)
            self._released.set()
            raise

    def _negotiate(self, call_id: str, offer: SessionDescription, local_port: int,
                   version: int) -> tuple[SessionDescription, NegotiatedMedia]:
        try:
            return negotiate(offer, self.settings.sdp_address, local_port,
                             session_version=version)
        except SignallingError:
            raise
        except Exception as err:  # a parser corner case must not take the process down
            log.exception("SDP negotiation of %s failed", call_id)
            raise SignallingError(488, "Not Acceptable Here") from err

    def _start(self, info: CallInfo, session: RtpSession, callbacks: _Callbacks,
               media: NegotiatedMedia, version: int) -> None:
        session.configure(media.remote_ip, media.remote_port, media.codec, media.payload_type,
                          media.dtmf_payload_type)
        session.set_sending(media.direction not in HOLD_DIRECTIONS)
        call = Call(info, session, self.services, self._bots.pop(info.call_id, self.bot),
                    self.hangup)
        callbacks.call = call
        recorder = self.archive.recorder(call.bot, call.transcript.started)
        if recorder is not None:
            self._recorders[info.call_id] = recorder
            session.inbound_tap = recorder.on_caller_frame
            session.pacer.tap = recorder.on_bot_frame
        if hasattr(self.backend, "transfer"):
            call.transfer = functools.partial(self.transfer, info.call_id)
        self.calls[info.call_id] = call
        self.sessions[info.call_id] = session
        self._versions[info.call_id] = version
        metrics.CALLS.labels(info.backend, "answered").inc()
        metrics.ACTIVE_CALLS.set(len(self.calls))
        log.info("Call %s from %s answered: %s/%d, RTP %s:%d <-> %s:%d", info.call_id,
                 info.caller, media.codec, media.payload_type, self.settings.sdp_address,
                 session.local_port, media.remote_ip, media.remote_port)
        call.start()

    async def complete_call(self, call_id: str, answer: SessionDescription) -> None:
        pending = self._awaiting_answer.pop(call_id, None)
        session = self.sessions.get(call_id)
        if pending is None or session is None:
            raise SignallingError(481, "Call/Transaction Does Not Exist")
        info, callbacks = pending
        token = call_id_var.set(call_id)
        try:
            version = self._versions.get(call_id, 0)
            _ours, media = self._negotiate(call_id, answer, session.local_port, version)
            self._start(info, session, callbacks, media, version)
        finally:
            call_id_var.reset(token)

    async def update_call(self, call_id: str, offer: SessionDescription) -> SessionDescription:
        session = self.sessions.get(call_id)
        if session is None or call_id not in self.calls:
            raise SignallingError(481, "Call/Transaction Does Not Exist")
        self._versions[call_id] = self._versions.get(call_id, 0) + 1
        answer, media = self._negotiate(call_id, offer, session.local_port,
                                        self._versions[call_id])
        session.configure(media.remote_ip, media.remote_port, media.codec, media.payload_type,
                          media.dtmf_payload_type)
        on_hold = media.direction in HOLD_DIRECTIONS
        session.set_sending(not on_hold)
        log.info("Call %s %s (%s)", call_id, "on hold" if on_hold else "resumed", media.direction)
        return answer

    async def end_call(self, call_id: str, reason: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is not None:
            # Its transcript stays readable while it closes, until the archive has it.
            self._closing[call_id] = call
        session = self.sessions.pop(call_id, None)
        self._versions.pop(call_id, None)
        self._awaiting_answer.pop(call_id, None)
        self._bots.pop(call_id, None)
        try:
            if call is not None:
                await call.close(reason)
            if session is not None:
                stats = session.stats
                metrics.RTP_PACKETS.labels("in", "ok").inc(stats.packets_in)
                metrics.RTP_PACKETS.labels("out", "ok").inc(stats.packets_out)
                metrics.RTP_PACKETS.labels("in", "stranger").inc(stats.dropped_strangers)
                metrics.RTP_PACKETS.labels("in", "malformed").inc(stats.malformed)
                await session.close()
        finally:
            recorder = self._recorders.pop(call_id, None)
            if call is not None:
                self.archive.call_ended(call.transcript.to_dict(), recorder, call.bot)
                self._closing.pop(call_id, None)
            if call is not None or session is not None:
                self._admitted.discard(call_id)
                self._released.set()
            metrics.ACTIVE_CALLS.set(len(self.calls))

    # ------------------------------------------------------------ the bot's side
    async def hangup(self, call_id: str) -> None:
        """The bot ends the call: the BYE goes out, and the call's resources are released
        at once; the BYE transaction (up to 64*T1 of retransmissions to a caller who may
        have vanished) runs on by itself."""
        if self.backend is not None and call_id in self.calls:
            task = asyncio.get_running_loop().create_task(
                self._signal_hangup(call_id), name=f"hangup:{call_id}")
            self._byes.add(task)
            task.add_done_callback(self._byes.discard)
            await asyncio.sleep(0)  # let the BYE go out before the local clean-up
        await self.end_call(call_id, "bot hung up")

    def override_bot(self, call_id: str, bot: BotConfig) -> None:
        """The bot of one call to come (POST /calls with bot overrides)."""
        self._bots[call_id] = bot

    async def transfer(self, call_id: str, target: str) -> TransferResult:
        """Blind-transfer the call's caller to `target`; on success the call is over."""
        transfer = getattr(self.backend, "transfer", None)
        if transfer is None:
            return TransferResult(False, None, "the signalling backend cannot transfer")
        try:
            call = self.calls.get(call_id)
            bot = call.bot if call is not None else self.bot
            result: TransferResult = await transfer(call_id, target,
                                                    timeout_s=bot.transfer_timeout_s)
        except Exception:
            log.exception("Transfer of %s to %s failed in signalling", call_id, target)
            return TransferResult(False, None, "transfer failed in signalling")
        metrics.TRANSFERS.labels("ok" if result.ok else str(result.code or "none")).inc()
        if call is not None:
            call.transcript.transfer(target, result.ok, result.code, result.reason)
        if result.ok:
            log.info("Call %s transferred to %s", call_id, target)
            await self.end_call(call_id, "transferred")
        return result

    async def _signal_hangup(self, call_id: str) -> None:
        assert self.backend is not None
        try:
            await self.backend.hangup(call_id)
        except Exception:
            log.exception("Hang-up of %s failed in signalling", call_id)

    # ------------------------------------------------------------ drain
    @property
    def draining(self) -> bool:
        return self.drain_deadline is not None

    def _drain_retry_after(self) -> int:
        """Seconds until this core could take calls again: not before the drain ends (it
        then exits and is replaced), and never less than a short call's turn."""
        assert self.drain_deadline is not None
        left = self.drain_deadline - asyncio.get_running_loop().time()
        return max(RETRY_AFTER_S, math.ceil(left))

    def drain_refusal(self) -> SignallingError | None:
        """The 503 a draining core gives what asks for new calls (OPTIONS included)."""
        if self.drain_deadline is None:
            return None
        return SignallingError(503, "Service Unavailable (draining)",
                               retry_after=self._drain_retry_after())

    def start_drain(self, timeout_s: float) -> None:
        """From now on refuse new calls (503, Retry-After); active ones may go on for
        `timeout_s`. A drain already under way keeps its (earlier) deadline."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        if self.drain_deadline is None or deadline < self.drain_deadline:
            self.drain_deadline = deadline
        metrics.DRAINING.set(1)

    def drain_state(self) -> dict[str, object] | None:
        """For /health: calls left and seconds to go, or None when not draining."""
        if self.drain_deadline is None:
            return None
        left = self.drain_deadline - asyncio.get_running_loop().time()
        return {"calls_left": self.held_slots, "seconds_left": round(max(0.0, left), 1)}

    async def drain(self, closing_s: float) -> int:
        """Wait until every call has ended or the drain's time is up, then end those still
        going politely: the closing line (within `closing_s`), then the BYE. Returns how
        many calls the core had to end. `start_drain` must have been called."""
        assert self.drain_deadline is not None, "start_drain first"
        loop = asyncio.get_running_loop()
        if self._admitted:
            log.info("Draining: %d call(s) may go on for %.0f s", self.held_slots,
                     max(0.0, self.drain_deadline - loop.time()))
        while self._admitted and (left := self.drain_deadline - loop.time()) > 0:
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), left)
        ended = list(self.calls.values())
        if ended or self._admitted:
            metrics.DRAIN_ENDED_CALLS.inc(len(self._admitted))
            log.info("Drain time is up: ending %d call(s) politely", len(self._admitted))
        closing = [asyncio.ensure_future(call.end_politely(self.bot.drain_goodbye, "drain"))
                   for call in ended]
        if closing:
            _done, pending = await asyncio.wait(closing, timeout=closing_s)
            for task in pending:  # the line did not finish in time: BYE now
                task.cancel()
            await asyncio.gather(*closing, return_exceptions=True)
        await self.shutdown(closing_s)
        return len(ended)

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Refuse new calls, end the current ones, give their BYEs a moment to be answered."""
        self.accepting = False
        ids = list(self.calls)
        if ids:
            log.info("Ending %d calls for shutdown", len(ids))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(self.hangup(i) for i in ids), return_exceptions=True),
                timeout_s)
        if self._byes:
            _done, pending = await asyncio.wait(set(self._byes), timeout=timeout_s)
            for task in pending:
                task.cancel()
        await self.archive.close(timeout_s)

    def snapshot(self) -> list[dict[str, object]]:
        return [call.snapshot() for call in self.calls.values()]

    def transcript(self, call_id: str) -> dict[str, object] | None:
        """A call's transcript so far, or an ended call's, by its id or SIP Call-ID."""
        live = [*self.calls.values(), *self._closing.values()]
        call = self.calls.get(call_id) or self._closing.get(call_id) or next(
            (c for c in live if c.info.sip_call_id == call_id), None)
        if call is not None:
            return call.transcript.to_dict()
        return self.archive.transcript(call_id)


class _Callbacks:
    """The RTP session's callbacks, bound to the call once it exists (after the answer)."""

    def __init__(self) -> None:
        self.call: Call | None = None

    def on_audio(self, pcm: np.ndarray) -> None:
        if self.call is not None:
            self.call.on_audio(pcm)

    def on_dtmf(self, digit: str) -> None:
        if self.call is not None:
            self.call.on_dtmf(digit)

    def on_talkspurt(self) -> None:
        if self.call is not None:
            self.call.on_first_packet()
