"""RTP port allocation: even UDP ports from a configured range, verified by binding.

RTP uses even ports by convention (RFC 3550 11: RTCP would take the next odd
one). The allocator hands out a socket that is already bound, so no other
process can take the port between the check and the use, and walks the range
round-robin so that a port just released is not reused at once (late packets
of the previous call would land in the new one).
"""

from __future__ import annotations

import socket


class RtpPortsExhaustedError(RuntimeError):
    """No even UDP port in the range could be bound."""


class RtpPortAllocator:
    def __init__(self, start: int, end: int) -> None:
        if not 1 <= start <= end <= 65535:
            raise ValueError(f"RTP port range must satisfy 1 <= start <= end <= 65535, "
                             f"got {start}-{end}")
        first_even = start + (start % 2)
        if first_even > end:
            raise ValueError(f"RTP port range {start}-{end} holds no even port")
        self.start = start
        self.end = end
        self._ports = list(range(first_even, end + 1, 2))
        self._next = 0
        self._in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def in_use(self) -> frozenset[int]:
        return frozenset(self._in_use)

    def allocate(self, local_ip: str) -> socket.socket:
        """A non-blocking UDP socket bound to `local_ip` on a free even port of the range.

        Raises RtpPortsExhaustedError when every even port is in use here or elsewhere.
        """
        family = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
        busy_elsewhere = 0
        for _ in range(len(self._ports)):
            port = self._ports[self._next]
            self._next = (self._next + 1) % len(self._ports)
            if port in self._in_use:
                continue
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((local_ip, port))
            except OSError:
                sock.close()
                busy_elsewhere += 1
                continue
            sock.setblocking(False)
            self._in_use.add(port)
            return sock
        raise RtpPortsExhaustedError(
            f"no free even UDP port for RTP on {local_ip} in {self.start}-{self.end}: "
            f"{len(self._in_use)} in use by this process, {busy_elsewhere} taken by others "
            f"({len(self._ports)} even ports in the range)"
        )

    def release(self, port: int) -> None:
        """Give a port back (its socket must be closed by its owner)."""
        self._in_use.discard(port)
