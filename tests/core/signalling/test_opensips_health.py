"""The core process's /health and /metrics follow the OpenSIPS subscription.

OpenSIPS cannot be installed here: dev/testkit/src/voice_testkit/opensips_peer.py plays it as
docs/opensips.md records the real 3.6.8 (MI `uptime` names the run; a restart
forgets every subscription). The core is the real `python -m opensips_ai_core`
with CORE_SIGNALLING=opensips; it needs no AI service to report its health.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from voice_testkit.opensips_peer import OpenSipsPeer
from voice_testkit.procs import LOOPBACK, free_port
from voice_testkit.stack import core


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def health(http: str) -> tuple[int, dict]:
    status, body = await asyncio.to_thread(_get, http + "/health")
    return status, json.loads(body)


async def metric(http: str, name: str) -> float:
    _, text = await asyncio.to_thread(_get, http + "/metrics")
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def until(check, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := await check()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)
    return value


async def test_health_is_503_while_unsubscribed(tmp_path: Path, peer: OpenSipsPeer) -> None:
    nowhere = f"{LOOPBACK}:{free_port()}"  # no AI service: /health does not need one
    cm = core(tmp_path, nowhere, nowhere, nowhere, CORE_SIGNALLING="opensips",
              OPENSIPS_MI_PORT=str(peer.mi_port))
    running = await asyncio.to_thread(cm.__enter__)  # returns once /health said 200
    try:
        status, body = await health(running.http)
        assert status == 200 and body["signalling_state"].startswith("subscribed to ")
        assert await metric(running.http, "voice_opensips_subscribed") == 1

        # OpenSIPS restarts and refuses the subscription: the core cannot take a call.
        peer.refuse_subscribe = True
        await peer.restart()

        async def unavailable() -> dict | None:
            status, body = await health(running.http)
            return body if status == 503 else None

        body = await until(unavailable, 30, "/health 503")
        assert body["status"] == "unavailable"
        assert body["signalling_state"].startswith(("OpenSIPS restarted",
                                                    "event_subscribe failed"))
        assert await metric(running.http, "voice_opensips_subscribed") == 0
        assert await metric(running.http, "voice_opensips_restarts_total") == 1

        peer.refuse_subscribe = False

        async def available() -> bool:
            return (await health(running.http))[0] == 200

        await until(available, 30, "/health 200 again")
        assert await metric(running.http, "voice_opensips_subscribed") == 1
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)
