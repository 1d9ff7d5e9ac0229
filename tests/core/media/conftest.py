"""Real UDP on 127.0.0.1 for the media tests: port ranges, packet receivers, plain peers."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from opensips_ai_core.media.ports import RtpPortAllocator
from opensips_ai_core.media.rtp import RtpPacket
from opensips_ai_core.media.session import RtpSession

LOOPBACK = "127.0.0.1"


@dataclass
class Received:
    at: float
    packet: RtpPacket
    addr: tuple[str, int]


@dataclass
class PacketReceiver(asyncio.DatagramProtocol):
    """Collects every RTP packet sent to its port, with the loop time it arrived."""

    packets: list[Received] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    port: int = 0

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        self.packets.append(Received(asyncio.get_running_loop().time(), RtpPacket.parse(data),
                                     (addr[0], addr[1])))

    def since(self, start: float) -> list[Received]:
        return [r for r in self.packets if r.at >= start]


@pytest.fixture
def ports() -> RtpPortAllocator:
    # A random even range: parallel test runs rarely collide, and the allocator skips busy ports.
    start = random.randrange(20000, 60000, 2)
    return RtpPortAllocator(start, start + 199)


@pytest.fixture
async def receiver_factory() -> AsyncIterator[Callable[[], asyncio.Future[PacketReceiver]]]:
    made: list[PacketReceiver] = []

    async def make() -> PacketReceiver:
        receiver = PacketReceiver()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: receiver, local_addr=(LOOPBACK, 0))
        receiver.transport = transport
        receiver.port = transport.get_extra_info("sockname")[1]
        made.append(receiver)
        return receiver

    yield make  # type: ignore[misc]
    for receiver in made:
        assert receiver.transport is not None
        receiver.transport.close()


@pytest.fixture
async def receiver(receiver_factory) -> PacketReceiver:
    return await receiver_factory()


@pytest.fixture
def peer_factory() -> Iterator[Callable[[], socket.socket]]:
    """Plain UDP sockets on 127.0.0.1 playing the caller (or a stranger)."""
    made: list[socket.socket] = []

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        sock.setblocking(False)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close()


@pytest.fixture
async def session_factory(ports: RtpPortAllocator):
    """Opens RtpSessions and closes every one of them after the test."""
    made: list[RtpSession] = []

    async def make(on_audio=None, on_dtmf=None, on_talkspurt_start=None) -> RtpSession:
        session = await RtpSession.open(LOOPBACK, ports, on_audio or (lambda pcm: None),
                                        on_dtmf=on_dtmf, on_talkspurt_start=on_talkspurt_start)
        made.append(session)
        return session

    yield make
    for session in made:
        await session.close()
    assert not ports.in_use


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0,
                     what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


def tone(seconds: float, freq: float = 440.0, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def rtp(payload: bytes, seq: int, ts: int, *, pt: int = 0, ssrc: int = 0x1234,
        marker: bool = False) -> bytes:
    return RtpPacket(payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=ssrc,
                     payload=payload, marker=marker).serialize()
