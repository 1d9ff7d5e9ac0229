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

from opensips_ai_core.signalling.headers import tag_of
from opensips_ai_core.signalling.sip import DirectSipBackend
from opensips_ai_core.signalling.sip.message import SipMessage
from tests.core.signalling.conftest import SIPP_DIR, RecordingHandler, eventually
from tests.core.signalling.sip_peer import OFFER, RawSipPeer
from voice_testkit.procs import LOOPBACK, Proc, base_env, free_port

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")


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


# ---- the NOTIFY rules, with a raw UDP peer ----------------------------------------------

@pytest.fixture
async def raw(uas: DirectSipBackend) -> AsyncIterator[RawSipPeer]:
    client = await RawSipPeer((LOOPBACK, uas.port)).open()
    try:
        yield client
    finally:
        client.close()


def response(request: SipMessage, status: str) -> str:
    lines = [f"SIP/2.0 {status}", *(f"Via: {via}" for via in request.get_all("Via"))]
    lines += [f"{name}: {request.get(name)}" for name in ("From", "To", "Call-ID", "CSeq")]
    return "\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n"


def notify(peer: RawSipPeer, call_id: str, cseq: int, tag: str, frag: str, *,
           state: str = "active", event: str = "refer") -> str:
    body = f"{frag}\r\n"
    return peer.request("NOTIFY", call_id=call_id, cseq=cseq, to_tag=tag).replace(
        "Content-Length: 0\r\n",
        f"Event: {event}\r\nSubscription-State: {state}\r\n"
        f"Content-Type: message/sipfrag;version=2.0\r\nContent-Length: {len(body)}\r\n") + body


async def test_notify_rules_and_a_refer_over_raw_udp(
        uas: DirectSipBackend, raw: RawSipPeer) -> None:
    invite = raw.request("INVITE", body=OFFER)
    raw.send(invite)
    ok = await raw.expect(200)
    raw.send(raw.ack_for(ok, invite))
    tag = tag_of(ok.get("To")) or ""
    call_id = ok.call_id
    # No transfer under way: an in-dialog NOTIFY is 481, one outside a dialog 405.
    raw.send(notify(raw, call_id, 2, tag, "SIP/2.0 100 Trying"))
    assert (await raw.expect(481)).cseq == (2, "NOTIFY")
    raw.send(notify(raw, call_id, 3, "", "SIP/2.0 100 Trying").replace(
        ";tag=\r\n", "\r\n"))
    await raw.expect(405)
    transfer = asyncio.create_task(uas.transfer(call_id, "sip:desk@10.0.0.5", timeout_s=10))
    refer = await raw.expect(method="REFER")
    assert refer.get("Refer-To") == "<sip:desk@10.0.0.5>"
    assert (refer.get("Referred-By") or "").startswith("<sip:ai@")
    assert refer.get("To") == ok.get("From") and tag in (refer.get("From") or "")
    # A NOTIFY may overtake the 202; another event package is not ours (481).
    raw.send(notify(raw, call_id, 4, tag, "SIP/2.0 100 Trying", event="presence"))
    await raw.expect(481)
    raw.send(notify(raw, call_id, 5, tag, "SIP/2.0 180 Ringing"))
    await raw.expect(200)
    raw.send(response(refer, "202 Accepted"))
    # A terminated subscription without a final status: the transfer failed.
    raw.send(notify(raw, call_id, 6, tag, "SIP/2.0 180 Ringing", state="terminated;reason=timeout"))
    await raw.expect(200)
    result = await asyncio.wait_for(transfer, 10)
    assert not result.ok and result.code == 487 and "timeout" in result.reason
    assert uas.active_calls() == [call_id]
