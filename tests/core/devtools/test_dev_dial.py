"""scripts/dev-dial.sh places an outbound call from a running core to a SIPp UAS.

The core runs as its own process on free loopback ports; its AI services' targets are
ports where nothing listens (the call only has to be placed, answered and hung up).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from voice_testkit.procs import LOOPBACK, ROOT, Proc, base_env, free_port
from voice_testkit.stack import free_rtp_range

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow,  # the core as its own process
              pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")]


def wait_http(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/live", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the core's HTTP port did not answer")


def test_dev_dial_calls_a_sipp_uas_and_hangs_up(tmp_path) -> None:
    http_port, nowhere = free_port(), f"{LOOPBACK}:{free_port()}"
    rtp = free_rtp_range(10)
    env = base_env(CORE_HTTP_PORT=str(http_port),
                   CORE_SIP_PORT=str(free_port(socket.SOCK_DGRAM)),
                   CORE_RTP_PORT_MIN=str(rtp[0]), CORE_RTP_PORT_MAX=str(rtp[1]),
                   CORE_ASR_TARGET=nowhere, CORE_LLM_TARGET=nowhere, CORE_TTS_TARGET=nowhere)
    core = Proc([str(ROOT / ".venv" / "bin" / "python"), "-m", "opensips_ai_core"], env,
                tmp_path / "core.log")
    try:
        wait_http(http_port)
        done = subprocess.run(
            [str(ROOT / "scripts" / "dev-dial.sh"), "--sipp", "--api", f"{LOOPBACK}:{http_port}",
             "--hangup-after", "0.5", "--caller-id", "Example Bank"],
            env=base_env(), capture_output=True, text=True, timeout=90, check=False)
    finally:
        core.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("placed ") and "to sip:bob@127.0.0.1:" in lines[0]
    assert "  answered (200 OK)" in lines
    assert lines[-1] == "  hung up: ended"


def test_dev_dial_help_and_usage_errors() -> None:
    script = str(ROOT / "scripts" / "dev-dial.sh")
    # dev-call.sh's module is devtools.dial; the outbound dialer is a module of its own.
    assert "-m opensips_ai_core.devtools.outbound_dial " in (ROOT / "scripts" / "dev-dial.sh"
                                                              ).read_text()
    shown = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30,
                           check=False)
    assert shown.returncode == 0 and "Usage: scripts/dev-dial.sh" in shown.stdout
    refused = subprocess.run([script, "--bogus"], capture_output=True, text=True, timeout=30,
                             check=False)
    assert refused.returncode == 2 and "unrecognized arguments: --bogus" in refused.stderr
