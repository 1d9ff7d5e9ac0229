"""Fixtures of the core's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from opensips_ai_core.signalling.sip import DirectSipBackend
from tests.core.signalling.conftest import RecordingHandler
from voice_testkit.opensips_peer import OpenSipsPeer
from voice_testkit.procs import LOOPBACK


@pytest.fixture
async def peer() -> AsyncIterator[OpenSipsPeer]:
    """The OpenSIPS double (voice_testkit.opensips_peer) on free loopback ports."""
    opensips = await OpenSipsPeer().start()
    try:
        yield opensips
    finally:
        await opensips.stop()


@pytest.fixture
def handler() -> RecordingHandler:
    """A CallHandler that records what the backend told it and answers with negotiate()."""
    return RecordingHandler()


@pytest.fixture
async def uas(handler: RecordingHandler) -> AsyncIterator[DirectSipBackend]:
    """The direct-SIP backend on a free loopback port (tests with other timers override it)."""
    backend = DirectSipBackend(LOOPBACK, 0)
    await backend.start(handler)
    try:
        yield backend
    finally:
        await backend.stop()
