"""SIPp (a real SIP UAC) against DirectSipBackend on 127.0.0.1, one call per scenario."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from opensips_ai_core.signalling.errors import SignallingError
from opensips_ai_core.signalling.sip import DirectSipBackend
from tests.core.signalling.conftest import SIPP_DIR, RecordingHandler, eventually
from voice_testkit.procs import LOOPBACK, Proc, base_env, free_port

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")


def start_sipp(scenario: str, uas: DirectSipBackend, logdir: Path) -> Proc:
    """One SIPp call (-m 1), bounded by -timeout, in its own process group."""
    error_file = logdir / f"{scenario}.errors.log"
    args = [
        "sipp", "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-m", "1",
        "-i", LOOPBACK, "-p", str(free_port(socket.SOCK_DGRAM)),
        "-mi", LOOPBACK, "-mp", str(free_port(socket.SOCK_DGRAM)),
        "-timeout", "20s", "-timeout_error", "-recv_timeout", "10000",
        "-trace_err", "-error_file", str(error_file), "-nostdin",
        f"{LOOPBACK}:{uas.port}",
    ]
    return Proc(args, base_env(), logdir / f"{scenario}.sipp.log")


async def finish(proc: Proc, logdir: Path, scenario: str) -> None:
    try:
        rc = await asyncio.to_thread(proc.wait, 30)
    finally:
        proc.stop()
    errors = logdir / f"{scenario}.errors.log"
    detail = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
    assert rc == 0, f"sipp {scenario} exited {rc}\n{detail}\n{proc.log_path.read_text(errors='replace')[-2000:]}"


async def test_uas_hangs_up_with_bye_through_the_route_set(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    proc = start_sipp("uas_hangup", uas, logdir)
    try:
        call_id = await eventually(lambda: next(iter(handler.media), None), 15, "the call")
        # Hang up once the dialog is confirmed: hangup() itself waits for the ACK.
        await asyncio.wait_for(uas.hangup(str(call_id)), 20)
    finally:
        await finish(proc, logdir, "uas_hangup")
    info = handler.calls[str(call_id)]
    assert info.backend == "sip" and info.caller.startswith("sip:sipp@")
    assert info.callee.startswith("sip:ai@")
    assert handler.media[str(call_id)].codec == "PCMU"
    assert handler.media[str(call_id)].dtmf_payload_type == 101
    assert str(call_id) not in handler.ended  # the bot ended it: no end_call
    assert uas.active_calls() == []


async def test_caller_bye_ends_the_call(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    await finish(start_sipp("caller_bye", uas, logdir), logdir, "caller_bye")
    (call_id,) = handler.calls
    await eventually(lambda: call_id in handler.ended, 5, "end_call")
    assert handler.ended[call_id] == "bye"
    assert uas.active_calls() == []


async def test_cancel_before_answer_gets_487(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    handler.answer_delay = 30  # never answers before the CANCEL
    await finish(start_sipp("cancel", uas, logdir), logdir, "cancel")
    (call_id,) = handler.calls
    await eventually(lambda: call_id in handler.ended, 5, "end_call")
    assert handler.ended[call_id] == "cancelled"
    assert handler.cancelled_new_calls == [call_id]
    assert call_id not in handler.media


async def test_options_answered_with_allow(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    await finish(start_sipp("options", uas, logdir), logdir, "options")
    assert handler.calls == {}


async def test_reinvite_hold_answers_recvonly(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    await finish(start_sipp("reinvite_hold", uas, logdir), logdir, "reinvite_hold")
    (call_id,) = handler.calls
    assert [(c, m.direction) for c, m in handler.updates] == [(call_id, "recvonly")]
    await eventually(lambda: call_id in handler.ended, 5, "end_call")


async def test_no_common_codec_gets_488(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    await finish(start_sipp("no_common_codec", uas, logdir), logdir, "no_common_codec")
    assert len(handler.calls) == 1 and handler.media == {}
    assert uas.active_calls() == []


async def test_handler_refusal_code_reaches_sipp(
        uas: DirectSipBackend, handler: RecordingHandler, logdir: Path) -> None:
    # The 488 scenario also passes when the handler itself refuses with 488.
    handler.refuse = SignallingError(488, "Not Acceptable Here")
    await finish(start_sipp("no_common_codec", uas, logdir), logdir, "no_common_codec")
    assert len(handler.calls) == 1
