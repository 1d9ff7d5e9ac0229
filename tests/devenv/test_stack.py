"""The dev scripts and the runner against a fixture stack of echo services.

One stack for the module (starting it costs seconds): the tests run in file order and
each leaves it running and ready; the last ones stop and clean it. The module
teardown kills every process group the stack ever had, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import state
from voice_testkit.devenv_stack import FixtureStack, write_stack
from voice_testkit.procs import LOOPBACK, ROOT, health_status, running, wait_until

pytestmark = pytest.mark.timeout(180)
SCRIPTS = ROOT / "scripts"
SEEN_PIDS: set[int] = set()


def script(stack: FixtureStack, name: str, *args: str, timeout: float = 120,
           **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPTS / name), *args], env=stack.env(**env), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def current(stack: FixtureStack) -> state.StackState:
    value = state.read(stack.runtime_dir)
    assert value is not None
    for proc in value.processes.values():
        if proc.pid:
            SEEN_PIDS.add(proc.pid)
    return value


def proc_state(stack: FixtureStack, name: str) -> state.ProcessState:
    return current(stack).processes[name]


def wait_ready(stack: FixtureStack, name: str, *, restarts: int, timeout: float = 60) -> None:
    def ready() -> bool:
        info = proc_state(stack, name)
        return info.restarts == restarts and info.state == "Running" and info.ready

    wait_until(ready, timeout, 0.1, f"{name} ready after {restarts} restarts")
    assert health_status(f"{LOOPBACK}:{stack.ports[name]}") == "SERVING"


def servings(stack: FixtureStack, name: str) -> int:
    """How many times a child of `name` became SERVING (one per start or hot reload)."""
    return (stack.runtime_dir / "logs" / f"{name}.log").read_text().count("SERVING (warm-up")


def wait_reloaded(stack: FixtureStack, name: str, *, serving: int, restarts: int) -> None:
    """Hot reload keeps the supervised process (voice_common.warm_parent): a fresh child
    SERVING, the runner's restart count unchanged."""
    wait_until(lambda: servings(stack, name) >= serving, 60, 0.1, f"{name} reloaded")
    wait_ready(stack, name, restarts=restarts)


def settle_watchers() -> None:
    # A restarted service reports SERVING a moment before its file watcher is armed.
    time.sleep(1.0)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def counts(stack: FixtureStack) -> dict[str, tuple[int, int | None]]:
    return {n: (p.restarts, p.pid) for n, p in current(stack).processes.items()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FixtureStack]:
    fixture = write_stack(tmp_path_factory.mktemp("devstack"))
    supervisor: int | None = None
    try:
        started = script(fixture, "dev-start.sh", "--timeout", "90", timeout=150)
        info = state.read(fixture.runtime_dir)
        supervisor = info.supervisor_pid if info else None
        assert started.returncode == 0, started.stdout + started.stderr
        yield fixture
    finally:
        script(fixture, "dev-stop.sh", timeout=60)
        with contextlib.suppress(AssertionError):
            current(fixture)
        # The supervisor first, or it would start again what is killed below.
        if supervisor is not None and state.pid_alive(supervisor):
            os.kill(supervisor, signal.SIGKILL)
        for pid in SEEN_PIDS:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def test_start_brings_every_process_up_in_dependency_order(stack) -> None:
    now = current(stack)
    assert now.status == "running"
    assert {n: (p.state, p.ready) for n, p in now.processes.items()} == {
        n: ("Running", True) for n in ("first", "second", "third")}
    for name, port in stack.ports.items():
        assert health_status(f"{LOOPBACK}:{port}") == "SERVING", name
    log = (stack.runtime_dir / "devstack.log").read_text().splitlines()
    first_ready = next(i for i, line in enumerate(log) if "first: ready" in line)
    second_started = next(i for i, line in enumerate(log) if "second: Running" in line)
    # `second` waits for `first` to be healthy (1 s warm-up); `third` depends on nothing.
    assert first_ready < second_started
    assert next(i for i, line in enumerate(log) if "third: Running" in line) < first_ready


def test_start_on_a_running_stack_says_so_and_succeeds(stack) -> None:
    before = current(stack)
    again = script(stack, "dev-start.sh", "--timeout", "30")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout and "stack ready" in again.stdout
    assert current(stack).supervisor_pid == before.supervisor_pid


