"""A small fixture stack for the dev-environment tests: echo services on free ports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from voice_testkit.procs import ROOT, free_port

PYRUN = ROOT / "scripts" / "devstack" / "pyrun"


@dataclass
class FixtureStack:
    file: Path
    runtime_dir: Path
    ports: dict[str, int]
    health_ports: dict[str, int]
    watch: dict[str, Path]
    module_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ASR_", "LLM_", "TTS_", "CORE_", "ECHO_"))}
        env.update(DEV_STACK_FILE=str(self.file), RUNTIME_DIR=str(self.runtime_dir),
                   DEV_RUNNER="devstack", SKIP_SETUP="1", SKIP_MODELS="1", NO_COLOR="1",
                   VOICE_REPO_ROOT=str(ROOT))
        env.update(extra)
        return env


def real_readiness_timing(process: str = "core") -> str:
    """process-compose.yaml's readiness timing for `process` (initial delay, period,
    timeout, thresholds), as YAML lines for a fixture probe: the fixture stacks are
    probed as the real one is, so a setting that would abort a slow start shows here.
    (ASR, LLM and TTS are ready by their log line there, without a probe; the core's
    probe has the timing theirs had.)"""
    probe = yaml.safe_load((ROOT / "process-compose.yaml").read_text())[
        "processes"][process]["readiness_probe"]
    keys = ("initial_delay_seconds", "period_seconds", "timeout_seconds",
            "success_threshold", "failure_threshold")
    return "".join(f"      {key}: {probe[key]}\n" for key in keys)


def _service(name: str, port: int, health_port: int, watch: Path, module: str, *,
             warmup: float, depends: str | None, pythonpath: str) -> str:
    # As in process-compose.yaml: the runtime's HTTP /health, not an exec probe.
    probe = (f'http_get:\n        host: 127.0.0.1\n        port: "{health_port}"\n'
             f"        path: /health\n        scheme: http")
    deps = (f"    depends_on:\n      {depends}:\n        condition: process_healthy\n"
            if depends else "")
    return f"""  {name}:
    command: {PYRUN} -m voice_common.launch --prefix ECHO {module}
    working_dir: {ROOT}
    environment:
      - ECHO_PORT={port}
      - ECHO_HEALTH_HTTP_PORT={health_port}
      - ECHO_HOT_RELOAD=1
      - ECHO_WARMUP_S={warmup}
      - ECHO_GRACE_PERIOD_S=1
      - ECHO_WATCH_PATHS={watch}
      - PYTHONPATH={pythonpath}
    log_location: {{logs}}/{name}.log
{deps}    readiness_probe:
      {probe}
{real_readiness_timing()}    liveness_probe:
      {probe}
      initial_delay_seconds: 20
      period_seconds: 15
      timeout_seconds: 5
      failure_threshold: 2
    availability:
      restart: always
      backoff_seconds: 0
    shutdown:
      signal: 15
      timeout_seconds: 10
"""


def write_stack(base: Path) -> FixtureStack:
    """Three echo services: `first` (1 s warm-up), `second` depends on it being healthy,
    `third` runs a module copied into a temp dir (for syntax-error recovery)."""
    runtime = base / "rt"
    module_dir = base / "mod"
    module_dir.mkdir(parents=True)
    (module_dir / "fixture_third.py").write_text(
        "from voice_testkit.echo_service import main\n\nVERSION = 1\n")
    watch = {"first": base / "watch-first", "second": base / "watch-second",
             "third": module_dir}
    for path in watch.values():
        path.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in watch}
    health_ports = {name: free_port() for name in watch}
    pythonpath = f"{ROOT}{os.pathsep}{module_dir}"
    body = "".join([
        _service("first", ports["first"], health_ports["first"], watch["first"], "voice_testkit.echo_service",
                 warmup=1.0, depends=None, pythonpath=str(ROOT)),
        _service("second", ports["second"], health_ports["second"], watch["second"], "voice_testkit.echo_service",
                 warmup=0.0, depends="first", pythonpath=str(ROOT)),
        _service("third", ports["third"], health_ports["third"], watch["third"], "fixture_third", warmup=0.0, depends=None,
                 pythonpath=pythonpath),
    ]).replace("{logs}", str(runtime / "logs"))
    file = base / "stack.yaml"
    file.write_text(f'version: "0.5"\nenvironment:\n  - DEVELOPMENT_MODE=1\n'
                    f"  - LOG_LEVEL=DEBUG\n  - PYTHONUNBUFFERED=1\n"
                    f"  - PYTHONDONTWRITEBYTECODE=1\nprocesses:\n{body}")
    return FixtureStack(file, runtime, ports, health_ports, watch, module_dir)
