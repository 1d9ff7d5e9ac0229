"""The real stack as a developer runs it: dev-start, dev-call, dev-status, dev-stop.

It uses process-compose.yaml's own ports (50051-50053, their HTTP health 8051-8053,
5080, 8088, the mock bank's 8090), so it is skipped
when any of them is taken (a developer's stack already running). The demo LLM goes to
a temporary VOICE_CACHE_DIR, the runtime state to a temporary RUNTIME_DIR. The call asks
for the balance, says the account number (the stack's ASR, Whisper, hears the digits),
and hears the balance the stack's mock bank returned (core/bot.toml's get_balance).
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from voice_testkit.procs import ROOT, base_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TCP_PORTS = (50051, 50052, 50053, 8051, 8052, 8053, 8088, 8090)
UDP_PORTS = (5080,)


def busy() -> list[int]:
    taken = []
    for kind, ports in ((socket.SOCK_STREAM, TCP_PORTS), (socket.SOCK_DGRAM, UDP_PORTS)):
        for port in ports:
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    taken.append(port)
    return taken


def script(name: str, *args: str, env: dict[str, str], timeout: float = 300
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts" / name), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_dev_start_call_status_stop(tmp_path):
    if taken := busy():
        pytest.skip(f"the dev stack's ports are taken: {taken}")
    env = base_env(RUNTIME_DIR=str(tmp_path / "rt"), VOICE_CACHE_DIR=str(tmp_path / "cache"),
                   SKIP_SETUP="1", NO_COLOR="1", DEV_RUNNER="devstack",
                   # The demo LLM: its replies to the scripted turns are exact (a goodbye).
                   LLM_MODEL="demo")
    try:
        started = script("dev-start.sh", "--timeout", "300", env=env, timeout=420)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "sip:ai@127.0.0.1:5080" in started.stdout + started.stderr

        status = script("dev-status.sh", env=env, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = {line.split()[0]: line for line in status.stdout.splitlines()[2:] if line}
        for name in ("asr", "llm", "tts"):
            # The runner's HTTP probe of the service's /health, run now.
            assert "HTTP 200 SERVING" in rows[name], status.stdout
        # The core is probed on /started (a full core must not be stopped by the runner).
        assert "HTTP 200 started" in rows["core"], status.stdout

        call = script("dev-call.sh", "what is my balance", "1 2 3 4 5 6 7 8",
                      "thank you goodbye", env=env, timeout=240)
        out = call.stdout
        assert call.returncode == 0, out + call.stderr
        assert "bot (greeting):" in out
        assert "bot: Please tell me your account number" in out, out
        assert "bot: One moment, please. Your balance is 1,250.40 dollars." in out, out
        assert "turn latency:" in out
        assert "the bot hung up" in out, out
    finally:
        stopped = script("dev-stop.sh", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    # Every process took its children with it (the ASR's workers and resource tracker).
    assert "leftover" not in stopped.stdout, stopped.stdout
    assert busy() == [], "a port of the stack is still bound after dev-stop"
