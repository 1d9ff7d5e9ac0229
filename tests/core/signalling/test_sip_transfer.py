"""Blind transfer (RFC 3515 REFER) by DirectSipBackend, against SIPp callers on 127.0.0.1.

The accepting caller follows the REFER itself: SIPp's `setdest` sends its new INVITE to
a second SIPp, the adviser (a UAS that checks the request URI and Referred-By), then
reports 200 OK in a terminating NOTIFY; the bot must answer each NOTIFY 200 and BYE.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opensips_ai_core.signalling.sip import DirectSipBackend
from tests.core.signalling.conftest import SIPP_DIR, RecordingHandler, eventually
from tests.support.procs import LOOPBACK, Proc, base_env, free_port

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")


@pytest.fixture
async def uas(handler: RecordingHandler) -> AsyncIterator[DirectSipBackend]:
    backend = DirectSipBackend(LOOPBACK, 0)
    await backend.start(handler)
    try:
        yield backend
    finally:
        await backend.stop()


def sipp(scenario: str, logdir: Path, *extra: str, port: int | None = None) -> Proc:
    """One SIPp call (-m 1), bounded by -timeout, in its own process group."""
    args = [
        "sipp", "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-m", "1",
        "-i", LOOPBACK, "-p", str(port or free_port(socket.SOCK_DGRAM)),
        "-mi", LOOPBACK, "-mp", str(free_port(socket.SOCK_DGRAM)),
        "-timeout", "30s", "-timeout_error", "-recv_timeout", "20000",
        "-trace_err", "-error_file", str(logdir / f"{scenario}.errors.log"), "-nostdin",
        *extra,
    ]
    return Proc(args, base_env(), logdir / f"{scenario}.sipp.log")


def caller(scenario: str, uas: DirectSipBackend, logdir: Path, *extra: str) -> Proc:
    return sipp(scenario, logdir, "-set", "core_host", LOOPBACK,
                "-set", "core_port", str(uas.port), *extra, f"{LOOPBACK}:{uas.port}")


async def finish(proc: Proc, logdir: Path, scenario: str) -> None:
    try:
        rc = await asyncio.to_thread(proc.wait, 40)
    finally:
        proc.stop()
    errors = logdir / f"{scenario}.errors.log"
    detail = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
    assert rc == 0, (f"sipp {scenario} exited {rc}\n{detail}\n"
                     f"{proc.log_path.read_text(errors='replace')[-2000:]}")


async def answered_call(handler: RecordingHandler) -> str:
    return str(await eventually(lambda: next(iter(handler.media), None), 15, "the call"))


async def test_transfer_accepted_ends_the_call_with_bye(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    adviser_port = free_port(socket.SOCK_DGRAM)
    adviser = sipp("adviser_answers", logdir, port=adviser_port)
    call = caller("refer_accept", uas, logdir)
    try:
        call_id = await answered_call(handler)
        result = await asyncio.wait_for(
            uas.transfer(call_id, f"sip:advisers@{LOOPBACK}:{adviser_port}", timeout_s=20), 40)
        assert result.ok, result
        assert result.code == 200
    finally:
        try:
            await finish(call, logdir, "refer_accept")
        finally:
            await finish(adviser, logdir, "adviser_answers")
    assert uas.active_calls() == []
    assert call_id not in handler.ended  # the bot ended it: no end_call


@pytest.mark.parametrize("code", [405, 603])
async def test_refused_refer_keeps_the_call(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path, code: int) -> None:
    scenario = f"refer_refuse_{code}"
    call = caller(scenario, uas, logdir)
    try:
        call_id = await answered_call(handler)
        result = await asyncio.wait_for(
            uas.transfer(call_id, f"sip:advisers@{LOOPBACK}:5999", timeout_s=5), 40)
        assert not result.ok and result.code == code
        assert uas.active_calls() == [call_id]  # the conversation goes on
        await asyncio.wait_for(uas.hangup(call_id), 20)
    finally:
        await finish(call, logdir, scenario)


async def test_target_not_answering_keeps_the_call(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    call = caller("refer_target_fails", uas, logdir)
    try:
        call_id = await answered_call(handler)
        result = await asyncio.wait_for(
            uas.transfer(call_id, f"sip:advisers@{LOOPBACK}:5999", timeout_s=10), 40)
        assert not result.ok and result.code == 408
        assert "408" in result.reason
        assert uas.active_calls() == [call_id]
        await asyncio.wait_for(uas.hangup(call_id), 20)
    finally:
        await finish(call, logdir, "refer_target_fails")


async def test_no_notify_within_the_timeout_keeps_the_call(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    call = caller("refer_no_notify", uas, logdir)
    try:
        call_id = await answered_call(handler)
        result = await asyncio.wait_for(
            uas.transfer(call_id, f"sip:advisers@{LOOPBACK}:5999", timeout_s=1), 40)
        assert not result.ok and result.code == 408
        assert "no final NOTIFY" in result.reason
        assert uas.active_calls() == [call_id]
        await asyncio.wait_for(uas.hangup(call_id), 20)
    finally:
        await finish(call, logdir, "refer_no_notify")
