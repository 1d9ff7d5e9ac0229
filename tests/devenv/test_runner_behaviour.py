"""The runner's process-compose semantics with plain shell processes (fast, no services):
completion dependencies, liveness restarts, max_restarts, shutdown escalation and
grandchildren stopped with their process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack import state

from tests.support.procs import ROOT, wait_until

pytestmark = pytest.mark.timeout(120)


def devstack(runtime: Path, stack: Path, *args: str, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    return subprocess.run([sys.executable, "-m", "devstack", *args, "-f", str(stack),
                           "--runtime-dir", str(runtime)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def stack_up(tmp_path: Path, body: str, wait: bool = True) -> Iterator[Path]:
    stack = tmp_path / "stack.yaml"
    stack.write_text(body.replace("{tmp}", str(tmp_path)))
    runtime = tmp_path / "rt"
    args = ["up", "--detach", *(["--wait", "30"] if wait else [])]
    started = devstack(runtime, stack, *args)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield runtime
    finally:
        devstack(runtime, stack, "down")
        info = state.read(runtime)
        for proc in info.processes.values() if info else []:
            with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
                os.killpg(proc.pid, signal.SIGKILL)


def processes(runtime: Path) -> dict[str, state.ProcessState]:
    info = state.read(runtime)
    assert info is not None
    return info.processes


def test_completed_successfully_dependency_and_state(tmp_path: Path) -> None:
    body = """
processes:
  migrate:
    command: echo migrated > {tmp}/migrated
  app:
    command: test -f {tmp}/migrated && exec sleep 600
    depends_on:
      migrate:
        condition: process_completed_successfully
  broken:
    command: exit 4
  after_broken:
    command: sleep 600
    depends_on:
      broken:
        condition: process_completed_successfully
"""
    with stack_up(tmp_path, body, wait=False) as runtime:
        wait_until(lambda: processes(runtime)["after_broken"].state == "Skipped", 30,
                   message="after_broken skipped")
        procs = processes(runtime)
        assert (procs["migrate"].state, procs["migrate"].exit_code) == ("Completed", 0)
        assert (procs["broken"].state, procs["broken"].exit_code) == ("Error", 4)
        assert procs["after_broken"].message == "broken exited with 4"
        wait_until(lambda: processes(runtime)["app"].state == "Running", 30)


def test_liveness_failure_restarts_and_max_restarts_stops(tmp_path: Path) -> None:
    body = """
processes:
  watched:
    command: exec sleep 600
    liveness_probe:
      exec:
        command: test ! -f {tmp}/sick
      period_seconds: 1
      failure_threshold: 1
    availability:
      restart: always
      backoff_seconds: 0
  flaky:
    command: exit 3
    availability:
      restart: on_failure
      backoff_seconds: 0
      max_restarts: 2
"""
    with stack_up(tmp_path, body, wait=False) as runtime:
        wait_until(lambda: processes(runtime)["flaky"].state == "Error", 30,
                   message="flaky given up")
        assert processes(runtime)["flaky"].restarts == 2
        first_pid = processes(runtime)["watched"].pid
        (tmp_path / "sick").touch()
        wait_until(lambda: processes(runtime)["watched"].restarts >= 1, 30,
                   message="liveness restart")
        (tmp_path / "sick").unlink()
        assert processes(runtime)["watched"].pid != first_pid
        assert "liveness failed" in (runtime / "devstack.log").read_text()


def test_stop_escalates_to_sigkill_and_takes_grandchildren(tmp_path: Path) -> None:
    body = """
processes:
  stubborn:
    command: "sleep 600 & echo $$! > {tmp}/grandchild; trap '' TERM; while :; do sleep 0.2; done"
    shutdown:
      signal: 15
      timeout_seconds: 1
"""
    # `$$!` is process-compose's escape for a literal `$!` (the file is env-expanded).
    with stack_up(tmp_path, body) as runtime:
        wait_until((tmp_path / "grandchild").exists, 10, message="the grandchild")
        grandchild = int((tmp_path / "grandchild").read_text())
        leader = processes(runtime)["stubborn"].pid
        assert state.pid_alive(grandchild) and state.pid_alive(leader)
        stack = tmp_path / "stack.yaml"
        assert devstack(runtime, stack, "down").returncode == 0
        assert not state.pid_alive(leader) and not state.pid_alive(grandchild)
        log = (runtime / "devstack.log").read_text()
        assert "stubborn: still running 1 s after signal 15: SIGKILL" in log


def test_up_refuses_when_a_probe_port_already_answers(tmp_path: Path) -> None:
    with socket.socket() as other:  # someone else's server on the port we would probe
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        stack = tmp_path / "stack.yaml"
        stack.write_text(f"""
processes:
  svc:
    command: exec sleep 600
    readiness_probe:
      exec:
        command: python -m voice_common.healthcheck 127.0.0.1:{port}
""")
        result = devstack(tmp_path / "rt", stack, "up", "--detach")
    assert result.returncode == 1
    assert f"already in use: 127.0.0.1:{port} (svc's readiness probe)" in result.stderr
    assert not (tmp_path / "rt" / "devstack.json").exists()


def test_backoff_0_restarts_a_clean_exit_at_once(tmp_path: Path) -> None:
    # The services' setting: a hot reload exits 0 and comes back without a pause;
    # `slow` shows what a backoff is, side by side.
    body = """
processes:
  reloader:
    command: echo run >> {tmp}/reloader-runs; exec sleep 0.3
    availability:
      restart: always
      backoff_seconds: 0
  slow:
    command: exit 0
    availability:
      restart: always
      backoff_seconds: 60
"""
    with stack_up(tmp_path, body, wait=False) as runtime:
        wait_until(lambda: processes(runtime)["reloader"].restarts >= 4, 30,
                   message="reloader restarted 4 times")
        runs = (tmp_path / "reloader-runs").read_text().splitlines()
        assert len(runs) >= 4
        slow = processes(runtime)["slow"]
        # 4 runs of the 0.3 s command fit many times in slow's 60 s backoff.
        assert (slow.state, slow.restarts) == ("Restarting", 1)
        log = (runtime / "devstack.log").read_text()
        assert "reloader: Restarting (exit 0)" in log