def test_status_shows_state_pid_health_port_uptime_restarts(stack) -> None:
    result = script(stack, "dev-status.sh")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    for name, info in current(stack).processes.items():
        row = rows[name].split()
        assert row[1:3] == ["Running", str(info.pid)]
        assert "SERVING" in rows[name] and str(stack.ports[name]) in rows[name]
        assert row[-1] == str(info.restarts)
        assert row[-2].endswith("s")  # uptime like 0m07s
    data = script(stack, "dev-status.sh", "--json")
    # The runner's HTTP probe and what the runtime's /health said.
    assert data.returncode == 0 and '"health": "HTTP 200 SERVING"' in data.stdout
    # Ports: those the process really has bound (gRPC and HTTP health), nothing else.
    ports = {r["name"]: r["ports"] for r in json.loads(data.stdout)["processes"]}
    assert ports == {n: f"{stack.ports[n]}/tcp {stack.health_ports[n]}/tcp"
                     if stack.ports[n] < stack.health_ports[n]
                     else f"{stack.health_ports[n]}/tcp {stack.ports[n]}/tcp"
                     for n in stack.ports}


def test_a_crashed_process_is_restarted(stack) -> None:
    before = proc_state(stack, "second")
    os.kill(before.pid, signal.SIGKILL)
    wait_ready(stack, "second", restarts=before.restarts + 1)
    after = proc_state(stack, "second")
    assert after.pid != before.pid and after.exit_code is None
    assert "second: Restarting (exit -9;" in (stack.runtime_dir / "devstack.log").read_text()


def test_a_saved_file_reloads_only_the_services_that_watch_it(stack) -> None:
    settle_watchers()
    before = counts(stack)
    serving = {name: servings(stack, name) for name in ("first", "second", "third")}
    (stack.watch["first"] / "handler.py").write_text("VALUE = 1\n")
    wait_reloaded(stack, "first", serving=serving["first"] + 1, restarts=before["first"][0])
    assert counts(stack) == before  # same processes: no restart, no new PID
    assert (servings(stack, "second"), servings(stack, "third")) == (
        serving["second"], serving["third"])
    log = (stack.runtime_dir / "logs" / "first.log").read_text()
    assert f"Hot-reload: {stack.watch['first'] / 'handler.py'} changed" in log


def test_a_burst_of_saves_reloads_once(stack) -> None:
    settle_watchers()
    before = counts(stack)
    serving = servings(stack, "second")
    for i in range(6):
        (stack.watch["second"] / f"mod{i % 2}.py").write_text(f"VALUE = {i}\n")
        time.sleep(0.08)
    wait_reloaded(stack, "second", serving=serving + 1, restarts=before["second"][0])
    time.sleep(3.0)  # longer than the 2 s batching limit: a second batch would show now
    assert servings(stack, "second") == serving + 1
    assert counts(stack) == before


def test_ignored_files_reload_nothing(stack) -> None:
    settle_watchers()
    before = counts(stack)
    serving = servings(stack, "second")
    folder = stack.watch["second"]
    (folder / "__pycache__").mkdir(exist_ok=True)
    (folder / "__pycache__" / "mod0.cpython-311.pyc").write_bytes(b"\0")
    (folder / ".mod0.py.swp").write_bytes(b"\0")
    (folder / "mod0.py~").write_text("old\n")
    (folder / "4913").write_text("")
    (folder / "notes.txt").write_text("not source\n")
    time.sleep(3.0)
    assert counts(stack) == before and servings(stack, "second") == serving
    # The watcher was alive all along: a real source file does reload it.
    (folder / "mod0.py").write_text("VALUE = 'real'\n")
    wait_reloaded(stack, "second", serving=serving + 1, restarts=before["second"][0])


def test_a_syntax_error_waits_for_the_fix_and_never_stops_the_loop(stack) -> None:
    settle_watchers()
    before = proc_state(stack, "third")
    serving = servings(stack, "third")
    module = stack.module_dir / "fixture_third.py"
    good = module.read_text()
    module.write_text(good + "\ndef broken(:\n")
    log = stack.runtime_dir / "logs" / "third.log"
    message = f"fixture_third cannot start: SyntaxError at {module}:5"
    wait_until(lambda: message in log.read_text(), 60, 0.1, "the syntax error logged")
    time.sleep(2.0)
    waiting = proc_state(stack, "third")
    # The warm parent waits with it: the same process, not restarted, not crash-looping.
    assert (waiting.restarts, waiting.pid, waiting.state) == (
        before.restarts, before.pid, "Running")
    # dev-status says so, and why, instead of "Running".
    status = script(stack, "dev-status.sh", "--json")
    third = next(r for r in json.loads(status.stdout)["processes"] if r["name"] == "third")
    assert third["state"] == "Waiting"
    assert third["message"].startswith(f"for a fixed source file: SyntaxError at {module}:5")
    module.write_text(good)
    wait_reloaded(stack, "third", serving=serving + 1, restarts=before.restarts)


def test_restart_one_service(stack) -> None:
    before = counts(stack)
    result = script(stack, "dev-restart.sh", "first")
    assert result.returncode == 0, result.stderr
    after = counts(stack)
    assert after["first"][1] != before["first"][1]
    assert after["first"][0] == before["first"][0] + 1
    assert after["third"] == before["third"]
    assert health_status(f"{LOOPBACK}:{stack.ports['first']}") == "SERVING"
    unknown = script(stack, "dev-restart.sh", "nosuch")
    assert unknown.returncode != 0 and "no process nosuch" in unknown.stderr


