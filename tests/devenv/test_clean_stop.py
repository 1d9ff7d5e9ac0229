"""A normal stop of the ASR service (worker processes, as in the dev stack with
pocketsphinx) leaves nothing of its process group behind: dev-stop used to print
`killed leftover process group ... (asr)` on every stop, because multiprocessing's
resource tracker outlived the service. The runner now logs any member of a group that
outlives its leader before it kills the group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import state
from voice_testkit.devenv_stack import PYRUN, real_readiness_timing
from voice_testkit.procs import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_stopping_the_asr_service_leaves_no_process_of_its_group(tmp_path: Path) -> None:
    port, health = free_port(), free_port()
    stack = tmp_path / "stack.yaml"
    stack.write_text(f"""
environment:
  - DEVELOPMENT_MODE=1
  - PYTHONUNBUFFERED=1
processes:
  asr:
    command: {PYRUN} -m voice_common.launch asr_service
    working_dir: {ROOT}
    environment:
      - ASR_HOST=127.0.0.1
      - ASR_PORT={port}
      - ASR_HEALTH_HTTP_PORT={health}
      - ASR_ENGINE=pocketsphinx
      - ASR_WORKERS=2
      - ASR_GRACE_PERIOD_S=5
    readiness_probe:
      http_get:
        host: 127.0.0.1
        port: "{health}"
        path: /health
        scheme: http
{real_readiness_timing("core")}    shutdown:
      signal: 15
      timeout_seconds: 15
""")
    runtime = tmp_path / "rt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    env["PYTHONPATH"] = str(ROOT / "scripts")

    def devstack(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devstack", *args, "-f", str(stack),
                               "--runtime-dir", str(runtime)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout, check=False)

    try:
        started = devstack("up", "--detach", "--wait", "150", timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        # Worker processes, as the dev stack runs pocketsphinx.
        assert "recognizer worker 2" in (runtime / "logs" / "asr.log").read_text()
        stopped = devstack("down")
        assert stopped.returncode == 0, stopped.stderr
        assert "leftover" not in stopped.stdout
        supervisor_log = (runtime / "devstack.log").read_text()
        assert "asr: Completed" in supervisor_log
        assert "outlived it" not in supervisor_log, supervisor_log
    finally:
        info = state.read(runtime)
        for proc in info.processes.values() if info else []:
            with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
                os.killpg(proc.pid, signal.SIGKILL)
