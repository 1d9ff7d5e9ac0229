"""opensips-ai-core's process: signalling backend + call manager + HTTP, with graceful stop.

SIGTERM, SIGINT and POST /drain drain the core: new calls are refused at once (503 with
Retry-After; OPTIONS 503 in direct-SIP mode, so a dispatcher takes the core out of
rotation), /health says draining, active calls go on for CORE_DRAIN_TIMEOUT_S, then
each still going hears the closing line and gets a BYE, and the process exits 0.
A hot reload stops with the short drain: calls ended at once, politely, within
CORE_GRACE_PERIOD_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from opensips_ai_core.calls import CallManager
from opensips_ai_core.config import BotConfig, CoreSettings
from opensips_ai_core.grpc_clients.asr import AsrClient
from opensips_ai_core.grpc_clients.llm import LlmClient
from opensips_ai_core.grpc_clients.llm_prime import LlmPrimer
from opensips_ai_core.grpc_clients.tts import TtsClient
from opensips_ai_core.http import HttpServer
from opensips_ai_core.http_calls import CallApi
from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.outbound import OutboundCalls
from opensips_ai_core.pipeline.protocols import Services
from opensips_ai_core.signalling.base import SignallingBackend
from voice_common import get_development_logger
from voice_common.runtime import on_stop_signals

log = get_development_logger("core.app")


def make_backend(settings: CoreSettings) -> SignallingBackend:
    if settings.signalling == "opensips":
        from opensips_ai_core.signalling.opensips.backend import OpenSipsBackend

        return OpenSipsBackend(settings.opensips_mi_host, settings.opensips_mi_port,
                               settings.event_host, settings.event_port,
                               expire=settings.event_expire_s,
                               gate_lease=settings.opensips_gate_lease_s,
                               outbound_socket=settings.opensips_outbound_socket)
    from opensips_ai_core.signalling.sip.auth import Credentials
    from opensips_ai_core.signalling.sip.uas import DirectSipBackend

    credentials = Credentials(settings.sip_auth_user, settings.sip_auth_password or "") \
        if settings.sip_auth_user else None
    return DirectSipBackend(settings.sip_host, settings.sip_port,
                            public_ip=settings.public_ip, credentials=credentials)


class CoreApp:
    def __init__(self, settings: CoreSettings, bot: BotConfig) -> None:
        self.settings = settings
        self.bot = bot
        asr = AsrClient(settings.asr_target)
        llm = LlmClient(settings.llm_target, timeout_s=settings.llm_timeout_s)
        tts = TtsClient(settings.tts_target, timeout_s=settings.tts_timeout_s,
                        cache_bytes=int(settings.tts_cache_mb * 1024 * 1024))
        # The pipeline sees Protocols; the app keeps the gRPC clients for their channels.
        self.clients: dict[str, AsrClient | LlmClient | TtsClient] = {
            "asr": asr, "llm": llm, "tts": tts}
        self.services = Services(asr, llm, tts)
        # The bot's prompt sent ahead of any call whenever the LLM channel becomes ready.
        self.llm_primer = LlmPrimer(llm, bot)
        self.manager = CallManager(settings, bot, self.services,
                                   RtpPortAllocator(settings.rtp_port_min, settings.rtp_port_max))
        self.backend = make_backend(settings)
        self.manager.backend = self.backend
        self.http = HttpServer(settings.http_host, settings.http_port, self.health_details,
                               self.manager.snapshot)
        self.outbound = OutboundCalls(self.manager, bot)
        disabled = None if settings.call_api_allowed else (
            "the call API is off: CORE_HTTP_HOST is not a loopback address and "
            "CORE_API_TOKEN is not set")
        if disabled is not None:
            log.warning("%s", disabled)
        self.http.add_routes(
            CallApi(self.outbound, settings.api_token, disabled=disabled,
                    transcripts=self.manager.transcript).add_routes)
        self.http.add_check("started", self._started_check)
        self.http.add_check("capacity", self._capacity_check)
        self.http.add_check("drain", self._drain_check)
        self.http.on_drain(self.request_drain, token=settings.api_token or "")
        if hasattr(self.backend, "options_refusal"):
            self.backend.options_refusal = self.manager.drain_refusal
        if hasattr(self.backend, "drain_refusal"):  # OpenSIPS: its script refuses for us
            self.backend.drain_refusal = self.manager.drain_refusal
        # A backend that can lose its signalling path (OpenSIPS: unsubscribed) reports it.
        self._readiness: Callable[[], tuple[bool, str]] | None = getattr(
            self.backend, "readiness", None)
        if self._readiness is not None:
            self.http.add_check("signalling", self._signalling_check)
        self._stop = asyncio.Event()
        self.stop_reason = ""
        self.ready = False

    def _started_check(self) -> str | None:
        return None if self.ready else "starting"

    def _capacity_check(self) -> str | None:
        """Ready only while a new call would be taken (slots, ASR streams, RTP ports)."""
        refusal = self.manager.refusal()
        return None if refusal is None else f"{refusal.code} {refusal.reason}"

    def _drain_check(self) -> str | None:
        state = self.manager.drain_state()
        if state is None:
            return None
        return f"draining: {state['calls_left']} call(s) left, {state['seconds_left']} s to go"

    def _signalling_check(self) -> str | None:
        """A backend that can lose its signalling path (OpenSIPS: unsubscribed) says so."""
        if self._readiness is None:
            return None
        ok, state = self._readiness()
        return None if ok else f"signalling {state}"

    def health_details(self) -> dict[str, object]:
        channels = {name: client.channel.get_state(try_to_connect=False).name
                    for name, client in self.clients.items()}
        signalling_state = self._readiness()[1] if self._readiness else "ready"
        return {"signalling": self.backend.name, "signalling_state": signalling_state,
                "calls": len(self.manager.calls), "capacity": self.manager.capacity(),
                "draining": self.manager.drain_state() is not None, "services": channels}

    def request_stop(self, reason: str) -> None:
        """SIGTERM or SIGINT: refuse new calls now, let the active ones go on for
        CORE_DRAIN_TIMEOUT_S (0 in development), then stop. Asking again changes nothing."""
        self._begin_drain(reason, self.settings.drain_timeout)

    def request_drain(self, reason: str) -> dict[str, object]:
        """POST /drain: as SIGTERM; returns the drain's state for the reply."""
        self.request_stop(reason)
        return self.manager.drain_state() or {}

    def _begin_drain(self, reason: str, timeout_s: float) -> None:
        first = not self.manager.draining
        self.manager.start_drain(timeout_s)
        if first:
            log.info("opensips-ai-core draining (%s): new calls refused, %d active call(s) "
                     "may go on for %.0f s", reason, self.manager.held_slots, timeout_s)
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    async def run(self) -> int:
        on_stop_signals(self.request_stop)
        self.llm_primer.start()
        await self.http.start()
        await self.backend.start(self.manager)
        self.ready = True
        log.info("opensips-ai-core ready: %s signalling, HTTP http://%s:%d/health",
                 self.backend.name, self.settings.http_host, self.http.port)
        # A hot reload is a SIGTERM too (voice_common.warm_parent's watcher sends it); in
        # development the drain is short (CORE_DRAIN_TIMEOUT_S 0), so a reload stays quick.
        await self._stop.wait()
        log.info("opensips-ai-core stopping (%s)", self.stop_reason)
        await self.llm_primer.stop()
        await self.manager.drain(self.settings.grace_period_s)
        await self.backend.stop()
        await self.http.stop()
        for client in self.clients.values():
            await client.close()
        return 0
