"""The gate against SIPp and the real core process, on the OpenSIPS double's SIP socket.

The double (dev/testkit/src/voice_testkit/opensips_peer.py with sip=True, its SIP side
in sip_script.py) plays core/opensips/opensips.cfg as the real OpenSIPS 3.6.8 answered
(test_opensips_real.py runs the same against the real program): an OPTIONS probe gets
200 while a core takes calls and the gate's 503 otherwise; a core killed with SIGKILL
closes nothing, and its lease running out closes the gate; a core stopped past its
lease tells that from an OpenSIPS restart. Real UDP on 127.0.0.1, SIPp
as caller and probe, `python -m opensips_ai_core` as the core (its AI services nowhere:
only the signalling matters).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.core.signalling.gate_sipp import sipp_reply
from voice_testkit.opensips_peer import OpenSipsPeer
from voice_testkit.procs import LOOPBACK, free_port, wait_until
from voice_testkit.stack import core

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")

NO_CORE = (503, "SIP/2.0 503 Service Unavailable (no core)", "5")


@pytest.fixture
async def opensips() -> AsyncIterator[OpenSipsPeer]:
    peer = await OpenSipsPeer(sip=True).start()
    try:
        yield peer
    finally:
        await peer.stop()


async def test_a_killed_core_is_replaced_by_the_gates_503(
        opensips: OpenSipsPeer, logdir: Path) -> None:
    assert await sipp_reply("gate_options", opensips.sip_port, logdir) == NO_CORE
    assert await sipp_reply("gate_invite", opensips.sip_port, logdir) == NO_CORE
    nowhere = f"{LOOPBACK}:{free_port()}"
    settings = dict(CORE_SIGNALLING="opensips", OPENSIPS_MI_PORT=str(opensips.mi_port),
                    CORE_OPENSIPS_GATE_LEASE_S="3")
    first = core(logdir, nowhere, nowhere, nowhere, **settings)
    running = await asyncio.to_thread(first.__enter__)
    try:
        await opensips.wait_for(opensips.gate_open, 30, "the gate open")
        assert (await sipp_reply("gate_options", opensips.sip_port, logdir))[:2] == (
            200, "SIP/2.0 200 OK")
        # A call through the gate: answered by the core, hung up by SIPp.
        assert (await sipp_reply("gate_invite", opensips.sip_port, logdir))[0] == 200
        running.proc.signal(signal.SIGKILL)
        assert await asyncio.to_thread(running.proc.wait, 30) == -signal.SIGKILL
        await opensips.wait_for(lambda: opensips.lease_lapses == 1, 30, "the lease ran out")
    finally:
        await asyncio.to_thread(first.__exit__, None, None, None)
    assert await sipp_reply("gate_invite", opensips.sip_port, logdir) == NO_CORE
    assert await sipp_reply("gate_options", opensips.sip_port, logdir) == NO_CORE
    # A new core opens the gate again. (Started in a thread: the double answers its MI
    # on this event loop.)
    second = core(logdir, nowhere, nowhere, nowhere, **settings)
    await asyncio.to_thread(second.__enter__)
    try:
        await opensips.wait_for(opensips.gate_open, 30, "the gate open again")
        assert (await sipp_reply("gate_options", opensips.sip_port, logdir))[0] == 200
        assert (await sipp_reply("gate_invite", opensips.sip_port, logdir))[0] == 200
    finally:
        await asyncio.to_thread(second.__exit__, None, None, None)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_a_stalled_core_is_not_taken_for_an_opensips_restart(
        opensips: OpenSipsPeer, logdir: Path) -> None:
    """The real core stopped (SIGSTOP) past its 3 s lease: the script's timer closes the
    gate and callers get `503 (no core)`. Resumed (SIGCONT), the core reads its gate back
    closed, sees on its own clock that it renewed nothing for longer than the lease, and
    says so: the gate lapsed, this core stalled; OpenSIPS did not restart (none counted).
    It opens the gate again and answers the next caller."""
    nowhere = f"{LOOPBACK}:{free_port()}"
    settings = dict(CORE_SIGNALLING="opensips", OPENSIPS_MI_PORT=str(opensips.mi_port),
                    CORE_OPENSIPS_GATE_LEASE_S="3")
    # Started in a thread: the double answers its MI on this event loop.
    stalled = core(logdir, nowhere, nowhere, nowhere, **settings)
    running = await asyncio.to_thread(stalled.__enter__)
    try:
        await opensips.wait_for(opensips.gate_open, 30, "the gate open")
        running.proc.signal(signal.SIGSTOP)
        try:
            await opensips.wait_for(lambda: opensips.lease_lapses == 1, 30,
                                    "the lease ran out")
            assert await sipp_reply("gate_invite", opensips.sip_port, logdir) == NO_CORE
        finally:
            running.proc.signal(signal.SIGCONT)
        await opensips.wait_for(opensips.gate_open, 30, "the gate open again")
        lapsed = await asyncio.to_thread(
            wait_until, lambda: re.search(r"the gate lapsed: this core stalled ([\d.]+) s",
                                          running.proc.output()), 30, 0.1, "the lapse logged")
        assert float(lapsed.group(1)) >= 2.0  # the lease less the timer's first second
        assert "OpenSIPS restarted" not in running.proc.output()
        text = await asyncio.to_thread(running.metrics)
        assert metric(text, "voice_opensips_restarts_total") == 0
        assert metric(text, "voice_opensips_gate_lapses_total") == 1
        assert metric(text, "voice_opensips_subscribed") == 1
        assert (await sipp_reply("gate_invite", opensips.sip_port, logdir))[0] == 200
    finally:
        await asyncio.to_thread(stalled.__exit__, None, None, None)
