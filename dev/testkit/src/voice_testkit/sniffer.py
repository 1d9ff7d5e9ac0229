"""Capture UDP datagrams on the loopback interface (like tcpdump, without tcpdump).

SIPp plays the caller's audio but keeps nothing it receives, so the end-to-end
tests read the core's reply RTP off `lo` with an AF_PACKET socket (needs root or
CAP_NET_RAW, which the test machines and CI have). Only 127.0.0.0/8 traffic is
seen: nothing here sends a packet.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass

ETH_P_ALL = 0x0003
PACKET_HOST = 0  # each loopback datagram shows up twice: as OUTGOING and as HOST


@dataclass(frozen=True)
class Datagram:
    at: float              # time.monotonic() when captured
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def available() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
    except (PermissionError, OSError, AttributeError):
        return False
    return True


class UdpSniffer:
    """Collect UDP datagrams on `lo` whose source port lies in [port_min, port_max]."""

    def __init__(self, port_min: int, port_max: int | None = None) -> None:
        self.port_min = port_min
        self.port_max = port_max if port_max is not None else port_min
        self.datagrams: list[Datagram] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, name="udp-sniffer", daemon=True)

    def __enter__(self) -> UdpSniffer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def snapshot(self) -> list[Datagram]:
        with self._lock:
            return list(self.datagrams)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] != PACKET_HOST:
                continue
            parsed = self._parse(frame)
            if parsed is not None:
                with self._lock:
                    self.datagrams.append(parsed)

    def _parse(self, frame: bytes) -> Datagram | None:
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            return None
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:  # UDP
            return None
        src_ip, dst_ip = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        sport, dport, length = struct.unpack("!HHH", ip[ihl:ihl + 6])
        if not self.port_min <= sport <= self.port_max:
            return None
        payload = ip[ihl + 8: ihl + length]
        return Datagram(time.monotonic(), (src_ip, sport), (dst_ip, dport), bytes(payload))