def test_logs_prefix_every_process_and_follow(stack, tmp_path: Path) -> None:
    result = script(stack, "dev-logs.sh", "--no-follow", "-n", "5")
    assert result.returncode == 0, result.stderr
    prefixes = {line.split("|", 1)[0].strip() for line in result.stdout.splitlines()}
    assert prefixes == {"first", "second", "third"}
    one = script(stack, "dev-logs.sh", "third", "--no-follow", "-n", "50")
    assert "SERVING" in one.stdout and not one.stdout.startswith("third")
    with running([str(SCRIPTS / "dev-logs.sh"), "first", "second"], stack.env(),
                 tmp_path / "follow.log") as follower:
        wait_until(lambda: "first  |" in follower.output(), 30, message="the first lines")
        script(stack, "dev-restart.sh", "second")
        wait_until(lambda: "second | " in follower.output()
                   and "draining (SIGTERM" in follower.output(), 30,
                   message="the restart followed live")


def test_debug_runs_commands_in_the_service_environment(stack) -> None:
    env_out = script(stack, "dev-debug.sh", "second", "env")
    assert env_out.returncode == 0, env_out.stderr
    assert f"ECHO_PORT={stack.ports['second']}" in env_out.stdout.splitlines()
    assert "DEVELOPMENT_MODE=1" in env_out.stdout.splitlines()
    py = script(stack, "dev-debug.sh", "third", "python", "-c",
                "import fixture_third, os; print(fixture_third.VERSION, os.getcwd())")
    assert py.returncode == 0, py.stderr
    assert py.stdout.split() == ["1", str(ROOT)]
    bad = script(stack, "dev-debug.sh", "nosuch", "true")
    assert bad.returncode != 0 and "no process 'nosuch'" in bad.stderr


def test_debug_dumps_the_running_service_stacks(stack) -> None:
    result = script(stack, "dev-debug.sh", "first", "--stacks")
    if result.returncode != 0 and "ermission" in result.stdout + result.stderr:
        pytest.skip(f"py-spy may not ptrace here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"== first: PID {proc_state(stack, 'first').pid}" in result.stdout
    assert "run_service" in result.stdout  # the runtime's frame in the main thread


def test_stop_leaves_no_process_and_no_bound_port(stack) -> None:
    pids = {p.pid for p in current(stack).processes.values()} | SEEN_PIDS
    supervisor = current(stack).supervisor_pid
    result = script(stack, "dev-stop.sh", timeout=60)
    assert result.returncode == 0, result.stderr
    assert not state.pid_alive(supervisor)
    assert [pid for pid in pids if state.pid_alive(pid)] == []
    for pid in pids:  # no member of any of their groups either
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert all(port_free(port) for port in stack.ports.values())
    final = current(stack)
    assert final.status == "stopped"
    assert {p.state for p in final.processes.values()} == {"Completed"}
    status = script(stack, "dev-status.sh")
    assert status.returncode == 3 and "not running" in status.stdout


def test_clean_stops_and_removes_runtime_state_and_with_all_the_venv_and_models(
        stack, tmp_path) -> None:
    assert stack.runtime_dir.exists()
    fake_venv = tmp_path / "venv"
    cache = tmp_path / "cache"
    (fake_venv / "bin").mkdir(parents=True)
    (cache / "demo-llm").mkdir(parents=True)
    (cache / "demo-llm" / "model.bin").write_bytes(b"x")
    source = stack.module_dir / "fixture_third.py"
    if state.supervisor_running(stack.runtime_dir) is None:  # stopped by the test above
        start = script(stack, "dev-start.sh", "--timeout", "90", timeout=150)
        assert start.returncode == 0, start.stderr
    supervisor = current(stack).supervisor_pid
    service_pids = [p.pid for p in current(stack).processes.values()]
    venv_caches = sorted((ROOT / ".venv").glob("lib/python3*/site-packages/*/__pycache__"))
    # VENV has no Python: dev-stop cannot run, dev-clean must still stop the stack.
    result = script(stack, "dev-clean.sh", "--all", VENV=str(fake_venv),
                    VOICE_CACHE_DIR=str(cache))
    assert not state.pid_alive(supervisor)
    assert [pid for pid in service_pids if state.pid_alive(pid)] == []
    assert result.returncode == 0, result.stdout + result.stderr
    assert not stack.runtime_dir.exists()
    assert not fake_venv.exists() and not cache.exists()
    assert source.exists() and (ROOT / "process-compose.yaml").exists()
    assert (ROOT / ".venv" / "bin" / "python").exists()
    # Not this VENV: the checkout's .venv keeps its libraries' byte-code.
    assert [p for p in venv_caches if not p.exists()] == []
