"""opensips-ai-core's process: signalling backend + call manager + HTTP, with graceful stop."""

from __future__ import annotations

import asyncio
import signal

from opensips_ai_core.calls import CallManager
from opensips_ai_core.config import BotConfig, CoreSettings
from opensips_ai_core.grpc_clients.asr import AsrClient
from opensips_ai_core.grpc_clients.llm import LlmClient
from opensips_ai_core.grpc_clients.tts import TtsClient
from opensips_ai_core.http import HttpServer
from opensips_ai_core.http_calls import CallApi
from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.outbound import OutboundCalls
from opensips_ai_core.pipeline.protocols import Services
from opensips_ai_core.signalling.base import SignallingBackend
from voice_common import get_development_logger
from voice_common.paths import watch_paths

log = get_development_logger("core.app")


def make_backend(settings: CoreSettings) -> SignallingBackend:
    if settings.signalling == "opensips":
        from opensips_ai_core.signalling.opensips.backend import OpenSipsBackend

        return OpenSipsBackend(settings.opensips_mi_host, settings.opensips_mi_port,
                               settings.event_host, settings.event_port,
                               expire=settings.event_expire_s,
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
        self.services = Services(
            AsrClient(settings.asr_target),
            LlmClient(settings.llm_target, timeout_s=settings.llm_timeout_s),
            TtsClient(settings.tts_target, timeout_s=settings.tts_timeout_s))
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
            CallApi(self.outbound, settings.api_token, disabled=disabled).add_routes)
        self.http.add_check("started", self._started_check)
        self.http.add_check("capacity", self._capacity_check)
        if hasattr(self.backend, "readiness"):
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

    def _signalling_check(self) -> str | None:
        """A backend that can lose its signalling path (OpenSIPS: unsubscribed) says so."""
        ok, state = self.backend.readiness()  # type: ignore[attr-defined]
        return None if ok else f"signalling {state}"

    def health_details(self) -> dict[str, object]:
        channels = {name: client.channel.get_state(try_to_connect=False).name
                    for name, client in (("asr", self.services.asr), ("llm", self.services.llm),
                                         ("tts", self.services.tts))}
        readiness = getattr(self.backend, "readiness", None)
        signalling_state = readiness()[1] if readiness else "ready"
        return {"signalling": self.backend.name, "signalling_state": signalling_state,
                "calls": len(self.manager.calls), "capacity": self.manager.capacity(),
                "services": channels}

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        await self.http.start()
        await self.backend.start(self.manager)
        self.ready = True
        log.info("opensips-ai-core ready: %s signalling, HTTP http://%s:%d/health",
                 self.backend.name, self.settings.http_host, self.http.port)
        watcher = None
        if self.settings.development_mode and self.settings.hot_reload:
            from voice_common.hotreload import watch_and_request_restart

            watcher = asyncio.create_task(
                watch_and_request_restart(watch_paths("core"), self.request_stop))
        await self._stop.wait()
        log.info("opensips-ai-core stopping (%s)", self.stop_reason)
        if watcher is not None:
            watcher.cancel()
        await self.manager.shutdown(self.settings.grace_period_s)
        await self.backend.stop()
        await self.http.stop()
        for client in (self.services.asr, self.services.llm, self.services.tts):
            await client.close()
        return 0
