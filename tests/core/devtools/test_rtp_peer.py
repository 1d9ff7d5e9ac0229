"""The test caller's RTP peer stamps each packet with the kernel's arrival time."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

import pytest

from opensips_ai_core.devtools.softphone import RtpPeer
from opensips_ai_core.media.rtp import RtpPacket

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SIOCGSTAMPNS is Linux's")


async def test_arrival_time_is_the_kernels_even_when_the_loop_is_busy() -> None:
    peer = await RtpPeer().open()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        offsets = []
        for seq in range(3):
            packet = RtpPacket(payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=7,
                               payload=bytes(160))
            sent = time.monotonic()
            sender.sendto(packet.serialize(), ("127.0.0.1", peer.local_port))
            time.sleep(0.2)  # noqa: ASYNC251 - the loop cannot read the packet for 200 ms
            await asyncio.sleep(0.05)
            assert len(peer.frames) == seq + 1
            offsets.append(peer.frames[-1].at - sent)
        # Stamped on arrival (well under the 200 ms the loop was blocked), the first too.
        assert all(-0.01 < offset < 0.1 for offset in offsets), offsets
    finally:
        sender.close()
        await peer.close()
