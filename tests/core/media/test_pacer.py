"""The outbound pacer over real UDP: rate, markers, silence, barge-in, idle, wrap, resync, hold.

Counts over about a second are given a few packets of slack (a shared CI machine);
nothing asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time

import numpy as np
import pytest

from opensips_ai_core.media.clock import MediaClock
from opensips_ai_core.media.g711 import alaw_encode, codec_by_name, ulaw_encode
from opensips_ai_core.media.pacer import RtpPacer
from opensips_ai_core.media.rtp import RtpPacket, seq_diff, ts_diff
from tests.core.media.conftest import LOOPBACK, PacketReceiver, tone, wait_until

SILENCE_PCMU = b"\xff" * 160


def audio_packets(received: list) -> list:
    return [r for r in received if r.packet.payload != SILENCE_PCMU]


def assert_continuous(received: list, resyncs: int = 0) -> None:
    """Consecutive sequence numbers; timestamps 160 apart except at `resyncs` clock jumps."""
    jumps = 0
    for prev, cur in itertools.pairwise(received):
        assert seq_diff(cur.packet.sequence_number, prev.packet.sequence_number) == 1
        step = ts_diff(cur.packet.timestamp, prev.packet.timestamp)
        if step != 160:
            # A resync after a stalled loop skips whole frames of RTP time, never goes back.
            assert step > 160 and step % 160 == 0, step
            jumps += 1
    assert jumps <= resyncs


async def test_about_fifty_silence_packets_a_second(session_factory, receiver) -> None:
    session = await session_factory()
    session.pacer.max_late_frames = 10**6  # a stalled test machine: catch up, do not resync
    session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
    loop = asyncio.get_running_loop()
    await wait_until(lambda: receiver.packets, what="the first packet")
    start = loop.time()
    await asyncio.sleep(1.0)
    window = [r for r in receiver.since(start) if r.at < start + 1.0]
    assert 45 <= len(window) <= 55, len(window)
    assert all(r.packet.payload == SILENCE_PCMU and r.packet.payload_type == 0 for r in window)
    assert all(r.packet.ssrc == session.pacer.ssrc for r in window)
    assert_continuous(receiver.packets, resyncs=session.pacer.resyncs)
    assert receiver.packets[0].packet.marker  # the stream's first packet
    assert not any(r.packet.marker for r in receiver.packets[1:])
    assert session.stats.packets_out >= len(receiver.packets)


async def test_pcma_silence_and_negotiated_payload_type(session_factory, receiver) -> None:
    session = await session_factory()
    session.configure(LOOPBACK, receiver.port, "PCMA", 8, 101)
    await wait_until(lambda: len(receiver.packets) >= 3)
    assert {r.packet.payload for r in receiver.packets} == {b"\xd5" * 160}
    assert {r.packet.payload_type for r in receiver.packets} == {8}


async def test_talkspurt_marker_callback_and_exact_audio(session_factory, receiver) -> None:
    started: list[float] = []
    session = await session_factory(
        on_talkspurt_start=lambda: started.append(asyncio.get_running_loop().time()))
    session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
    await wait_until(lambda: len(receiver.packets) >= 5, what="silence first")
    speech = tone(0.31)  # 2480 samples: 15.5 frames, the last one padded with silence
    for utterance in range(2):
        session.enqueue(speech)
        assert session.is_speaking and session.queued_samples == speech.size
        await asyncio.wait_for(session.wait_idle(), 5)
        assert not session.is_speaking and session.queued_samples == 0
        assert len(started) == utterance + 1
        await asyncio.sleep(0.1)  # some silence between the two talkspurts
    await wait_until(lambda: len(audio_packets(receiver.packets)) >= 32)
    audio = audio_packets(receiver.packets)
    assert len(audio) == 32
    first, second = audio[:16], audio[16:]
    for spurt in (first, second):
        assert [r.packet.marker for r in spurt] == [True] + [False] * 15
        padded = np.concatenate([speech, np.zeros(16 * 160 - speech.size, np.int16)])
        assert b"".join(r.packet.payload for r in spurt) == ulaw_encode(padded)
    assert_continuous(receiver.packets, resyncs=session.pacer.resyncs)


async def test_clear_stops_audio_within_one_frame(session_factory, receiver) -> None:
    session = await session_factory()
    session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
    session.enqueue(tone(3.0))
    await wait_until(lambda: len(audio_packets(receiver.packets)) >= 5, what="audio")
    waiter = asyncio.ensure_future(session.wait_idle())
    session.clear()
    next_seq = session.pacer.sequence_number  # the first packet sent after clear()
    assert not session.is_speaking
    await asyncio.wait_for(waiter, 5)
    await wait_until(lambda: any(seq_diff(r.packet.sequence_number, next_seq) >= 5
                                 for r in receiver.packets), what="packets after clear")
    after = [r for r in receiver.packets if seq_diff(r.packet.sequence_number, next_seq) >= 0]
    assert len(audio_packets(after)) <= 1
    assert after[-1].packet.payload == SILENCE_PCMU


async def test_enqueue_before_configure_waits_for_the_remote(session_factory, receiver) -> None:
    session = await session_factory()
    session.enqueue(tone(0.1).tobytes())  # bytes are accepted too (little-endian PCM16)
    await asyncio.sleep(0.1)
    assert session.queued_samples == 800 and not receiver.packets
    session.configure(LOOPBACK, receiver.port, "PCMA", 8, None)
    await asyncio.wait_for(session.wait_idle(), 5)
    await wait_until(lambda: len(receiver.packets) >= 5)
    assert b"".join(r.packet.payload for r in receiver.packets[:5]) == alaw_encode(tone(0.1))


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_sequence_and_timestamp_wrap(session_factory, receiver, codec: str) -> None:
    session = await session_factory()
    # As if the call had run for hours: both counters a few packets short of their wrap.
    session.pacer.sequence_number = 65536 - 10
    session.pacer.timestamp = 2**32 - 160 * 10 + 40
    session.pacer.max_late_frames = 10**6  # catch up rather than resync on a loaded machine
    session.configure(LOOPBACK, receiver.port, codec, 0 if codec == "PCMU" else 8, None)
    session.enqueue(tone(0.2))
    await wait_until(lambda: len(receiver.packets) >= 25, what="25 packets")
    seqs = [r.packet.sequence_number for r in receiver.packets]
    stamps = [r.packet.timestamp for r in receiver.packets]
    assert seqs[:12] == [*range(65526, 65536), 0, 1]
    assert stamps[10] == 40 and stamps[9] == 2**32 - 120
    assert all(0 <= s < 65536 for s in seqs) and all(0 <= t < 2**32 for t in stamps)
    assert_continuous(receiver.packets, resyncs=session.pacer.resyncs)


async def test_hold_stops_packets_and_resume_continues(session_factory, receiver) -> None:
    session = await session_factory()
    session.configure(LOOPBACK, receiver.port, "PCMU", 0, None)
    await wait_until(lambda: len(receiver.packets) >= 3)
    session.set_sending(False)
    session.enqueue(tone(0.1))  # spoken into the hold: consumed, not sent
    last_before = session.pacer.sequence_number
    await asyncio.sleep(0.05)
    count_on_hold = len(receiver.packets)
    await asyncio.wait_for(session.wait_idle(), 5)
    await asyncio.sleep(0.3)
    assert len(receiver.packets) == count_on_hold
    assert session.pacer.sequence_number == last_before
    held_ts = receiver.packets[-1].packet.timestamp
    session.set_sending(True)
    await wait_until(lambda: len(receiver.packets) >= count_on_hold + 3)
    resumed = receiver.packets[count_on_hold]
    assert resumed.packet.marker
    assert seq_diff(resumed.packet.sequence_number, receiver.packets[count_on_hold - 1]
                    .packet.sequence_number) == 1
    assert ts_diff(resumed.packet.timestamp, held_ts) >= 0.3 * 8000  # the clock kept running
    assert not audio_packets(receiver.packets)


async def test_a_blocked_event_loop_does_not_stop_the_packets(session_factory) -> None:
    # The pacer runs on the media clock's thread: the loop's work never delays a packet.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(0.5)
    arrivals: list[float] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                sock.recv(2048)
            except TimeoutError:
                continue
            arrivals.append(time.monotonic())

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    session = await session_factory()
    session.configure(LOOPBACK, sock.getsockname()[1], "PCMU", 0, None)
    try:
        await wait_until(lambda: len(arrivals) >= 3)
        blocked_at = time.monotonic()
        time.sleep(0.4)  # noqa: ASYNC251 - deliberately block the loop for 20 frames
        during = [t for t in arrivals if blocked_at <= t < blocked_at + 0.4]
        # ~20 packets; a loaded CI machine may stall the whole process now and then.
        assert len(during) >= 10, len(during)
    finally:
        done.set()
        reader.join(2)
        sock.close()


def test_a_stalled_process_resyncs_instead_of_bursting() -> None:
    sent: list[bytes] = []
    pacer = RtpPacer(codec_by_name("PCMU"), sent.append, timestamp=0)
    # Not started: the media clock's calls are made by hand, at chosen times.
    start = time.monotonic()
    pacer._start = start
    assert pacer.on_clock(start) == pytest.approx(start + 0.02)
    ts_before = pacer.timestamp
    after_stall = start + 0.4  # 20 frames missed
    following = pacer.on_clock(after_stall)
    assert pacer.resyncs == 1
    assert ts_diff(pacer.timestamp, ts_before) >= 0.4 * 8000
    # One packet now and the next one a frame later: not the 20 missed ones at once.
    assert len(sent) == 2
    assert following == pytest.approx(after_stall + 0.02)


class _FftWork:
    """CPU-heavy work of another call, offloaded to a thread as the core does."""

    def __init__(self) -> None:
        self.done = 0

    def run(self) -> None:
        data = np.random.default_rng(0).standard_normal(1 << 18)
        for _ in range(5):
            np.fft.irfft(np.fft.rfft(data))
        self.done += 1


async def test_two_sessions_keep_pacing_while_a_third_task_works(
        session_factory, receiver_factory) -> None:
    receivers: list[PacketReceiver] = [await receiver_factory(), await receiver_factory()]
    sessions = [await session_factory(), await session_factory()]
    for session, rx in zip(sessions, receivers, strict=True):
        session.configure(LOOPBACK, rx.port, "PCMU", 0, None)
        session.enqueue(tone(2.0))
    work = _FftWork()

    async def busy_call() -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.2
        while loop.time() < end:
            await asyncio.to_thread(work.run)

    loop = asyncio.get_running_loop()
    start = loop.time()
    await busy_call()
    assert work.done >= 1
    for rx in receivers:
        window = [r for r in rx.since(start) if r.at < start + 1.0]
        assert 40 <= len(window) <= 60, len(window)
        gaps = np.diff([r.at for r in window])
        assert gaps.max() < 0.25, gaps.max()  # generous: no call stalls behind the work
    for session, rx in zip(sessions, receivers, strict=True):
        # A loaded machine may stall the whole process: the pacer then resyncs, by design.
        assert_continuous(rx.packets, resyncs=session.pacer.resyncs)


async def test_small_chunks_are_joined_into_whole_frames() -> None:
    sent: list[bytes] = []
    pacer = RtpPacer(codec_by_name("PCMU"), sent.append, sequence_number=7, timestamp=0)
    speech = tone(0.05)[:350]  # 7 chunks of 50 samples: 2 whole frames and 30 samples
    for i in range(0, 350, 50):
        pacer.enqueue(speech[i:i + 50])
    assert pacer.queued_samples == 350
    pacer.start()
    try:
        await asyncio.wait_for(pacer.wait_idle(), 5)
    finally:
        await pacer.stop()
    packets = [RtpPacket.parse(d) for d in sent]
    audio = [p for p in packets if p.payload != SILENCE_PCMU]
    assert len(audio) == 3 and audio[0].marker
    padded = np.concatenate([speech, np.zeros(3 * 160 - 350, np.int16)])
    assert b"".join(p.payload for p in audio) == ulaw_encode(padded)
    assert [p.sequence_number for p in packets[:3]] == [7, 8, 9]
    assert pacer.packets_sent == len(sent)


async def test_pacer_refuses_bad_audio() -> None:
    pacer = RtpPacer(codec_by_name("PCMA"), lambda data: None)
    with pytest.raises(TypeError, match="int16"):
        pacer.enqueue(np.zeros(160, dtype=np.float32))
    with pytest.raises(ValueError, match="even length"):
        pacer.enqueue(b"\x00\x01\x02")
    pacer.enqueue(np.zeros(0, np.int16))
    assert not pacer.is_speaking


async def test_one_clock_paces_many_calls_and_forgets_stopped_ones() -> None:
    clock = MediaClock(name="test-clock")
    sent: list[list[bytes]] = [[] for _ in range(20)]
    pacers = [RtpPacer(codec_by_name("PCMU"), out.append) for out in sent]
    for pacer in pacers:
        pacer.start(clock)
    assert len(clock) == 20
    await asyncio.sleep(0.3)
    for pacer in pacers[:10]:
        await pacer.stop()
    assert len(clock) == 10
    counts = [len(out) for out in sent[:10]]
    await asyncio.sleep(0.2)
    assert [len(out) for out in sent[:10]] == counts  # stopped: nothing more
    assert all(len(out) > counts[0] for out in sent[10:])  # the others go on
    for pacer in pacers[10:]:
        await pacer.stop()
    assert len(clock) == 0
