"""RtpSession inbound over real UDP: decoding, latching, garbage, payload types, DTMF, close."""

from __future__ import annotations

import asyncio
import logging
import socket

import numpy as np
import pytest

from opensips_ai_core.media.dtmf import TelephoneEvent
from opensips_ai_core.media.g711 import alaw_encode, ulaw_decode, ulaw_encode
from opensips_ai_core.media.session import NAT_PROBATION_PACKETS
from tests.core.media.conftest import LOOPBACK, rtp, tone, wait_until


def address(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port


async def test_inbound_audio_is_decoded_by_the_negotiated_codec(session_factory,
                                                                peer_factory) -> None:
    frames: list[np.ndarray] = []
    session = await session_factory(on_audio=frames.append)
    caller = peer_factory()
    session.configure(*address(caller), "PCMA", 8, None)
    speech = tone(0.06)
    for i in range(3):
        caller.sendto(rtp(alaw_encode(speech[i * 160:(i + 1) * 160]), seq=100 + i,
                          ts=160 * i, pt=8), (LOOPBACK, session.local_port))
    await wait_until(lambda: len(frames) == 3, what="3 decoded frames")
    assert all(f.dtype == np.int16 and f.size == 160 for f in frames)
    decoded = np.concatenate(frames).astype(np.int32)
    assert np.max(np.abs(decoded - speech.astype(np.int32))) <= 8000 / 16 + 16
    assert session.stats.packets_in == 3 and session.stats.bytes_in == 3 * (12 + 160)
    assert session.stats.latched_address == address(caller)


async def test_nat_source_latches_after_probation_and_strangers_are_dropped(
        session_factory, peer_factory, receiver, caplog) -> None:
    frames: list[np.ndarray] = []
    session = await session_factory(on_audio=frames.append)
    # The SDP says `receiver`, but the caller is really behind NAT at `caller`.
    session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
    caller, stranger = peer_factory(), peer_factory()
    target = (LOOPBACK, session.local_port)
    await wait_until(lambda: receiver.packets, what="packets to the SDP address first")
    for i in range(NAT_PROBATION_PACKETS - 1):
        caller.sendto(rtp(ulaw_encode(tone(0.02)), seq=1 + i, ts=160 * i), target)
    await wait_until(lambda: session.stats.dropped_strangers == NAT_PROBATION_PACKETS - 1,
                     what="packets on probation")
    assert session.stats.latched_address is None and frames == []
    last = NAT_PROBATION_PACKETS
    caller.sendto(rtp(ulaw_encode(tone(0.02)), seq=last, ts=160 * last), target)
    await wait_until(lambda: session.stats.latched_address == address(caller))
    caplog.set_level(logging.WARNING, logger="opensips_ai_core.media.session")
    for i in range(5):
        stranger.sendto(rtp(b"\x00" * 160, seq=500 + i, ts=0, ssrc=99), target)
    await wait_until(lambda: session.stats.dropped_strangers == NAT_PROBATION_PACKETS + 4,
                     what="5 strangers dropped")
    assert len(frames) == 1
    assert sum("Dropping RTP from" in r.getMessage() for r in caplog.records) == 1
    # Replies now go to the latched address, not to the SDP one.
    await wait_until(lambda: _readable(caller), what="RTP sent to the latched caller")
    data, _ = caller.recvfrom(2048)
    assert len(data) == 12 + 160
    count = len(receiver.packets)
    await asyncio.sleep(0.1)
    assert len(receiver.packets) <= count + 1  # at most one was already on its way


async def test_a_stranger_first_cannot_take_the_call_from_the_sdp_address(
        session_factory, peer_factory) -> None:
    """The reported attack: 3 packets from a stranger before the caller's first one."""
    frames: list[np.ndarray] = []
    session = await session_factory(on_audio=frames.append)
    caller, stranger = peer_factory(), peer_factory()
    session.configure(*address(caller), "PCMU", 0, None)
    target = (LOOPBACK, session.local_port)
    for i in range(3):
        stranger.sendto(rtp(b"\x00" * 160, seq=10 + i, ts=160 * i, ssrc=0x1234), target)
    await wait_until(lambda: session.stats.dropped_strangers == 3, what="stranger on probation")
    assert session.stats.latched_address is None
    for i in range(3):
        caller.sendto(rtp(ulaw_encode(tone(0.02)), seq=100 + i, ts=160 * i), target)
    await wait_until(lambda: len(frames) == 3, what="the caller is heard")
    assert session.stats.latched_address == address(caller)
    # Now latched to the SDP address: the stranger gets nothing in, however long it tries.
    for i in range(3, 3 + 2 * NAT_PROBATION_PACKETS):
        stranger.sendto(rtp(b"\x00" * 160, seq=10 + i, ts=160 * i, ssrc=0x1234), target)
    await wait_until(lambda: session.stats.dropped_strangers == 3 + 2 * NAT_PROBATION_PACKETS,
                     what="stranger dropped")
    assert len(frames) == 3 and session.stats.latched_address == address(caller)
    await wait_until(lambda: _readable(caller), what="the bot's audio goes to the caller")
    assert not _readable(stranger)


async def test_out_of_sequence_or_changing_ssrc_never_passes_probation(
        session_factory, peer_factory, receiver) -> None:
    session = await session_factory()
    session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
    stranger = peer_factory()
    target = (LOOPBACK, session.local_port)
    sent = 4 * NAT_PROBATION_PACKETS
    for i in range(sent):  # every other packet a new SSRC, sequence numbers jumping
        stranger.sendto(rtp(b"\x00" * 160, seq=7 * i, ts=0, ssrc=i % 2), target)
    await wait_until(lambda: session.stats.dropped_strangers == sent, what="all dropped")
    assert session.stats.latched_address is None and session.stats.packets_in == 0


def _readable(sock: socket.socket) -> bool:
    try:
        sock.recv(2048, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    return True


async def test_garbage_short_and_wrong_type_packets_are_counted_and_the_session_goes_on(
        session_factory, peer_factory, receiver, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="opensips_ai_core.media.session")
    frames: list[np.ndarray] = []
    session = await session_factory(on_audio=frames.append)
    peer = peer_factory()
    session.configure(*address(peer), "PCMU", 0, 101)
    target = (LOOPBACK, session.local_port)
    garbage = [b"", b"\x80\x00", b"OPTIONS sip:x SIP/2.0\r\n\r\n", b"\x00" * 40,
               bytes.fromhex("82 00 0001 00000000 00000001 AAAAAAAA")]  # CC=2, one CSRC
    for data in garbage:
        peer.sendto(data, target)
    peer.sendto(rtp(b"\x00" * 20, seq=1, ts=0, pt=18), target)  # G.729: not negotiated
    peer.sendto(rtp(b"\x01\x02", seq=2, ts=0, pt=101), target)  # telephone-event too short
    # The short telephone-event has a negotiated type: it latches, then fails to parse.
    await wait_until(lambda: session.stats.malformed == len(garbage) + 1
                     and session.stats.wrong_payload_type == 1, what="counted drops")
    peer.sendto(rtp(b"", seq=3, ts=160), target)  # empty payload: counted, nothing to hear
    peer.sendto(rtp(ulaw_encode(tone(0.02)), seq=4, ts=320), target)
    await wait_until(lambda: frames, what="audio after garbage")
    assert len(frames) == 1 and frames[0].size == 160
    assert session.stats.packets_in == 2 and session.stats.dtmf_events == 0
    malformed_logs = [r for r in caplog.records if "malformed RTP" in r.getMessage()]
    assert len(malformed_logs) == 1
    # Pacing goes on, to the peer that latched.
    got: list[bytes] = []

    def drain() -> bool:
        while _readable(peer):
            got.append(peer.recv(2048))
        return len(got) >= 3

    await wait_until(drain, what="pacing continues")
    assert all(len(d) == 12 + 160 for d in got)


async def test_packets_before_configure_do_not_latch(session_factory, peer_factory) -> None:
    frames: list[np.ndarray] = []
    session = await session_factory(on_audio=frames.append)
    early = peer_factory()
    early.sendto(rtp(b"\xff" * 160, seq=1, ts=0), (LOOPBACK, session.local_port))
    await wait_until(lambda: session.stats.wrong_payload_type == 1)
    assert session.stats.latched_address is None and not frames


async def test_dtmf_digits_reported_once(session_factory, peer_factory) -> None:
    digits: list[str] = []
    session = await session_factory(on_dtmf=digits.append)
    caller = peer_factory()
    session.configure(*address(caller), "PCMU", 0, 101)
    seq = 1000
    for i, event in enumerate((1, 11, 5)):
        ts = 8000 * (i + 1)
        payloads = [TelephoneEvent(event, False, 10, 160 * k).serialize() for k in (1, 2)]
        payloads += [TelephoneEvent(event, True, 10, 480).serialize()] * 3
        for payload in payloads:
            caller.sendto(rtp(payload, seq=seq, ts=ts, pt=101, marker=payload is payloads[0]),
                          (LOOPBACK, session.local_port))
            seq += 1
    await wait_until(lambda: session.stats.packets_in == 15, what="15 DTMF packets")
    assert digits == ["1", "#", "5"]
    assert session.stats.dtmf_events == 3


async def test_duplicates_dropped_and_two_sessions_talk_across_the_wrap(session_factory) -> None:
    heard: list[np.ndarray] = []
    alice = await session_factory()
    bob = await session_factory(on_audio=heard.append)
    alice.pacer.sequence_number = 65530
    alice.pacer.timestamp = 2**32 - 800
    alice.configure(LOOPBACK, bob.local_port, "PCMU", 0, None)
    bob.configure(LOOPBACK, alice.local_port, "PCMU", 0, None)
    speech = tone(0.2)
    alice.enqueue(speech)
    await asyncio.wait_for(alice.wait_idle(), 5)
    await wait_until(lambda: len(heard) >= 20, what="bob hears alice across the wrap")
    joined = np.concatenate(heard)
    start = int(np.flatnonzero(joined)[0]) // 160 * 160  # the talkspurt after leading silence
    assert np.array_equal(joined[start:start + speech.size],
                          ulaw_decode(ulaw_encode(speech)))
    assert bob.stats.late == 0
    assert bob.stats.latched_address == (LOOPBACK, alice.local_port)
    # A duplicate of an old packet from the latched address is dropped as late.
    sock = alice._transport
    assert sock is not None
    old = rtp(b"\xff" * 160, seq=65531, ts=0, ssrc=alice.pacer.ssrc)
    sock.sendto(old, (LOOPBACK, bob.local_port))
    await wait_until(lambda: bob.stats.late == 1, what="late duplicate counted")


async def test_configure_refuses_bad_values(session_factory) -> None:
    session = await session_factory()
    with pytest.raises(ValueError, match="unsupported codec 'opus'"):
        session.configure(LOOPBACK, 4000, "opus", 111, None)
    with pytest.raises(ValueError, match=r"remote_port must be 1\.\.65535"):
        session.configure(LOOPBACK, 0, "PCMU", 0, None)
    with pytest.raises(ValueError, match=r"payload_type must be 0\.\.127"):
        session.configure(LOOPBACK, 4000, "PCMU", 200, None)


async def test_close_releases_the_port_and_wakes_waiters(ports, receiver) -> None:
    from opensips_ai_core.media.session import RtpSession

    session = await RtpSession.open(LOOPBACK, ports, lambda pcm: None)
    port = session.local_port
    assert port % 2 == 0 and ports.in_use == {port}
    session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
    session.enqueue(tone(5.0))
    waiter = asyncio.ensure_future(session.wait_idle())
    await session.close()
    await session.close()  # twice is harmless
    await asyncio.wait_for(waiter, 5)
    assert not ports.in_use and session.closed
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, port))  # the socket really is closed
    count = len(receiver.packets)
    await asyncio.sleep(0.1)
    assert len(receiver.packets) <= count + 1
    with pytest.raises(RuntimeError, match="closed"):
        session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
