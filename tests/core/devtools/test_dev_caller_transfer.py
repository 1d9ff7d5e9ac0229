"""The dev caller follows the bot's blind transfer (RFC 3515) like a phone that supports it.

Real SIP and RTP over 127.0.0.1: the bot's side is the core's direct-SIP backend
(`DirectSipBackend.transfer`, which sends the REFER and reads the NOTIFYs), the caller is
`devtools.sip_uac.SipCaller` with `devtools.transferee.BlindTransfer`, the target is
`devtools.mock_adviser` (its line is the chime here: no TTS service; the spoken line
over real services is test_dial_transfer.py). Also: the caller that refuses (405), and
a target that does not answer (the failure reported in the final NOTIFY).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from opensips_ai_core.devtools.mock_adviser import Adviser, start
from opensips_ai_core.devtools.sip_uac import (
    ReferRequest,
    SipCaller,
    make_sdp,
    parse_media_address,
)
from opensips_ai_core.devtools.softphone import RtpPeer
from opensips_ai_core.devtools.transferee import BlindTransfer, TransferOutcome
from opensips_ai_core.signalling.sip import DirectSipBackend
from tests.core.signalling.conftest import RecordingHandler, eventually
from voice_testkit.procs import LOOPBACK, free_port

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
async def adviser() -> AsyncIterator[tuple[Adviser, int]]:
    made = Adviser(tts=None, hangup_after_s=0.5)
    sip, runner = await start(made, LOOPBACK, 0)
    try:
        yield made, sip.port
    finally:
        await made.close()
        await sip.stop()
        await runner.cleanup()


class Caller:
    """The dev caller's phone: one call to the bot; follows a REFER when `accept`."""

    def __init__(self, uas: DirectSipBackend, accept: bool) -> None:
        self.refer_queue: asyncio.Queue[ReferRequest] = asyncio.Queue()
        self.sip = SipCaller((LOOPBACK, uas.port),
                             on_refer=self.refer_queue.put_nowait if accept else None)
        self.rtp = RtpPeer()
        self.following: asyncio.Task[TransferOutcome] | None = None

    async def dial(self) -> None:
        await self.rtp.open()
        await self.sip.open()
        answer = await self.sip.invite(make_sdp(LOOPBACK, self.rtp.local_port))
        assert answer.status == 200, answer

    def follow_refers(self) -> None:
        async def follow() -> TransferOutcome:
            refer = await self.refer_queue.get()
            return await BlindTransfer(self.sip, refer, ring_timeout_s=3).run()
        self.following = asyncio.create_task(follow())

    async def close(self) -> None:
        if self.following is not None:
            self.following.cancel()
        await self.rtp.close()
        self.sip.close()


async def test_the_caller_accepts_notifies_and_the_adviser_answers(
        uas: DirectSipBackend, handler: RecordingHandler, adviser: tuple[Adviser, int]) -> None:
    mock, port = adviser
    target = f"sip:advisers@{LOOPBACK}:{port}"
    caller = Caller(uas, accept=True)
    try:
        await caller.dial()
        caller.follow_refers()
        call_id = str(await eventually(lambda: next(iter(handler.media), None), 10, "the call"))
        result = await asyncio.wait_for(uas.transfer(call_id, target, timeout_s=20), 40)
        assert result.ok and result.code == 200, result
        assert caller.following is not None
        outcome = await asyncio.wait_for(caller.following, 30)
        # The REFER: accepted (202), with the target and the bot as Referred-By.
        (refer,) = caller.sip.refers
        assert refer.refer_to == target and "sip:ai@" in (refer.referred_by or "")
        # Two NOTIFYs, each answered 200 by the bot: 100 Trying, then the final 200 OK.
        assert [(n.sipfrag, n.answered) for n in outcome.notified] == [
            ("SIP/2.0 100 Trying", 200), ("SIP/2.0 200 OK", 200)]
        # The new INVITE reached the adviser, which answered; the bot's BYE ended its call.
        assert [info.callee for info in mock.answered] == [target]
        await asyncio.wait_for(caller.sip.bye_received.wait(), 10)
        assert uas.active_calls() == [] and call_id not in handler.ended
        # The transferred leg carries real RTP: the adviser's line, then its BYE.
        assert outcome.ok and outcome.leg is not None and outcome.rtp is not None
        heard = await outcome.rtp.wait_for_speech(0.0, 10)
        assert heard is not None, "no audio from the adviser"
        await asyncio.wait_for(outcome.leg.bye_received.wait(), 15)
        await eventually(lambda: mock.calls == {}, 10, "the adviser's call closed")
    finally:
        await caller.close()


