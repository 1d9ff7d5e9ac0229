"""RtpPortAllocator: even ports, verified by binding, released, a clear error when exhausted."""

from __future__ import annotations

import socket

import pytest

from opensips_ai_core.media.ports import RtpPortAllocator, RtpPortsExhaustedError
from tests.core.media.conftest import LOOPBACK


def test_even_bound_ports_and_exhaustion(ports: RtpPortAllocator) -> None:
    small = RtpPortAllocator(ports.start + 1, ports.start + 6)  # odd start: evens +2, +4, +6
    assert small.capacity == 3
    socks = []
    try:
        while True:
            try:
                socks.append(small.allocate(LOOPBACK))
            except RtpPortsExhaustedError as exc:
                assert f"in {ports.start + 1}-{ports.start + 6}" in str(exc)
                assert "3 even ports in the range" in str(exc)
                break
        got = [s.getsockname()[1] for s in socks]
        assert got and all(p % 2 == 0 for p in got) and len(set(got)) == len(got)
        assert small.in_use == set(got)
        freed = got[0]
        socks.pop(0).close()
        small.release(freed)
        again = small.allocate(LOOPBACK)
        socks.append(again)
        assert again.getsockname()[1] == freed
    finally:
        for sock in socks:
            sock.close()


def test_port_taken_by_someone_else_is_skipped(ports: RtpPortAllocator) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        try:
            squatter.bind((LOOPBACK, ports.start))
        except OSError:
            pytest.skip("the chosen port is busy already")
        sock = ports.allocate(LOOPBACK)
        try:
            assert sock.getsockname()[1] not in (ports.start, ports.start + 1)
        finally:
            sock.close()


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="1 <= start <= end <= 65535"):
        RtpPortAllocator(5000, 4000)
    with pytest.raises(ValueError, match="no even port"):
        RtpPortAllocator(5001, 5001)
