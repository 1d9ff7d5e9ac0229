"""The runner's process-compose semantics with plain shell processes (no services):
completion dependencies, a readiness failure that stops a process and skips its
dependents, liveness failures only logged, max_restarts, the 1 s restart backoff floor,
restarting an ended process, shutdown escalation and grandchildren stopped with their
process group. What process-compose v1.64.1 does is cited from its source
(src/app/process.go, src/health/health_checks.go) in each test."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import state
from voice_testkit.procs import ROOT, wait_until

# `slow`: each test runs the runner's supervisor and its processes on process-compose's
# whole-second probe periods and backoffs (seconds each; a minute in all).
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def devstack(runtime: Path, stack: Path, *args: str, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    return subprocess.run([sys.executable, "-m", "devstack", *args, "-f", str(stack),
                           "--runtime-dir", str(runtime)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def stack_up(tmp_path: Path, body: str, wait: bool = True, backoff_floor: float | None = None
             ) -> Iterator[Path]:
    stack = tmp_path / "stack.yaml"
    stack.write_text(body.replace("{tmp}", str(tmp_path)))
    runtime = tmp_path / "rt"
    args = ["up", "--detach", *(["--wait", "30"] if wait else []),
            *(["--backoff-floor", str(backoff_floor)] if backoff_floor is not None else [])]
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


def test_liveness_failure_is_only_logged_and_max_restarts_stops(tmp_path: Path) -> None:
    """process-compose v1.64.1's onLivenessCheckEnd only logs (and notifies a daemon):
    a process whose liveness probe fails keeps running, unrestarted."""
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
    with stack_up(tmp_path, body, wait=False, backoff_floor=0) as runtime:
        wait_until(lambda: processes(runtime)["flaky"].state == "Error", 30,
                   message="flaky given up")
        assert processes(runtime)["flaky"].restarts == 2
        first_pid = processes(runtime)["watched"].pid
        (tmp_path / "sick").touch()
        log = runtime / "devstack.log"
        wait_until(lambda: "watched: liveness probe failed 1 times" in log.read_text(), 30,
                   message="the liveness failure logged")
        watched = processes(runtime)["watched"]
        assert (watched.state, watched.pid, watched.restarts) == ("Running", first_pid, 0)


def test_readiness_failure_stops_the_process_and_skips_its_dependents(tmp_path: Path) -> None:
    """process-compose: the readiness prober's failure_threshold-th failure in a row is
    fatal (health_checks.go); onReadinessCheckEnd stops the process (SIGTERM to its group),
    its run loop is cancelled (Restarting, restarts + 1, then Completed) and every process
    waiting for it with process_healthy is Skipped: "process core depended on llm to
    become ready, but it was terminated". The probe here never succeeds, as a model still
    loading when the threshold runs out."""
    body = """
processes:
  llm:
    command: "trap 'echo got TERM > {tmp}/llm-term; exit 0' TERM; while :; do sleep 0.1; done"
    readiness_probe:
      exec:
        command: test -f {tmp}/loaded
      initial_delay_seconds: 0
      period_seconds: 1
      failure_threshold: 2
    availability:
      restart: always
      backoff_seconds: 0
  core:
    command: echo started > {tmp}/core-started; exec sleep 600
    depends_on:
      llm:
        condition: process_healthy
  independent:
    command: exec sleep 600
"""
    with stack_up(tmp_path, body, wait=False) as runtime:
        wait_until(lambda: processes(runtime)["core"].state == "Skipped", 30,
                   message="core skipped")
        procs = processes(runtime)
        assert (procs["llm"].state, procs["llm"].exit_code, procs["llm"].restarts) == (
            "Completed", 1, 1)
        assert "aborted" in procs["llm"].message
        assert procs["core"].message == (
            "depended on llm to become ready, but it was terminated")
        assert (tmp_path / "llm-term").read_text() == "got TERM\n"  # SIGTERM, not SIGKILL
        assert not (tmp_path / "core-started").exists()
        assert procs["independent"].state == "Running"
        # Not restarted, whatever `restart: always` says.
        pid = procs["llm"].pid
        assert pid is not None and not state.pid_alive(pid)
        # What dev-start and `process list -o json` see: process-compose's row shape.
        listed = devstack(runtime, tmp_path / "stack.yaml", "list", "-o", "json",
                          "--runner", "devstack")
        rows = {r["name"]: r for r in json.loads(listed.stdout)}
        assert (rows["llm"]["status"], rows["llm"]["is_ready"], rows["llm"]["exit_code"]) == (
            "Completed", "-", 1)
        assert (rows["core"]["status"], rows["core"]["exit_code"]) == ("Skipped", 1)
        waited = devstack(runtime, tmp_path / "stack.yaml", "await", "--timeout", "20",
                          "--runner", "devstack")
        assert waited.returncode == 1
        assert "llm Completed (exit 1)" in waited.stderr and "core Skipped" in waited.stderr


def test_the_readiness_count_runs_on_across_restarts(tmp_path: Path) -> None:
    """process-compose starts one readiness prober per process and never resets it on a
    restart: a process that keeps exiting before it answers (a crash loop, or hot reloads
    slower than the threshold) is aborted once the failures in a row reach it."""
    body = """
