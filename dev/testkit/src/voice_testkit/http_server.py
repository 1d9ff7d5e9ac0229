"""An aiohttp application served on 127.0.0.1 for a test: a webhook, a tool, a core's API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from voice_testkit.procs import LOOPBACK


@asynccontextmanager
async def serve(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yield "127.0.0.1:PORT" (from the bound socket,
    so no port is picked and then raced for)."""
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    try:
        await web.TCPSite(runner, LOOPBACK, 0).start()
        host, port = runner.addresses[0][:2]
        yield f"{host}:{port}"
    finally:
        await runner.cleanup()
