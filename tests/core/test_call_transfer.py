"""The call manager transfers an answered call (REFER to a SIPp caller that follows it to a
SIPp adviser): the call and everything it held are released once the transfer succeeded."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.core.signalling.test_sip_transfer import sipp
from tests.core.test_outbound_api import Core, finish, make_core
from voice_testkit.procs import LOOPBACK, free_port

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    async for made in make_core(None):
        yield made


async def answered(core: Core) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not core.manager.calls:
        assert loop.time() < deadline, "no call"
        await asyncio.sleep(0.02)
    return next(iter(core.manager.calls))


def caller(scenario: str, core: Core, logdir: Path):
    port = core.backend.port
    return sipp(scenario, logdir, "-set", "core_host", LOOPBACK, "-set", "core_port", str(port),
                f"{LOOPBACK}:{port}")


async def test_transferred_call_is_released(core: Core, logdir: Path) -> None:
    adviser_port = free_port(socket.SOCK_DGRAM)
    adviser = sipp("adviser_answers", logdir, port=adviser_port)
    call = caller("refer_accept", core, logdir)
    try:
        call_id = await answered(core)
        result = await asyncio.wait_for(
            core.manager.transfer(call_id, f"sip:advisers@{LOOPBACK}:{adviser_port}"), 40)
        assert result.ok
    finally:
        try:
            await finish(call, logdir, "refer_accept")
        finally:
            await finish(adviser, logdir, "adviser_answers")
    assert call_id not in core.manager.calls
    assert core.manager.held_slots == 0


async def test_refused_transfer_keeps_the_call(core: Core, logdir: Path) -> None:
    call = caller("refer_refuse_603", core, logdir)
    try:
        call_id = await answered(core)
        result = await asyncio.wait_for(
            core.manager.transfer(call_id, f"sip:advisers@{LOOPBACK}:5999"), 40)
        assert not result.ok and result.code == 603
        assert call_id in core.manager.calls
        await core.manager.hangup(call_id)
    finally:
        await finish(call, logdir, "refer_refuse_603")
