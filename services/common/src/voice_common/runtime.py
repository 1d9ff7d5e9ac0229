"""The gRPC service runtime every process shares.

Start-up:  bind a `grpc.aio` server, register the standard `grpc.health.v1`
           service (NOT_SERVING), run the service's warm-up (model load), then
           mark every registered service SERVING. Until then every other RPC is
           answered UNAVAILABLE ("warming up"): a client retries it, where a half-loaded
           model would have failed it for good.
Age:       a client connection older than `<PREFIX>_MAX_CONNECTION_AGE_S` (5 min) gets
           a GOAWAY: the client opens a new one (re-resolving a DNS name, so new
           replicas get work) while the RPCs open on the old one go on until they end
           (or `<PREFIX>_MAX_CONNECTION_AGE_GRACE_S`, unset by default: an ASR stream
           lasts a whole call and must not be cut by the connection's age).
Shutdown:  on SIGTERM/SIGINT (a hot reload is a SIGTERM from voice_common.warm_parent's
           watcher) mark NOT_SERVING, stop
           accepting RPCs, let in-flight streams finish for `grace_period_s`,
           cancel what is left, run the service's close hook, exit 0.
HTTP:      with `<PREFIX>_HEALTH_HTTP_PORT` set, `GET /health` on the service's host
           answers 200 `SERVING` or 503 `NOT_SERVING` from the same health servicer
           (a probe the supervisor runs without starting a Python); from bind to exit.
Exit:      in development (DEVELOPMENT_MODE=1) a clean shutdown ends with `os._exit(0)`
           once logs are flushed and child processes are gone: the interpreter's
           teardown (torch's takes seconds) would only delay the next hot-reload child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from voice_common.config import ProcessSettings, ServiceSettings
from voice_common.devlogger import enable_debug_output
from voice_common.logs import configure_logging
from voice_common.niceness import raise_nice_to
from voice_common.warm_notify import notify_serving

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

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


SERVING = health_pb2.HealthCheckResponse.SERVING
HEALTH_PATH = "/health"
# A probe is a short request; a connection still open at exit is not waited for longer.
HEALTH_HTTP_SHUTDOWN_S = 1.0
# Children (the ASR's worker processes) get this long after `close` to be gone before a
# development fast exit kills them: os._exit must not leave orphans behind.
CHILD_EXIT_WAIT_S = 5.0


class HealthHttpServer:
    """`GET /health` (HEAD too, as HTTP wants) -> 200 SERVING / 503 NOT_SERVING: the
    overall status "" of `health`; any other method or path -> 404."""

    def __init__(self, health: health_aio.HealthServicer, host: str, port: int) -> None:
        self.health = health
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def status(self) -> int:
        # The servicer's own Check: what a gRPC probe would be told (the runtime sets ""
        # before anything serves, so the NOT_FOUND branch that needs a context never runs).
        reply = await self.health.Check(
            health_pb2.HealthCheckRequest(service=""),
            None)  # type: ignore[arg-type]  # no context: see above
        return reply.status

    async def _handle(self, request: web.Request) -> web.Response:
        from aiohttp import web  # loaded by start() already

        if request.method not in ("GET", "HEAD") or request.path != HEALTH_PATH:
            return web.Response(status=404, text="not found\n")
        if await self.status() == SERVING:
            return web.Response(status=200, text="SERVING\n")
        return web.Response(status=503, text="NOT_SERVING\n")

    async def start(self) -> str:
        """Bind and serve; the URL (with the bound port when 0 was asked for)."""
        # Imported here: a service without the HTTP port (production) need not load it.
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No access log: a probe every second would fill the DEBUG log.
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=HEALTH_HTTP_SHUTDOWN_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as err:
            await runner.cleanup()
            raise OSError(f"cannot serve health on {self.host}:{self.port}: "
                          f"{err.strerror or err}") from None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}{HEALTH_PATH}"

    async def stop(self) -> None:
        """Close the listening socket (the port is free afterwards) and open connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"
WARMING_UP = "the service is warming up (NOT_SERVING): retry"


class WarmUpGate(grpc.aio.ServerInterceptor):
    """Answers every RPC but the health service's UNAVAILABLE until `open()`: a request
    must not reach a model that is still loading."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_open = False

    def open(self) -> None:
        self.is_open = True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if self.is_open or handler is None or details.method.startswith(HEALTH_METHOD_PREFIX):
            return handler
        log.info("%s refused while warming up: %s", details.method, self.name)
        return _unavailable(handler, f"{self.name}: {WARMING_UP}")


def _unavailable(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAVAILABLE `message`."""

    async def refuse(_request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)

    shape = {"request_deserializer": handler.request_deserializer,
             "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **shape)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **shape)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **shape)
    return grpc.unary_unary_rpc_method_handler(refuse, **shape)


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments: message limits and connection age."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        ("grpc.max_connection_age_ms", round(settings.max_connection_age_s * 1000)),
    ]
    if settings.max_connection_age_grace_s is not None:
        # Unset, gRPC's default grace is unlimited: the old connection closes with the
        # last RPC on it.
        options.append(("grpc.max_connection_age_grace_ms",
                        round(settings.max_connection_age_grace_s * 1000)))
    return options


