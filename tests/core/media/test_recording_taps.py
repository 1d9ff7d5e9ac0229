"""The recording's taps in the media (`RtpPacer.tap`, `RtpSession.inbound_tap`) over
real UDP: they see each audio frame with the RTP timestamp it went out or came in
with, and a tap that fails stops the recording, never the call's audio."""

from __future__ import annotations

import numpy as np

from opensips_ai_core.media.g711 import ulaw_encode
from tests.core.media.conftest import LOOPBACK, rtp, tone, wait_until

SILENCE_PCMU = b"\xff" * 160


async def test_the_pacer_tap_sees_each_audio_frame_as_sent(session_factory, receiver) -> None:
    session = await session_factory()
    seen: list[tuple[int, int, np.ndarray]] = []
    session.pacer.tap = lambda ts, ssrc, pcm: seen.append((ts, ssrc, pcm.copy()))
    session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
    session.enqueue(tone(0.2))
    await session.wait_idle()
    await wait_until(lambda: len([r for r in receiver.packets
                                  if r.packet.payload != SILENCE_PCMU]) == 10, what="audio")
    sent = [r.packet for r in receiver.packets if r.packet.payload != SILENCE_PCMU]
    assert [(ts, ssrc) for ts, ssrc, _ in seen] == [(p.timestamp, p.ssrc) for p in sent]
    assert [ulaw_encode(pcm) for _, _, pcm in seen] == [p.payload for p in sent]


async def test_a_failing_pacer_tap_stops_the_recording_not_the_audio(session_factory,
                                                                     receiver) -> None:
    session = await session_factory()

    def broken(ts: int, ssrc: int, pcm: np.ndarray) -> None:
        raise RuntimeError("recording broke")

    session.pacer.tap = broken
    session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
    session.enqueue(tone(0.2))
    await session.wait_idle()
    await wait_until(lambda: len([r for r in receiver.packets
                                  if r.packet.payload != SILENCE_PCMU]) == 10, what="audio")
    assert session.pacer.tap is None and session.pacer.running


async def test_the_inbound_tap_sees_each_caller_frame_and_a_failure_spares_the_audio(
        session_factory, peer_factory) -> None:
    heard: list[np.ndarray] = []
    session = await session_factory(on_audio=heard.append)
    peer = peer_factory()
    session.configure(LOOPBACK, peer.getsockname()[1], "PCMU", 0, None)
    seen: list[tuple[int, int]] = []
    session.inbound_tap = lambda ts, ssrc, pcm: seen.append((ts, ssrc))
    frame = ulaw_encode(tone(0.02))
    for n in range(3):
        peer.sendto(rtp(frame, n, 1000 + 160 * n, ssrc=77), (LOOPBACK, session.local_port))
    await wait_until(lambda: len(heard) == 3, what="three frames")
    assert seen == [(1000, 77), (1160, 77), (1320, 77)]

    def broken(ts: int, ssrc: int, pcm: np.ndarray) -> None:
        raise RuntimeError("recording broke")

    session.inbound_tap = broken
    peer.sendto(rtp(frame, 3, 1480, ssrc=77), (LOOPBACK, session.local_port))
    await wait_until(lambda: len(heard) == 4, what="the frame after the failure")
    assert session.inbound_tap is None
