"""POST/GET/DELETE /calls over real HTTP on 127.0.0.1, placing real SIP calls to SIPp callees.

The call manager runs behind the direct SIP backend. The AI services' targets are
loopback ports where nothing listens: these tests are about placing, following and
ending calls; an answered call's conversation only has to start.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

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
from opensips_ai_core.signalling.sip import DirectSipBackend, SipTimers
from opensips_ai_core.signalling.sip.auth import Credentials
from tests.core.signalling.conftest import SIPP_DIR
from voice_testkit.procs import LOOPBACK, Proc, base_env, free_port
from voice_testkit.stack import free_rtp_range

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")]

TOKEN = "test-token-0123456789"


@dataclass
class Core:
    manager: CallManager
    backend: DirectSipBackend
    http: HttpServer
    client: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.http.port}{path}"


async def make_core(token: str | None) -> AsyncIterator[Core]:
    rtp = free_rtp_range(20)
    nowhere = f"{LOOPBACK}:{free_port()}"
    settings = CoreSettings(sip_host=LOOPBACK, sip_port=0, rtp_port_min=rtp[0],
                            rtp_port_max=rtp[1], asr_target=nowhere, llm_target=nowhere,
                            tts_target=nowhere)
    services = Services(AsrClient(nowhere), LlmClient(nowhere), TtsClient(nowhere))
    bot = BotConfig()
    manager = CallManager(settings, bot, services, RtpPortAllocator(*rtp))
    backend = DirectSipBackend(LOOPBACK, 0, timers=SipTimers(t1=0.1, t2=0.4),
                               credentials=Credentials("alice", "s3cret"))
    manager.backend = backend
    await backend.start(manager)
    http = HttpServer(LOOPBACK, 0, manager.capacity, manager.snapshot)
    http.add_routes(CallApi(OutboundCalls(manager, bot), token).add_routes)
    await http.start()
    client = aiohttp.ClientSession()
    try:
        yield Core(manager, backend, http, client)
    finally:
        await client.close()
        await manager.shutdown(1.0)
        await backend.stop()
        await http.stop()
        for service in (services.asr, services.llm, services.tts):
            await service.close()


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    async for made in make_core(None):
        yield made


def callee(scenario: str, logdir: Path) -> tuple[Proc, str]:
    port = free_port(socket.SOCK_DGRAM)
    args = ["sipp", "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-m", "1", "-i", LOOPBACK,
            "-p", str(port), "-mi", LOOPBACK, "-mp", str(free_port(socket.SOCK_DGRAM)),
            "-timeout", "30s", "-timeout_error", "-recv_timeout", "20000", "-trace_err",
            "-error_file", str(logdir / f"{scenario}.errors.log"), "-nostdin"]
    return Proc(args, base_env(), logdir / f"{scenario}.sipp.log"), f"sip:bob@{LOOPBACK}:{port}"


async def finish(proc: Proc, logdir: Path, scenario: str) -> None:
    try:
        rc = await asyncio.to_thread(proc.wait, 40)
    finally:
        proc.stop()
    errors = logdir / f"{scenario}.errors.log"
    detail = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
    assert rc == 0, f"sipp {scenario} exited {rc}\n{detail}"


async def state_of(core: Core, call_id: str, *states: str) -> dict[str, object]:
    async def current() -> dict[str, object]:
        async with core.client.get(core.url(f"/calls/{call_id}")) as response:
            assert response.status == 200
            return await response.json()

    found: dict[str, object] = {}

    async def reached() -> bool:
        found.update(await current())
        return found["state"] in states

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await reached():
        assert loop.time() < deadline, f"{call_id} stayed {found.get('state')}, not {states}"
        await asyncio.sleep(0.05)
    return found


async def place(core: Core, body: object) -> dict[str, object]:
    async with core.client.post(core.url("/calls"), json=body) as response:
        assert response.status == 202, await response.text()
        return await response.json()


async def test_answered_call_is_followed_and_hung_up(core: Core, logdir: Path) -> None:
    proc, to = callee("callee_answers", logdir)
    try:
        placed = await place(core, {"to": to, "caller_id": "Example Bank",
                                    "bot": {"greeting": "Hello from the bank.",
                                            "outbound_greeting_wait_s": 30}})
        call_id = str(placed["call_id"])
        assert placed["state"] == "dialing"
        await state_of(core, call_id, "answered")
        call = core.manager.calls[call_id]
        assert call.info.direction == "outbound"
        assert call.bot.greeting == "Hello from the bank."  # the per-call override
        assert call.awaiting_hello  # the bot waits for the callee's hello
        async with core.client.delete(core.url(f"/calls/{call_id}")) as response:
            assert response.status == 200
            assert (await response.json())["state"] == "ended"
    finally:
        await finish(proc, logdir, "callee_answers")
    assert call_id not in core.manager.calls
    assert core.manager.held_slots == 0


async def test_busy_callee_shows_failed_486(core: Core, logdir: Path) -> None:
    proc, to = callee("callee_busy", logdir)
    try:
        call_id = str((await place(core, {"to": to}))["call_id"])
        record = await state_of(core, call_id, "failed")
        assert record["code"] == 486
    finally:
        await finish(proc, logdir, "callee_busy")
    assert core.manager.held_slots == 0


async def test_unanswered_call_is_cancelled_after_max_ring(core: Core, logdir: Path) -> None:
    proc, to = callee("callee_no_answer", logdir)
    try:
        call_id = str((await place(core, {"to": to, "max_ring_s": 1}))["call_id"])
        assert (await state_of(core, call_id, "failed"))["code"] == 487
    finally:
        await finish(proc, logdir, "callee_no_answer")
    assert core.manager.held_slots == 0


async def test_delete_while_ringing_cancels(core: Core, logdir: Path) -> None:
    proc, to = callee("callee_no_answer", logdir)
    try:
        call_id = str((await place(core, {"to": to, "max_ring_s": 120}))["call_id"])
        await state_of(core, call_id, "ringing")
        async with core.client.delete(core.url(f"/calls/{call_id}")) as response:
            assert response.status == 200
        assert (await state_of(core, call_id, "failed"))["code"] == 487
    finally:
        await finish(proc, logdir, "callee_no_answer")


async def test_digest_challenge_is_answered(core: Core, logdir: Path) -> None:
    proc, to = callee("callee_auth", logdir)
    try:
        call_id = str((await place(core, {"to": to}))["call_id"])
        await state_of(core, call_id, "answered")
        async with core.client.delete(core.url(f"/calls/{call_id}")):
            pass
    finally:
        await finish(proc, logdir, "callee_auth")


@pytest.mark.parametrize(("body", "why"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "to: Field required"),
    (b'{"to": "bob@example.com"}', "sip: or sips: URI"),
    (b'{"to": "sip:bob@example.com\\r\\nX: y"}', "sip: or sips: URI"),
    (b'{"to": "sip:bob@example.com", "max_ring_s": -1}', "max_ring_s"),
    (b'{"to": "sip:bob@example.com", "colour": "red"}', "colour: Extra inputs"),
    (b'{"to": "sip:bob@example.com", "bot": {"max_new_tokens": 0}}', "bot: max_new_tokens"),
    (b'{"to": "sip:bob@example.com", "caller_id": "a\\"b"}', "caller_id"),
])
async def test_malformed_requests_get_400_with_one_line(core: Core, body: bytes,
                                                        why: str) -> None:
    async with core.client.post(core.url("/calls"), data=body,
                                headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
        answer = await response.json()
    assert why in answer["error"] and "\n" not in answer["error"]
    assert core.manager.held_slots == 0
    async with core.client.get(core.url("/calls/nope")) as response:
        assert response.status == 404  # still serving


async def test_token_is_required_when_set(logdir: Path) -> None:
    async for core in make_core(TOKEN):
        async with core.client.post(core.url("/calls"), json={"to": "x"}) as response:
            assert response.status == 401
        async with core.client.get(core.url("/calls/x"),
                                   headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        async with core.client.post(core.url("/calls"), json={"to": "x"},
                                    headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 400  # past the token: the body is checked
        async with core.client.get(core.url("/health")) as response:
            assert response.status == 200  # probes need no token


def test_call_api_needs_a_token_off_loopback() -> None:
    assert not CoreSettings(http_host="0.0.0.0").call_api_allowed
    assert CoreSettings(http_host="0.0.0.0", api_token=TOKEN).call_api_allowed
    assert CoreSettings(http_host="::1").call_api_allowed
    assert CoreSettings(http_host="localhost").call_api_allowed
    with pytest.raises(ValidationError, match="at least 16 characters"):
        CoreSettings(api_token="short")


async def test_core_off_loopback_without_token_serves_probes_but_no_call_api(
        tmp_path: Path) -> None:
    """A deployment binding 0.0.0.0 (probes, metrics) without CORE_API_TOKEN: the core
    runs, and the call API refuses with one line instead of placing calls."""
    port = free_port()
    env = base_env(CORE_HTTP_HOST="0.0.0.0", CORE_HTTP_PORT=str(port),
                   CORE_SIP_PORT=str(free_port(socket.SOCK_DGRAM)))
    env.pop("CORE_API_TOKEN", None)
    core = Proc([sys.executable, "-m", "opensips_ai_core"], env, tmp_path / "core.log")
    try:
        async with aiohttp.ClientSession() as client:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while True:
                try:
                    async with client.get(f"http://{LOOPBACK}:{port}/live") as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    assert loop.time() < deadline, core.output()[-2000:]
                    await asyncio.sleep(0.1)
            async with client.post(f"http://{LOOPBACK}:{port}/calls",
                                   json={"to": "sip:bob@127.0.0.1"}) as response:
                assert response.status == 403
                answer = await response.json()
    finally:
        core.stop()
    assert "CORE_API_TOKEN" in answer["error"] and "\n" not in answer["error"]
    assert "the call API is off" in core.log_path.read_text()
