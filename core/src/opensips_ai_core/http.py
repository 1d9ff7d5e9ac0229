"""The core's HTTP endpoint: /health (readiness), /live (liveness), /metrics, /calls (debug),
and POST /drain (stop taking calls, let the active ones finish, then exit).

More routes come from `add_routes` (the outbound call API: http_calls.py).

/health is 200 only when the core can take a call now: every registered readiness
check passes (`add_check(name, check)`, a check returns None when ready or the
reason it is not). The body names each check's result, e.g.
`{"status": "unavailable", "checks": {"capacity": "speech recognition at capacity"}}`.
/live is 200 while the process serves HTTP at all: a liveness probe must not restart
a core that is merely full (or draining).

Slow or oversized clients are cut off: a connection that has not sent a complete
request within `idle_timeout_s` is closed, and request headers are bounded
(MAX_HEADERS lines of at most MAX_FIELD_SIZE bytes; more gets 400/431).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from opensips_ai_core import metrics

# None when ready, else why not (one short line).
ReadinessCheck = Callable[[], str | None]
DetailsFn = Callable[[], dict[str, object]]
# Starts (or confirms) a drain; returns its state for the reply body.
DrainFn = Callable[[str], dict[str, object]]

IDLE_TIMEOUT_S = 5.0
MAX_LINE_SIZE = 2048
MAX_FIELD_SIZE = 2048
MAX_HEADERS = 32


class HttpServer:
    def __init__(self, host: str, port: int, details: DetailsFn,
                 calls: Callable[[], list[dict[str, object]]], *,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.host = host
        self.port = port
        self._details = details
        self._calls = calls
        self._checks: dict[str, ReadinessCheck] = {}
        self._idle_timeout_s = idle_timeout_s
        self._runner: web.AppRunner | None = None
        self._drain: DrainFn | None = None
        self._drain_token = ""
        # More routes (the call API, http_calls.py), added to the app at start().
        self._route_adders: list[Callable[[web.Application], None]] = []
        self.started = time.monotonic()

    def on_drain(self, drain: DrainFn, *, token: str = "") -> None:
        """What POST /drain does (without one it answers 501). It is taken from a
        loopback peer (a preStop hook in the pod), or with `Authorization: Bearer TOKEN`
        when a token is set: anyone else reaching the port must not take a core out."""
        self._drain = drain
        self._drain_token = token

    def add_routes(self, adder: Callable[[web.Application], None]) -> None:
        self._route_adders.append(adder)

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Another condition of readiness (several combine: all must pass)."""
        self._checks[name] = check

    def readiness(self) -> dict[str, str]:
        """Each check's result: "ok" or the reason it fails."""
        results: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                problem = check()
            except Exception as err:  # a broken check says so rather than 500
                problem = f"check failed: {type(err).__name__}: {err}"
            results[name] = "ok" if problem is None else problem
        return results

    async def _get_health(self, _: web.Request) -> web.Response:
        checks = self.readiness()
        ok = all(result == "ok" for result in checks.values())
        body = {"status": "ok" if ok else "unavailable",
                "uptime_s": round(time.monotonic() - self.started, 1), "checks": checks,
                **self._details()}
        return web.json_response(body, status=200 if ok else 503)

    async def _get_started(self, _: web.Request) -> web.Response:
        """200 once start-up finished, whatever the other checks say.

        process-compose stops a process whose readiness probe fails `failure_threshold`
        times in a row, also long after it was ready: its probe asks this, so a core that
        is full or has lost OpenSIPS for a while is reported, not killed.
        """
        check = self._checks.get("started")
        problem = check() if check is not None else None
        if problem is None:
            return web.json_response({"status": "started"})
        return web.json_response({"status": problem}, status=503)

    async def _get_live(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _get_metrics(self, _: web.Request) -> web.Response:
        data = generate_latest(metrics.REGISTRY)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_calls(self, _: web.Request) -> web.Response:
        return web.json_response({"calls": self._calls()})

    async def _post_drain(self, request: web.Request) -> web.Response:
        if self._drain is None:
            return web.json_response({"error": "this server cannot drain"}, status=501)
        peer = request.remote or "?"
        bearer = request.headers.get("Authorization", "")
        allowed = _is_loopback(peer) or (
            bool(self._drain_token) and hmac.compare_digest(bearer, f"Bearer {self._drain_token}"))
        if not allowed:
            return web.json_response(
                {"error": "POST /drain is taken from loopback, or with the CORE_API_TOKEN "
                          "bearer token"}, status=403)
        return web.json_response({"status": "draining", **self._drain(f"POST /drain from {peer}")},
                                 status=202)

    async def start(self) -> int:
        app = web.Application(client_max_size=16384)  # POST /calls: a small JSON body
        app.router.add_get("/health", self._get_health)
        app.router.add_get("/started", self._get_started)
        app.router.add_get("/live", self._get_live)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/calls", self._get_calls)
        app.router.add_post("/drain", self._post_drain)
        for adder in self._route_adders:
            adder(app)
        # aiohttp's keep-alive timer also runs while a request's headers trickle in:
        # it bounds slow clients as well as idle connections.
        self._runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=self._idle_timeout_s,
            max_line_size=MAX_LINE_SIZE, max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        # The bound port, for port 0: the runner lists each socket's (host, port, ...).
        addresses = self._runner.addresses
        if addresses:
            self.port = addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