async def test_the_caller_that_refuses_answers_405(
        uas: DirectSipBackend, handler: RecordingHandler, adviser: tuple[Adviser, int]) -> None:
    mock, port = adviser
    caller = Caller(uas, accept=False)
    try:
        await caller.dial()
        call_id = str(await eventually(lambda: next(iter(handler.media), None), 10, "the call"))
        result = await asyncio.wait_for(
            uas.transfer(call_id, f"sip:advisers@{LOOPBACK}:{port}", timeout_s=20), 40)
        assert not result.ok and result.code == 405, result
        assert len(caller.sip.refers) == 1 and mock.answered == []
        assert uas.active_calls() == [call_id]  # the call goes on
        assert await caller.sip.bye() == 200
    finally:
        await caller.close()


async def test_a_target_that_never_answers_is_reported_in_the_final_notify(
        uas: DirectSipBackend, handler: RecordingHandler) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind((LOOPBACK, free_port(socket.SOCK_DGRAM)))
    caller = Caller(uas, accept=True)
    try:
        await caller.dial()
        caller.follow_refers()
        call_id = str(await eventually(lambda: next(iter(handler.media), None), 10, "the call"))
        target = f"sip:advisers@{LOOPBACK}:{silent.getsockname()[1]}"
        result = await asyncio.wait_for(uas.transfer(call_id, target, timeout_s=20), 40)
        assert not result.ok and result.code == 408, result
        assert caller.following is not None
        outcome = await asyncio.wait_for(caller.following, 30)
        assert [n.sipfrag for n in outcome.notified] == [
            "SIP/2.0 100 Trying", "SIP/2.0 408 Request Timeout"]
        assert outcome.leg is None and not caller.sip.bye_received.is_set()
        assert uas.active_calls() == [call_id]  # the bot keeps the call
        assert await caller.sip.bye() == 200
    finally:
        silent.close()
        await caller.close()


async def test_the_adviser_refuses_an_invite_without_sdp_and_plays_a_chime_without_tts(
        ) -> None:
    """Bad input for the mock adviser: an INVITE without an offer gets 488 and the adviser
    stays up; a TTS service that is not there: the call is answered with the chime."""
    nowhere = f"{LOOPBACK}:{free_port()}"  # nothing listens: the TTS call fails at once
    mock = Adviser(tts=nowhere, hangup_after_s=0.2)
    sip, runner = await start(mock, LOOPBACK, 0)
    late = SipCaller((LOOPBACK, sip.port), user="advisers")
    caller = SipCaller((LOOPBACK, sip.port), user="advisers")
    rtp = RtpPeer()
    try:
        await late.open()
        refused = await late.invite("")
        assert (refused.status, mock.answered) == (488, [])
        await rtp.open()
        await caller.open()
        answer = await caller.invite(make_sdp(LOOPBACK, rtp.local_port))
        assert answer.status == 200, answer
        ip, port, _ = parse_media_address(answer.body)
        rtp.start((ip, port))
        assert await rtp.wait_for_speech(0.0, 20) is not None, "no chime"
        await asyncio.wait_for(caller.bye_received.wait(), 20)
        assert mock._audio is None  # the chime is not kept: the next call asks TTS again
    finally:
        await rtp.close()
        late.close()
        caller.close()
        await mock.close()
        await sip.stop()
        await runner.cleanup()