class GrpcServiceRuntime:
    def __init__(self, definition: ServiceDefinition) -> None:
        self.definition = definition
        self.settings = definition.settings
        self.health = health_aio.HealthServicer()
        self.gate = WarmUpGate(definition.name)
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.health_http: HealthHttpServer | None = None
        self.service_names: list[str] = []
        self._shutdown = asyncio.Event()
        self.shutdown_reason = ""
        self.started_at = time.monotonic()

    async def _set_all(self, status: int) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def start(self) -> int:
        """Bind and serve (NOT_SERVING until `warm_up` finishes); return the bound port."""
        server = grpc.aio.server(interceptors=[self.gate],
                                 options=server_options(self.settings))
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
        if self.settings.health_http_port is not None:
            await self._start_health_http(self.settings.health_http_port)
        return self.port

    async def _start_health_http(self, port: int) -> None:
        health_http = HealthHttpServer(self.health, self.settings.host, port)
        try:
            url = await health_http.start()
        except OSError:
            await self._stop_servers(0)
            raise
        self.health_http = health_http
        log.info("%s health on %s (503 NOT_SERVING until warm-up ends)",
                 self.definition.name, url)

    async def _stop_servers(self, grace: float | None) -> None:
        """Stop gRPC (letting streams finish for `grace`), then the HTTP health port."""
        if self.server is not None:
            await self.server.stop(grace)
        if self.health_http is not None:
            await self.health_http.stop()

    async def warm_up(self) -> None:
        started = time.perf_counter()
        if self.definition.warmup is not None:
            await self.definition.warmup()
        self.gate.open()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        log.info("%s SERVING (warm-up %.0f ms)", self.definition.name,
                 (time.perf_counter() - started) * 1000)
        notify_serving()  # the development warm parent's cue for its spare

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
        if self.health_http is not None:
            # Last: a probe during the drain and `close` is told 503, not refused.
            await self.health_http.stop()
        log.info("%s stopped", self.definition.name)

    def install_signal_handlers(self) -> None:
        on_stop_signals(self.request_shutdown)

    async def serve(self) -> int:
        """Run until a shutdown request; return the process exit code."""
        self.install_signal_handlers()
        await self.start()
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
        await self.stop()
        return 0

    async def _abort(self, exc: BaseException | None) -> None:
        log.error("%s warm-up failed: %s", self.definition.name, exc, exc_info=exc)
        await self._stop_servers(0)


def on_stop_signals(request_stop: Callable[[str], None]) -> None:
    """SIGTERM and SIGINT (the supervisor's stop, Ctrl-C, and a hot reload: the warm
    parent's watcher SIGTERMs the child) call `request_stop(signal name)` on the running
    loop: every process drains the same way."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)


def setup_logging(settings: ProcessSettings, service: str) -> None:
    configure_logging(
        service, development=settings.development_mode, level=settings.effective_log_level()
    )
    if isinstance(settings, ServiceSettings) and settings.enable_debug:
        # The service's package: its settings class lives there (asr_service.settings).
        enable_debug_output(type(settings).__module__.partition(".")[0])


def _wait_for_children(timeout_s: float) -> None:
    """Join the process's multiprocessing children (the ASR's worker processes, normally
    joined by `close` already); kill any still running after `timeout_s`."""
    if "multiprocessing" not in sys.modules:
        return  # nothing could have started one
    import multiprocessing

    deadline = time.monotonic() + timeout_s
    for child in multiprocessing.active_children():
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            log.warning("child process %s (pid %s) still runs %.0f s after close; killing it",
                        child.name, child.pid, timeout_s)
            child.kill()
            child.join(1.0)


def fast_exit(code: int) -> None:
    """End the process now without the interpreter's teardown (atexit handlers, module
    and thread clean-up: seconds for torch), after what that teardown would keep: the
    log lines and stdio, and no child process left running."""
    _wait_for_children(CHILD_EXIT_WAIT_S)
    log.debug("exit %d without interpreter teardown (DEVELOPMENT_MODE)", code)
    logging.shutdown()  # flushes (and closes) every handler
    for stream in (sys.stdout, sys.stderr):
        # Closed or a broken pipe: nothing left to save.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def apply_nice(settings: ProcessSettings, name: str) -> None:
    """`<PREFIX>_NICE`: run at this nice level at least (voice_common.launch may have set
    it, or a lower `<PREFIX>_START_NICE`, already). Call it before any thread or worker
    process starts: they inherit it."""
    if settings.nice:
        log.info("%s runs at nice %d", name, raise_nice_to(settings.nice))


def run_service(definition: ServiceDefinition) -> int:
    """Configure logging and run the service to completion; the process exit code.

    In development a clean shutdown (exit 0: SIGTERM or a hot reload, drained and closed)
    does not return: the process ends here through `fast_exit`.
    """
    setup_logging(definition.settings, definition.name)
    apply_nice(definition.settings, definition.name)
    runtime = GrpcServiceRuntime(definition)
    try:
        code = asyncio.run(runtime.serve())
    except OSError as err:
        log.critical("%s cannot start: %s", definition.name, err)
        return 1
    if code == 0 and definition.settings.development_mode:
        fast_exit(code)
    return code