processes:
  looping:
    command: echo run >> {tmp}/runs; sleep 0.2; exit 1
    readiness_probe:
      exec:
        command: "false"
      initial_delay_seconds: 0
      period_seconds: 1
      failure_threshold: 4
    availability:
      restart: always
      backoff_seconds: 0
"""
    with stack_up(tmp_path, body, wait=False) as runtime:
        wait_until(lambda: processes(runtime)["looping"].state == "Completed", 30,
                   message="looping aborted")
        looping = processes(runtime)["looping"]
        assert looping.exit_code == 1 and "aborted" in looping.message
        runs = len((tmp_path / "runs").read_text().splitlines())
        assert runs >= 2  # it was restarted meanwhile, and the count went on
        log = runtime / "devstack.log"
        assert "looping: readiness probe failed 4 times in a row" in log.read_text()
        # ...and it stays stopped.
        assert processes(runtime)["looping"].state == "Completed"
        assert len((tmp_path / "runs").read_text().splitlines()) == runs


def test_readiness_is_ready_only_after_the_first_success(tmp_path: Path) -> None:
    """is_ready stays "-" (has_ready_probe true) until the probe's first success, then
    "Ready"; a process without a probe shows "-" with has_ready_probe false."""
    body = """
processes:
  slow:
    command: exec sleep 600
    readiness_probe:
      exec:
        command: test -f {tmp}/loaded
      initial_delay_seconds: 0
      period_seconds: 1
      failure_threshold: 600
  plain:
    command: exec sleep 600
"""
    with stack_up(tmp_path, body, wait=False) as runtime:
        stack = tmp_path / "stack.yaml"

        def rows() -> dict[str, dict]:
            out = devstack(runtime, stack, "list", "-o", "json", "--runner", "devstack")
            return {r["name"]: r for r in json.loads(out.stdout)}

        wait_until(lambda: rows()["slow"]["is_ready"] == "Not Ready", 30,
                   message="the first failed probe")
        now = rows()
        assert (now["slow"]["status"], now["slow"]["has_ready_probe"]) == ("Running", True)
        assert (now["plain"]["is_ready"], now["plain"]["has_ready_probe"]) == ("-", False)
        waited = devstack(runtime, stack, "await", "--timeout", "2", "--runner", "devstack")
        assert waited.returncode == 1 and "slow (health is Not Ready)" in waited.stderr
        (tmp_path / "loaded").touch()
        assert devstack(runtime, stack, "await", "--timeout", "30", "--runner",
                        "devstack").returncode == 0
        assert rows()["slow"]["is_ready"] == "Ready"


def test_ready_log_line_makes_a_run_ready_at_its_line(tmp_path: Path) -> None:
    """process-compose v1.64.1 (src/app/process.go, handleOutput): with `ready_log_line`
    the first output line that contains it sets the health Ready while it is unknown; a
    restart sets it back to unknown (onStateChange), so each run must log it again. A
    liveness probe makes has_ready_probe true, so `await` waits for that line."""
    (tmp_path / "svc.sh").write_text(
        "n=$(cat {tmp}/runs 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {tmp}/runs\n"
        "echo \"run $n: svc listening (NOT_SERVING until warm-up ends)\"\n"
        "while [ ! -f {tmp}/go$n ]; do sleep 0.05; done\n"
        "echo \"run $n: svc SERVING (warm-up 1 ms)\"\n"
        "while [ ! -f {tmp}/end$n ]; do sleep 0.05; done\n".replace("{tmp}", str(tmp_path)))
    body = """
processes:
  svc:
    command: exec bash {tmp}/svc.sh
    ready_log_line: "svc SERVING (warm-up"
    liveness_probe:
      exec:
        command: "true"
      initial_delay_seconds: 20
      period_seconds: 15
    availability:
      restart: always
