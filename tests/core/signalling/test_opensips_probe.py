"""The dev stack's OpenSIPS readiness probe asks mi_datagram over UDP (a reply, not a port)."""

from __future__ import annotations

import asyncio
import subprocess

from voice_testkit.opensips_peer import OpenSipsPeer
from voice_testkit.procs import ROOT, base_env, free_port, python_module
from voice_testkit.stack import free_udp_port

PROBE = python_module("opensips_ai_core.signalling.opensips.probe")


async def test_probe_passes_when_mi_answers(peer: OpenSipsPeer):
    port = peer.mi_port
    # The probe runs off the loop: the peer answers on this loop.
    result = await asyncio.to_thread(
        subprocess.run, [*PROBE, "127.0.0.1", str(port), "--timeout", "5"],
        capture_output=True, text=True, timeout=60, env=base_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"127.0.0.1:{port}" in result.stdout
    assert any(method == "uptime" for method, _, _ in peer.mi_log)


def test_probe_fails_when_nothing_answers():
    port = free_udp_port()
    result = subprocess.run([*PROBE, "127.0.0.1", str(port), "--timeout", "0.5"],
                            capture_output=True, text=True, timeout=60, env=base_env())
    assert result.returncode == 1
    assert "uptime" in result.stdout


def test_opensips_run_probe_is_idle_ok_without_opensips():
    env = base_env(PATH="/usr/bin:/bin", OPENSIPS_MI_PORT=str(free_port()))
    result = subprocess.run([str(ROOT / "scripts/devstack/opensips-run"), "--probe"],
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0 and "idle" in result.stdout
