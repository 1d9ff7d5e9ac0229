"""The OpenSIPS double's SIP socket does what OpenSIPS 3.6.8's core and tm did there:
Via `received`/`rport`, CANCEL, a retransmitted INVITE absorbed, final replies
retransmitted until the ACK (sip_transactions.py; test_opensips_real.py runs the same
checks against a real OpenSIPS when one is on PATH). Real UDP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from opensips_ai_core.signalling.sip.message import parse_message
from tests.core.signalling import sip_transactions
from tests.core.signalling.sip_peer import OFFER
from voice_testkit.opensips_peer import OpenSipsPeer
from voice_testkit.sip_script import SipScript


@pytest.fixture
async def opensips() -> AsyncIterator[OpenSipsPeer]:
    peer = await OpenSipsPeer(sip=True).start()
    try:
        yield peer
    finally:
        await peer.stop()


def script(peer: OpenSipsPeer) -> SipScript:
    assert peer._sip is not None
    return peer._sip


async def test_replies_carry_the_via_as_the_core_stamps_it(opensips: OpenSipsPeer) -> None:
    await sip_transactions.via_stamps(opensips.sip_port)


async def test_a_cancel_of_no_transaction_gets_481(opensips: OpenSipsPeer) -> None:
    await sip_transactions.cancel_of_nothing(opensips.sip_port)


async def test_a_cancel_of_a_pending_invite_gets_200_and_the_cores_487(
        opensips: OpenSipsPeer) -> None:
    await sip_transactions.cancel_of_a_pending_invite(opensips.sip_port, opensips.mi_port)
    (key,) = opensips.sessions
    assert opensips.sessions[key].state == 7  # terminated, listed until the core deletes it


async def test_retransmitted_invites_absorbed_and_final_replies_retransmitted(
        opensips: OpenSipsPeer) -> None:
    await sip_transactions.retransmissions(opensips.sip_port, opensips.mi_port)
    # One transaction and one session per call: the retransmitted INVITEs were not
    # processed again (the answered call's session ended with its BYE).
    assert len(script(opensips).transactions) == len(opensips.sip_sent) == 2
    assert [s.state for s in opensips.sessions.values()] == [7]
    await opensips.wait_for(lambda: script(opensips).retransmitting == 0, 30,
                            "the ACKs to end the retransmissions")


async def test_an_unacked_final_reply_stops_after_fr_timeout(opensips: OpenSipsPeer) -> None:
    """Without an ACK the 486 goes out 4 times in all (at 0, 0.5, 1.5, 3.5 s: the
    script's fr_timeout is 5 s), then nothing retransmits it any more."""
    async with sip_transactions.core_and_caller(opensips.sip_port, opensips.mi_port) as (
            core, caller):
        invite = caller.request("INVITE", body=OFFER)
        caller.send(invite)
        key = (await core.event("NEW", parse_message(invite.encode()).call_id))["key"]
        await core.reply(key, 486, "Busy Here")
        first = await caller.expect(486, timeout=30)
        assert sip_transactions.wire(await caller.expect(486, timeout=30)) == \
            sip_transactions.wire(first)
        await opensips.wait_for(lambda: script(opensips).retransmitting == 0, 30,
                                "the retransmissions to end")
        transaction = script(opensips).by_key[key]
        assert (transaction.acked, transaction.final_copies) == (False, 4)


async def test_a_stopped_peer_leaves_no_retransmission_behind() -> None:
    peer = await OpenSipsPeer(sip=True).start()
    try:
        async with sip_transactions.core_and_caller(peer.sip_port, peer.mi_port) as (
                core, caller):
            invite = caller.request("INVITE", body=OFFER)
            caller.send(invite)
            key = (await core.event("NEW", parse_message(invite.encode()).call_id))["key"]
            await core.reply(key, 486, "Busy Here")
            sip = script(peer)
            await peer.wait_for(lambda: sip.retransmitting == 1, 30, "the 486 retransmitted")
            task = sip.by_key[key].retransmitting
    finally:
        await peer.stop()
    assert task is not None and task.done()
    assert not [t for t in asyncio.all_tasks() if "_retransmit" in repr(t.get_coro())]


async def test_a_cancel_crossing_the_answer_then_the_callers_bye(
        opensips: OpenSipsPeer) -> None:
    await sip_transactions.cancel_crossing_the_answer(opensips.sip_port, opensips.mi_port)


async def test_a_bye_of_no_session(opensips: OpenSipsPeer) -> None:
    await sip_transactions.bye_of_no_session(opensips.sip_port)


async def test_after_the_session_is_deleted(opensips: OpenSipsPeer) -> None:
    await sip_transactions.after_the_session_is_deleted(opensips.sip_port, opensips.mi_port)
