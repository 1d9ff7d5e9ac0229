"""The dev scripts' process-compose path, with a stand-in for its client on PATH.

The real process-compose cannot be installed here; tests/devenv/fake_process_compose.py
prints exactly what the v1.64.1 client prints (its docstring says from where), including
the empty answer right after `up --detached` and `is_ready` "-" for a process whose
readiness probe has not answered yet. These tests check that the scripts read those
answers as process-compose means them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voice_testkit.procs import ROOT

# `slow`: each test runs dev-*.sh, the runner's supervisor and its processes until their
# whole-second readiness probes pass (seconds each).
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]
FAKE = Path(__file__).with_name("fake_process_compose.py")
NAMES = ("asr", "core", "llm", "opensips", "tts")


def row(name: str, status: str = "Running", is_ready: str = "Ready", *, exit_code: int = 0,
        restarts: int = 0, pid: int = 0) -> dict[str, Any]:
    """One types.ProcessState as process-compose v1.64.1 marshals it (field order too)."""
    running = status == "Running"
    return {"name": name, "namespace": "default", "status": status,
            "system_time": "3s" if running else "-", "age": 3_000_000_000 if running else 0,
            "is_ready": is_ready, "has_ready_probe": True, "restarts": restarts,
            "exit_code": exit_code, "pid": pid or (4242 if running else 0),
            "is_elevated": False, "password_provided": False, "mem": 0, "cpu": 0.0,
            "is_running": running}


def everyone(**overrides: dict[str, Any]) -> list[dict[str, Any]]:
    return [overrides.get(n, row(n)) for n in NAMES]


@pytest.fixture
def fake_pc(tmp_path: Path) -> Path:
    home = tmp_path / "pc"
    bin_dir = home / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "process-compose"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    return home


def run(home: Path, script: str, *args: str, scenario: dict[str, Any] | None = None,
        timeout: float = 90) -> subprocess.CompletedProcess[str]:
    if scenario is not None:
        (home / "scenario.json").write_text(json.dumps(scenario))
    env = {k: v for k, v in os.environ.items() if k != "DEV_RUNNER"}
    env.update(PATH=f"{home / 'bin'}{os.pathsep}{env['PATH']}", FAKE_PC_DIR=str(home),
               RUNTIME_DIR=str(home / "rt"), SKIP_SETUP="1", SKIP_MODELS="1", NO_COLOR="1")
    return subprocess.run([str(ROOT / "scripts" / script), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def calls(home: Path) -> list[str]:
    return (home / "calls").read_text().splitlines()


def list_calls(home: Path) -> int:
    return sum(1 for line in calls(home) if line.startswith("process list"))


def test_start_waits_for_every_first_probe_success_through_an_empty_first_answer(
        fake_pc: Path) -> None:
    starting = everyone(**{n: row(n, is_ready="-") for n in NAMES})
    loading = everyone(llm=row("llm", is_ready="-"), core=row("core", "Pending", "-"))
    scenario = {"list": [
        # (before `up`, the fake answers as a client with no server: none runs yet)
        None,        # after `up --detached`: the server does not listen yet
        "",          # then an empty output
        starting,    # every process Running, no probe has answered (AGE 0s, HEALTH -)
        loading,     # the LLM still loading; the core waits for it
        everyone(),  # every probe has had its first success
    ], "after_restart": [everyone()]}
    result = run(fake_pc, "dev-start.sh", "--timeout", "60", scenario=scenario)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Traceback" not in out and "JSONDecodeError" not in out
    assert "stack ready" in out
    # One call before `up`, then it read every answer up to the last, and stopped there.
    assert list_calls(fake_pc) == 6
    up = next(line for line in calls(fake_pc) if line.startswith("up"))
    assert f"--unix-socket {fake_pc / 'rt' / 'process-compose.sock'}" in up
    assert "--detached" in up and "--disable-dotenv" in up


def test_start_stops_waiting_when_a_readiness_failure_aborted_a_process(
        fake_pc: Path) -> None:
    """What process-compose showed when the LLM's probe ran out: llm Completed, exit 1,
    restarts 1; core Skipped."""
    aborted = everyone(llm=row("llm", "Completed", "-", exit_code=1, restarts=1),
                       core=row("core", "Skipped", "-", exit_code=1))
    result = run(fake_pc, "dev-start.sh", "--timeout", "60",
                 scenario={"list": ["", aborted], "after_restart": [aborted]})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "core Skipped (exit 1)" in result.stderr
    assert "llm Completed (exit 1)" in result.stderr
    assert list_calls(fake_pc) == 3


def test_start_on_a_running_stack_waits_for_it_instead_of_failing(fake_pc: Path) -> None:
    (fake_pc / "state.json").write_text(json.dumps({"up": True, "sequence": "list",
                                                    "index": 0}))
    result = run(fake_pc, "dev-start.sh", "--timeout", "30",
                 scenario={"list": [everyone()], "after_restart": [everyone()]})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already running" in result.stdout
    assert not [line for line in calls(fake_pc) if line.startswith("up")]


def test_restart_of_an_exited_process_waits_until_it_is_ready(fake_pc: Path) -> None:
    (fake_pc / "state.json").write_text(json.dumps({"up": True, "sequence": "list",
                                                    "index": 0}))
    exited = everyone(opensips=row("opensips", "Completed", "-", exit_code=1))
    scenario = {"list": [exited], "after_restart": [
        everyone(opensips=row("opensips", "Running", "-")),
        everyone(opensips=row("opensips", "Running", "Not Ready")),
        everyone()]}
    result = run(fake_pc, "dev-restart.sh", "opensips", scenario=scenario)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restarted opensips" in result.stdout
    restarts = [line for line in calls(fake_pc) if line.startswith("process restart")]
    assert restarts == [f"process restart opensips --unix-socket "
                        f"{fake_pc / 'rt' / 'process-compose.sock'}"]
    unknown = run(fake_pc, "dev-restart.sh", "nosuch")
    assert unknown.returncode != 0 and "no process nosuch" in unknown.stderr


def test_status_reads_process_compose_and_survives_a_closed_pipe(fake_pc: Path) -> None:
    (fake_pc / "state.json").write_text(json.dumps({"up": True, "sequence": "list",
                                                    "index": 0}))
    listing = everyone(llm=row("llm", is_ready="-"))
    result = run(fake_pc, "dev-status.sh", scenario={"list": [listing],
                                                      "after_restart": [listing]})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "(process-compose)" in lines[0]
    header = lines[1].split()
    assert header[:4] == ["NAME", "STATE", "PID", "HEALTH"]
    assert {line.split()[0] for line in lines[2:]} == set(NAMES)
    data = run(fake_pc, "dev-status.sh", "--json")
    rows = {r["name"]: r for r in json.loads(data.stdout)["processes"]}
    assert (rows["llm"]["ready"], rows["asr"]["ready"]) == (False, True)
    # A reader that is gone before the first write (as `| head` once it has its lines).
    piped = subprocess.run(f"{ROOT / 'scripts' / 'dev-status.sh'} --json | true",
                           shell=True, env={**os.environ, "PATH": f"{fake_pc / 'bin'}:"
                                            f"{os.environ['PATH']}",
                                            "FAKE_PC_DIR": str(fake_pc),
                                            "RUNTIME_DIR": str(fake_pc / "rt")},
                           capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr
    stopped = run(fake_pc, "dev-stop.sh")
    assert stopped.returncode == 0 and any(line.startswith("down") for line in calls(fake_pc))
    assert run(fake_pc, "dev-status.sh").returncode == 3
