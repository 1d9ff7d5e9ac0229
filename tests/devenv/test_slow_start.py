"""A service that takes 30 s to load comes up under process-compose.yaml's own readiness
probe settings, and so does what waits for it.

Under process-compose the readiness probe's failure_threshold-th failure in a row stops
the process for good and skips its dependents (the runner does the same; see
test_runner_behaviour.py). With the old settings (1 s period, 3 failures) the LLM was
stopped 3 s into loading its model. Here an echo service warms up for 30 s (a real
model on a busy 2-core machine: 20-30 s), probed with the readiness timing that
process-compose.yaml gives its probed processes (the core's; ASR, LLM and TTS are ready
by their log line, which has no failure count at all), and a dependent waits for it
with `process_healthy`.
"""

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
from voice_testkit.procs import LOOPBACK, ROOT, free_port, health_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
LOAD_S = 30


def service(name: str, *, warmup: float, depends: str | None) -> tuple[str, int]:
    port, health = free_port(), free_port()
    deps = (f"    depends_on:\n      {depends}:\n        condition: process_healthy\n"
            if depends else "")
    return f"""  {name}:
    command: {PYRUN} -m voice_common.launch --prefix ECHO voice_testkit.echo_service
    working_dir: {ROOT}
    environment:
      - ECHO_PORT={port}
      - ECHO_HEALTH_HTTP_PORT={health}
      - ECHO_WARMUP_S={warmup}
      - ECHO_GRACE_PERIOD_S=1
      - PYTHONPATH={ROOT}
{deps}    readiness_probe:
      http_get:
        host: 127.0.0.1
        port: "{health}"
        path: /health
        scheme: http
{real_readiness_timing("core")}    availability:
      restart: always
      backoff_seconds: 0
    shutdown:
      signal: 15
      timeout_seconds: 10
""", port


def test_a_30_s_load_is_not_fatal_with_the_real_probe_settings(tmp_path: Path) -> None:
    slow, slow_port = service("llm", warmup=LOAD_S, depends=None)
    core, core_port = service("core", warmup=0, depends="llm")
    stack = tmp_path / "stack.yaml"
    stack.write_text("environment:\n  - DEVELOPMENT_MODE=1\n  - PYTHONUNBUFFERED=1\n"
                     f"processes:\n{slow}{core}")
    runtime = tmp_path / "rt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}

    def devstack(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devstack", *args, "-f", str(stack),
                               "--runtime-dir", str(runtime)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout, check=False)

    try:
        started = devstack("up", "--detach", "--wait", "180", timeout=200)
        assert started.returncode == 0, started.stdout + started.stderr
        procs = state.read(runtime).processes
        assert {n: (p.state, p.health, p.restarts) for n, p in procs.items()} == {
            "llm": ("Running", "Ready", 0), "core": ("Running", "Ready", 0)}
        assert health_status(f"{LOOPBACK}:{slow_port}") == "SERVING"
        assert health_status(f"{LOOPBACK}:{core_port}") == "SERVING"
        log = (runtime / "devstack.log").read_text()
        assert "aborted" not in log
        # The dependent started only once the slow one was ready.
        assert "llm: ready" in log and log.index("core: Running") > log.index("llm: ready")
    finally:
        devstack("down")
        info = state.read(runtime)
        for proc in info.processes.values() if info else []:
            with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
                os.killpg(proc.pid, signal.SIGKILL)
