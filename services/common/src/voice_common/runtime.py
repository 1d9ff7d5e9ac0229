"""The gRPC service runtime every process shares.

Start-up:  bind a `grpc.aio` server, register the standard `grpc.health.v1`
           service (NOT_SERVING), run the service's warm-up (model load), then
           mark every registered service SERVING.
Shutdown:  on SIGTERM/SIGINT (or a hot-reload request) mark NOT_SERVING, stop
           accepting RPCs, let in-flight streams finish for `grace_period_s`,
           cancel what is left, run the service's close hook, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from voice_common.config import ServiceSettings
from voice_common.logs import configure_logging

log = logging.getLogger("voice_common.runtime")

# 4 MiB is gRPC's default; the contracts' own limits are far below it.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class Registrar(Protocol):
    def __call__(self, server: grpc.aio.Server) -> Sequence[str]:
        """Add servicers to `server`; return their full service names for health."""
        ...


@dataclass
class ServiceDefinition:
    """What a service hands the runtime."""

    name: str
    settings: ServiceSettings
    register: Registrar
    warmup: Callable[[], Awaitable[None]] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    # Directories whose source changes restart this process in development.
    watch_paths: Sequence[str] = field(default_factory=tuple)


class GrpcServiceRuntime:
    def __init__(self, definition: ServiceDefinition) -> None:
        self.definition = definition
        self.settings = definition.settings
        self.health = health_aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.service_names: list[str] = []
        self._shutdown = asyncio.Event()
        self.shutdown_reason = ""
        self.started_at = time.monotonic()

    async def _set_all(self, status: int) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def start(self) -> int:
        """Bind and serve (NOT_SERVING until `warm_up` finishes); return the bound port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        self.service_names = list(self.definition.register(server))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as err:
            raise OSError(f"cannot listen on {address}: {err}") from None
        await server.start()
        self.server = server
        log.info("%s listening on %s:%d (NOT_SERVING until warm-up ends)",
                 self.definition.name, self.settings.host, self.port)
        return self.port

    async def warm_up(self) -> None:
        started = time.perf_counter()
        if self.definition.warmup is not None:
            await self.definition.warmup()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        log.info("%s SERVING (warm-up %.0f ms)", self.definition.name,
                 (time.perf_counter() - started) * 1000)

    def request_shutdown(self, reason: str) -> None:
        if not self._shutdown.is_set():
            self.shutdown_reason = reason
            self._shutdown.set()

    async def wait_for_shutdown(self) -> None:
        await self._shutdown.wait()

    async def stop(self) -> None:
        grace = self.settings.grace_period_s
        log.info("%s draining (%s): NOT_SERVING, grace %.1f s",
                 self.definition.name, self.shutdown_reason or "stop", grace)
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
        if self.definition.close is not None:
            await self.definition.close()
        log.info("%s stopped", self.definition.name)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown, sig.name)

    async def serve(self) -> int:
        """Run until a shutdown request; return the process exit code."""
        self.install_signal_handlers()
        await self.start()
        watcher: asyncio.Task[None] | None = None
        settings = self.settings
        if settings.development_mode and settings.hot_reload and self.definition.watch_paths:
            from voice_common.hotreload import watch_and_request_restart

            watcher = asyncio.create_task(
                watch_and_request_restart(self.definition.watch_paths, self.request_shutdown)
            )
        warm = asyncio.create_task(self.warm_up())
        stop_wait = asyncio.create_task(self.wait_for_shutdown())
        done, _ = await asyncio.wait({warm, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if warm in done and warm.exception() is not None:
            stop_wait.cancel()
            await self._abort(warm.exception())
            return 1
        await stop_wait
        if not warm.done():
            warm.cancel()
        if watcher is not None:
            watcher.cancel()
        await self.stop()
        return 0

    async def _abort(self, exc: BaseException | None) -> None:
        log.error("%s warm-up failed: %s", self.definition.name, exc, exc_info=exc)
        if self.server is not None:
            await self.server.stop(0)


def setup_logging(settings: ServiceSettings, service: str) -> None:
    configure_logging(
        service, development=settings.development_mode, level=settings.effective_log_level()
    )


def run_service(definition: ServiceDefinition) -> int:
    """Configure logging and run the service to completion; the process exit code."""
    setup_logging(definition.settings, definition.name)
    runtime = GrpcServiceRuntime(definition)
    try:
        return asyncio.run(runtime.serve())
    except OSError as err:
        log.critical("%s cannot start: %s", definition.name, err)
        return 1
