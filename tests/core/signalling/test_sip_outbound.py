"""Outbound calls by DirectSipBackend (the core as a UAC) to SIPp callees on 127.0.0.1.

Each SIPp is a UAS for one call (-m 1): it answers, rejects with 486, only rings (the
core CANCELs after max_ring_s), or challenges with 401 and checks the digest
(SIPp's verifyauth).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opensips_ai_core.signalling.base import OutboundRequest
from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.headers import header_uri
from opensips_ai_core.signalling.sip import DirectSipBackend
from opensips_ai_core.signalling.sip.auth import Credentials
from opensips_ai_core.signalling.sip.message import SipMessage, parse_message
from opensips_ai_core.signalling.sip.transactions import SipTimers
from tests.core.signalling.conftest import SIPP_DIR, RecordingHandler
from voice_testkit.procs import LOOPBACK, Proc, base_env, free_port

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")


@pytest.fixture
async def uas(handler: RecordingHandler) -> AsyncIterator[DirectSipBackend]:
    backend = DirectSipBackend(LOOPBACK, 0, timers=SipTimers(t1=0.1, t2=0.4),
                               credentials=Credentials("alice", "s3cret"))
    await backend.start(handler)
    try:
        yield backend
    finally:
        await backend.stop()


def callee(scenario: str, logdir: Path, *extra: str) -> tuple[Proc, int]:
    port = free_port(socket.SOCK_DGRAM)
    args = [
        "sipp", "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-m", "1",
        "-i", LOOPBACK, "-p", str(port),
        "-mi", LOOPBACK, "-mp", str(free_port(socket.SOCK_DGRAM)),
        "-timeout", "30s", "-timeout_error", "-recv_timeout", "20000",
        "-trace_err", "-error_file", str(logdir / f"{scenario}.errors.log"), "-nostdin",
        *extra,
    ]
    return Proc(args, base_env(), logdir / f"{scenario}.sipp.log"), port


async def finish(proc: Proc, logdir: Path, scenario: str) -> None:
    try:
        rc = await asyncio.to_thread(proc.wait, 40)
    finally:
        proc.stop()
    errors = logdir / f"{scenario}.errors.log"
    detail = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
    assert rc == 0, (f"sipp {scenario} exited {rc}\n{detail}\n"
                     f"{proc.log_path.read_text(errors='replace')[-2000:]}")


async def test_answered_call_runs_like_an_inbound_one(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    proc, port = callee("callee_answers", logdir)
    seen: list[int] = []
    try:
        code = await asyncio.wait_for(uas.dial(
            "out-1@core", OutboundRequest(to=f"sip:bob@{LOOPBACK}:{port}", caller_id="Bank"),
            lambda status, _reason: seen.append(status)), 30)
        assert code == 200
        assert 180 in seen
        info = handler.calls["out-1@core"]
        assert info.direction == "outbound" and info.callee == f"sip:bob@{LOOPBACK}:{port}"
        assert handler.completed["out-1@core"].codec == "PCMU"  # the callee's answer
        assert uas.active_calls() == ["out-1@core"]
        await asyncio.wait_for(uas.hangup("out-1@core"), 20)
    finally:
        await finish(proc, logdir, "callee_answers")
    assert uas.active_calls() == []


def received_invite(message_log: Path) -> SipMessage:
    """The first INVITE in SIPp's -trace_msg log, as it arrived."""
    for entry in message_log.read_bytes().split(b"\n-----"):
        _, _, message = entry.partition(b" bytes :\n\n")
        if message.startswith(b"INVITE "):
            return parse_message(message)
    raise AssertionError(f"no INVITE in {message_log}")


async def test_from_is_an_identity_and_contact_says_where_the_core_listens(
        uas: DirectSipBackend, logdir: Path) -> None:
    """RFC 3261: the From is a logical identity, whose URI has no port (19.1.1, Table
    1); the Contact is where this UA is reached (8.1.1.8), our SIP port included."""
    messages = logdir / "callee_answers.messages.log"
    proc, port = callee("callee_answers", logdir, "-trace_msg", "-message_file", str(messages))
    try:
        assert await asyncio.wait_for(uas.dial(
            "out-7@core", OutboundRequest(to=f"sip:bob@{LOOPBACK}:{port}")), 30) == 200
        await asyncio.wait_for(uas.hangup("out-7@core"), 20)
    finally:
        await finish(proc, logdir, "callee_answers")
    invite = received_invite(messages)
    assert header_uri(invite.get("From") or "") == f"sip:ai@{LOOPBACK}"
    assert invite.get("Contact") == f"<sip:ai@{LOOPBACK}:{uas.port}>"
    assert (invite.get("Via") or "").startswith(f"SIP/2.0/UDP {LOOPBACK}:{uas.port};")


async def test_busy_callee_fails_with_486_and_releases_the_call(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    proc, port = callee("callee_busy", logdir)
    try:
        with pytest.raises(SignallingError) as raised:
            await asyncio.wait_for(
                uas.dial("out-2@core", OutboundRequest(to=f"sip:bob@{LOOPBACK}:{port}")), 30)
        assert raised.value.code == 486
    finally:
        await finish(proc, logdir, "callee_busy")
    assert "486" in handler.ended["out-2@core"]  # the call manager releases its media
    assert uas.active_calls() == []


async def test_unanswered_call_is_cancelled_after_max_ring(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    proc, port = callee("callee_no_answer", logdir)
    try:
        with pytest.raises(SignallingError) as raised:
            await asyncio.wait_for(uas.dial("out-3@core", OutboundRequest(
                to=f"sip:bob@{LOOPBACK}:{port}", max_ring_s=1.0)), 30)
        assert raised.value.code == 487
    finally:
        await finish(proc, logdir, "callee_no_answer")
    assert "out-3@core" in handler.ended
    assert uas.active_calls() == []


async def test_digest_challenge_is_answered_with_the_credentials(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    proc, port = callee("callee_auth", logdir)
    try:
        code = await asyncio.wait_for(
            uas.dial("out-4@core", OutboundRequest(to=f"sip:bob@{LOOPBACK}:{port}")), 30)
        assert code == 200
        await asyncio.wait_for(uas.hangup("out-4@core"), 20)
    finally:
        await finish(proc, logdir, "callee_auth")


async def test_challenge_without_credentials_fails_with_401(
        handler: RecordingHandler, logdir: Path) -> None:
    backend = DirectSipBackend(LOOPBACK, 0, timers=SipTimers(t1=0.1, t2=0.4))
    await backend.start(handler)
    proc, port = callee("callee_auth", logdir)
    try:
        with pytest.raises(SignallingError) as raised:
            await asyncio.wait_for(
                backend.dial("out-5@core", OutboundRequest(to=f"sip:bob@{LOOPBACK}:{port}")), 30)
        assert raised.value.code == 401
    finally:
        proc.stop()
        await backend.stop()
    assert "out-5@core" in handler.ended


async def test_redirect_is_followed_once(uas: DirectSipBackend, handler: RecordingHandler,
                                         logdir: Path) -> None:
    answering, answering_port = callee("callee_answers", logdir)
    redirect, port = callee("callee_redirect", logdir, "-key", "target_port",
                            str(answering_port))
    try:
        code = await asyncio.wait_for(
            uas.dial("out-6@core", OutboundRequest(to=f"sip:bob@{LOOPBACK}:{port}")), 30)
        assert code == 200
        await asyncio.wait_for(uas.hangup("out-6@core"), 20)
    finally:
        try:
            await finish(redirect, logdir, "callee_redirect")
        finally:
            await finish(answering, logdir, "callee_answers")
