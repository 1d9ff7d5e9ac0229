"""The core's HTTP server over real TCP on 127.0.0.1: combined readiness checks, liveness,
slow clients cut off, oversized headers refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from opensips_ai_core.http import HttpServer
from voice_testkit.procs import LOOPBACK

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    http = HttpServer(LOOPBACK, 0, lambda: {"calls": 0}, lambda: [], idle_timeout_s=0.5)
    await http.start()
    try:
        yield http
    finally:
        await http.stop()


async def request(port: int, raw: bytes) -> tuple[int, bytes]:
    """Send raw bytes, read the whole answer (the server closes: Connection: close)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(path: str, extra: bytes = b"") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode() + extra
            + b"\r\n")


async def test_health_combines_named_checks_and_live_stays_up(server: HttpServer) -> None:
    state = {"subscribed": False}
    server.add_check("capacity", lambda: None)
    server.add_check("opensips", lambda: None if state["subscribed"] else "not subscribed")
    status, body = await request(server.port, get("/health"))
    answer = json.loads(body)
    assert status == 503 and answer["status"] == "unavailable"
    assert answer["checks"] == {"capacity": "ok", "opensips": "not subscribed"}
    assert answer["calls"] == 0
    assert (await request(server.port, get("/live")))[0] == 200
    state["subscribed"] = True
    status, body = await request(server.port, get("/health"))
    assert status == 200 and json.loads(body)["checks"]["opensips"] == "ok"


async def test_started_follows_start_up_only(server: HttpServer) -> None:
    """process-compose's readiness probe (fatal after failure_threshold failures in a row,
    at any time) asks /started: a full core is reported by /health, not stopped."""
    state = {"started": False}
    server.add_check("started", lambda: None if state["started"] else "starting")
    server.add_check("capacity", lambda: "503 Service Unavailable (no free call slot)")
    assert (await request(server.port, get("/started")))[0] == 503
    state["started"] = True
    status, body = await request(server.port, get("/started"))
    assert status == 200 and json.loads(body) == {"status": "started"}
    assert (await request(server.port, get("/health")))[0] == 503


async def test_a_broken_check_reports_itself(server: HttpServer) -> None:
    server.add_check("broken", lambda: 1 / 0)  # type: ignore[arg-type, return-value]
    status, body = await request(server.port, get("/health"))
    assert status == 503 and "ZeroDivisionError" in json.loads(body)["checks"]["broken"]


async def test_a_slow_client_is_disconnected(server: HttpServer) -> None:
    """Headers sent a byte at a time, never finished: the server closes the connection
    (with aiohttp's default it would wait an hour)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(100):
            writer.write(b"X")
            await writer.drain()
            closed = await _closed_within(reader, 0.1)
            if closed:
                break
        assert closed, "the slow connection was kept open"
    finally:
        writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(4096), seconds)
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_200_kb_of_headers_are_refused(server: HttpServer) -> None:
    many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(200))
    status, _ = await request(server.port, get("/health", many))
    assert status in (400, 431)
    long_one = b"X-Pad: " + b"a" * 200_000 + b"\r\n"
    status, _ = await request(server.port, get("/health", long_one))
    assert status in (400, 431)
    assert (await request(server.port, get("/live")))[0] == 200


def _post_drain_from(peer: str, authorization: str = "") -> web.Request:
    """A POST /drain as if from `peer` (a mocked transport: nothing is sent anywhere)."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default)
    headers = {"Authorization": authorization} if authorization else {}
    return make_mocked_request("POST", "/drain", headers=headers, transport=transport)


async def test_drain_is_taken_from_loopback_or_with_the_token() -> None:
    """Anyone who reaches the HTTP port must not take a core out of rotation."""
    asked: list[str] = []
    http = HttpServer(LOOPBACK, 0, lambda: {}, lambda: [])
    http.on_drain(lambda why: asked.append(why) or {"calls": 0}, token="s3cret-token-0123456")
    refused = await http._post_drain(_post_drain_from("192.0.2.7"))
    assert refused.status == 403 and asked == []
    wrong = await http._post_drain(_post_drain_from("192.0.2.7", "Bearer nope"))
    assert wrong.status == 403 and asked == []
    with_token = await http._post_drain(
        _post_drain_from("192.0.2.7", "Bearer s3cret-token-0123456"))
    assert with_token.status == 202 and len(asked) == 1
    local = await http._post_drain(_post_drain_from("127.0.0.1"))
    assert local.status == 202 and len(asked) == 2