"""
    with stack_up(tmp_path, body, wait=False, backoff_floor=0) as runtime:
        stack = tmp_path / "stack.yaml"

        def row() -> dict:
            out = devstack(runtime, stack, "list", "-o", "json", "--runner", "devstack")
            return {r["name"]: r for r in json.loads(out.stdout)}["svc"]

        def run_is(n: int) -> bool:
            runs = tmp_path / "runs"
            return runs.exists() and runs.read_text().strip() == str(n) and row()[
                "status"] == "Running"

        wait_until(lambda: run_is(1), 30, message="the first run")
        assert (row()["is_ready"], row()["has_ready_probe"]) == ("-", True)
        waited = devstack(runtime, stack, "await", "--timeout", "2", "--runner", "devstack")
        assert waited.returncode == 1 and "svc (health is Unknown)" in waited.stderr
        (tmp_path / "go1").touch()
        assert devstack(runtime, stack, "await", "--timeout", "30", "--runner",
                        "devstack").returncode == 0
        assert row()["is_ready"] == "Ready"
        # The run ends (exit 0) and `always` starts the next one: unknown again, though
        # the first run's line is still in the log.
        (tmp_path / "end1").touch()
        wait_until(lambda: run_is(2), 30, message="the second run")
        assert (row()["is_ready"], row()["restarts"]) == ("-", 1)
        assert "run 1: svc SERVING" in (runtime / "logs" / "svc.log").read_text()
        (tmp_path / "go2").touch()
        wait_until(lambda: row()["is_ready"] == "Ready", 30, message="the second run's line")


def test_a_process_has_its_own_group_in_the_runners_session(tmp_path: Path) -> None:
    """process-compose v1.64.1 starts a process with Setpgid (src/command/stopper_unix.go):
    its own process group, in process-compose's session. The kernel's autogroups make
    one scheduling group per session, so only then do the processes' nice values weigh
    against each other (the services start at nice 10 so that the LLM's start goes
    first); in sessions of their own each had an equal share whatever its nice value."""
    body = """
processes:
  one:
    command: exec sleep 600
  two:
    command: exec sleep 600
"""
    with stack_up(tmp_path, body, wait=False) as runtime:
        wait_until(lambda: all(p.state == "Running" and p.pid for p in
                               processes(runtime).values()), 30, message="both running")
        info = state.read(runtime)
        assert info is not None

        def group_and_session(pid: int) -> tuple[int, int]:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[2]), int(fields[3])

        runner_session = group_and_session(info.supervisor_pid)[1]
        for proc in info.processes.values():
            assert group_and_session(proc.pid) == (proc.pid, runner_session), proc.name


def test_restart_starts_an_ended_process_again(tmp_path: Path) -> None:
    """`process-compose process restart NAME` runs a process that has exited again
    (ProjectRunner.RestartProcess); so does the runner's `restart`."""
    body = """
processes:
  oneshot_server:
    command: "test -f {tmp}/runs-server && exec sleep 600; touch {tmp}/runs-server; exit 5"
    availability:
      restart: "no"
  keeper:
    command: exec sleep 600
"""
    with stack_up(tmp_path, body, wait=False) as runtime:
        stack = tmp_path / "stack.yaml"
        wait_until(lambda: processes(runtime)["oneshot_server"].state == "Error", 30,
                   message="oneshot_server exited")
        restarted = devstack(runtime, stack, "restart", "oneshot_server", "--timeout", "30")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        server = processes(runtime)["oneshot_server"]
        assert server.state == "Running" and state.pid_alive(server.pid)


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
    def grandchild_pid() -> int | None:
        # The shell creates the file before echo writes the line: wait for the line.
        path = tmp_path / "grandchild"
        text = path.read_text() if path.exists() else ""
        return int(text) if text.endswith("\n") else None

    with stack_up(tmp_path, body) as runtime:
        grandchild = wait_until(grandchild_pid, 30, message="the grandchild's PID")
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


def test_restarts_wait_at_least_the_backoff_floor(tmp_path: Path) -> None:
    """process-compose waits max(backoff_seconds, 1) s before a restart (getBackoff):
    "Restarting llm in 1 second(s)..." with backoff_seconds: 0. The runner's default is
    the same floor; `--backoff-floor 0` restarts a clean exit at once."""
    body = """
processes:
  reloader:
    command: echo run >> {tmp}/reloader-runs; exec sleep 0.3
    availability:
      restart: always
      backoff_seconds: 0
"""
    with stack_up(tmp_path, body, wait=False) as runtime:
        wait_until(lambda: processes(runtime)["reloader"].restarts >= 2, 30,
                   message="reloader restarted twice")
        log = (runtime / "devstack.log").read_text()
    starts = [line.split()[1] for line in log.splitlines() if "reloader: Running" in line]
    gaps = [_seconds(b) - _seconds(a) for a, b in itertools.pairwise(starts)]
    # Each run lasts 0.3 s, then the runner waits the 1 s floor: a guaranteed lower bound.
    assert "reloader: Restarting (exit 0; in 1 s)" in log
    assert gaps and min(gaps) >= 1.3
    fast = tmp_path / "fast"
    fast.mkdir()
    with stack_up(fast, body, wait=False, backoff_floor=0) as runtime:
        wait_until(lambda: processes(runtime)["reloader"].restarts >= 4, 30,
                   message="reloader restarted 4 times")
        assert "reloader: Restarting (exit 0; in 0 s)" in (runtime / "devstack.log").read_text()


def _seconds(clock: str) -> float:
    """The logging module's `HH:MM:SS,mmm` as seconds."""
    hms, ms = clock.split(",")
    hours, minutes, seconds = (int(x) for x in hms.split(":"))
    return hours * 3600 + minutes * 60 + seconds + int(ms) / 1000
