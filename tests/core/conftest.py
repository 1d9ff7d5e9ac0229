"""Fixtures of the core's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from voice_testkit.opensips_peer import OpenSipsPeer


@pytest.fixture
async def peer() -> AsyncIterator[OpenSipsPeer]:
    """The OpenSIPS double (voice_testkit.opensips_peer) on free loopback ports."""
    opensips = await OpenSipsPeer().start()
    try:
        yield opensips
    finally:
        await opensips.stop()
