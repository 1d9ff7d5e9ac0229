"""The core's HTTP endpoint: /health (readiness), /metrics (Prometheus), /calls (debug)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from opensips_ai_core import metrics

HealthFn = Callable[[], tuple[bool, dict[str, object]]]


class HttpServer:
    def __init__(self, host: str, port: int, health: HealthFn,
                 calls: Callable[[], list[dict[str, object]]]) -> None:
        self.host = host
        self.port = port
        self._health = health
        self._calls = calls
        self._runner: web.AppRunner | None = None
        self.started = time.monotonic()

    async def _get_health(self, _: web.Request) -> web.Response:
        ok, body = self._health()
        body = {"status": "ok" if ok else "unavailable",
                "uptime_s": round(time.monotonic() - self.started, 1), **body}
        return web.json_response(body, status=200 if ok else 503)

    async def _get_metrics(self, _: web.Request) -> web.Response:
        data = generate_latest(metrics.REGISTRY)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_calls(self, _: web.Request) -> web.Response:
        return web.json_response({"calls": self._calls()})

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/health", self._get_health)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/calls", self._get_calls)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
