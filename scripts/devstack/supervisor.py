"""Run a stack in the foreground: start in dependency order, probe, restart, stop cleanly.

Each process runs as `bash -c COMMAND` in its own session (so its own process
group), with its output appended to its log file. Stopping sends the configured
signal to the whole group, waits `timeout_seconds`, then SIGKILLs the group, so
nothing the command started survives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack import config, probes, state
from devstack.config import Process, Project

log = logging.getLogger("devstack")


def kill_group(pid: int | None, sig: int) -> bool:
    if not pid:
        return False
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


@dataclass
class Managed:
    spec: Process
    info: state.ProcessState
    cwd: Path
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    healthy: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # will not run again
    restart_now: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    manual_restart: bool = False
    liveness_failed: bool = False


class Supervisor:
    def __init__(self, project: Project, stack_file: Path, runtime_dir: Path) -> None:
        self.project = project
        self.stack_file = stack_file.resolve()
        self.runtime_dir = runtime_dir.resolve()
        self.order = config.start_order(project)
        self.state = state.StackState(os.getpid(), str(self.stack_file), time.time())
        self.procs: dict[str, Managed] = {}
        base = dict(os.environ)
        for name in self.order:
            spec = project.processes[name]
            info = state.ProcessState(name=name, has_readiness=spec.readiness_probe is not None)
            managed = Managed(spec, info, config.working_dir(spec, self.stack_file),
                              config.process_env(project, spec, base),
                              config.log_path(spec, self.stack_file, self.runtime_dir))
            info.log = str(managed.log_path)
            self.procs[name] = managed
            self.state.processes[name] = info
        self._stop = asyncio.Event()
        self._stop_reason = ""

    # -- state ------------------------------------------------------------------------------
    def save(self) -> None:
        state.write(self.runtime_dir, self.state)

    def set_state(self, m: Managed, value: str, message: str = "") -> None:
        m.info.state = value
        m.info.message = message
        log.info("%s: %s%s", m.spec.name, value, f" ({message})" if message else "")
        self.save()

    # -- dependencies -----------------------------------------------------------------------
    async def wait_dependencies(self, m: Managed) -> str | None:
        """None when every condition holds; otherwise why the process is skipped."""
        for dep_name, dep in m.spec.depends_on.items():
            other = self.procs[dep_name]
            cond = dep.condition
            if cond == "process_started":
                await self._first(other.started, other.finished)
                if not other.started.is_set():
                    return f"{dep_name} never started"
            elif cond == "process_healthy":
                await self._first(other.healthy, other.finished)
                if not other.healthy.is_set():
                    return f"{dep_name} ended without becoming healthy"
            else:
                await other.finished.wait()
                if cond == "process_completed_successfully" and other.info.exit_code != 0:
                    return f"{dep_name} exited with {other.info.exit_code}"
        return None

    @staticmethod
    async def _first(*events: asyncio.Event) -> None:
        waits = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # -- one process --------------------------------------------------------------------------
    async def spawn(self, m: Managed) -> None:
        m.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(m.log_path, "ab") as out:  # noqa: ASYNC230 - opening is instant, no I/O wait
            m.proc = await asyncio.create_subprocess_exec(
                "bash", "-c", m.spec.command, cwd=m.cwd, env=m.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        m.info.pid = m.proc.pid
        m.info.started_at = time.time()
        m.info.exit_code = None
        m.info.ready = False
        m.healthy.clear()
        m.liveness_failed = False
        m.started.set()
        self.set_state(m, "Running")

    async def readiness(self, m: Managed) -> None:
        probe = m.spec.readiness_probe
        assert probe is not None
        await asyncio.sleep(probe.initial_delay_seconds)
        successes = failures = 0
        while True:
            ok, detail = await probes.check(probe, m.cwd, m.env)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if ok and not m.info.ready and successes >= probe.success_threshold:
                m.info.ready = True
                m.healthy.set()
                log.info("%s: ready (%s)", m.spec.name, detail)
                self.save()
            elif not ok and m.info.ready and failures >= probe.failure_threshold:
                m.info.ready = False
                m.healthy.clear()
                log.warning("%s: not ready (%s)", m.spec.name, detail)
                self.save()
            await asyncio.sleep(probe.period_seconds)

    async def liveness(self, m: Managed) -> None:
        probe = m.spec.liveness_probe
        assert probe is not None
        await asyncio.sleep(probe.initial_delay_seconds)
        failures = 0
        while True:
            ok, detail = await probes.check(probe, m.cwd, m.env)
            failures = 0 if ok else failures + 1
            if failures >= probe.failure_threshold:
                log.warning("%s: liveness failed %d times (%s): restarting",
                            m.spec.name, failures, detail)
                m.liveness_failed = True
                await self.terminate(m)
                return
            await asyncio.sleep(probe.period_seconds)

    async def terminate(self, m: Managed) -> int | None:
        """The configured signal to the group, `timeout_seconds`, then SIGKILL to the group."""
        proc = m.proc
        if proc is None:
            return None
        if proc.returncode is None:
            kill_group(proc.pid, m.spec.shutdown.signal)
            try:
                await asyncio.wait_for(proc.wait(), m.spec.shutdown.timeout_seconds)
            except TimeoutError:
                log.warning("%s: still running %d s after signal %d: SIGKILL",
                            m.spec.name, m.spec.shutdown.timeout_seconds, m.spec.shutdown.signal)
        # Whatever the leader did, nothing of its group outlives it.
        kill_group(proc.pid, signal.SIGKILL)
        return await proc.wait()

    def should_restart(self, m: Managed, code: int) -> bool:
        if m.manual_restart:
            return True
        policy = m.spec.availability
        failed = code != 0 or m.liveness_failed
        if policy.restart == "exit_on_failure" and failed:
            self.request_stop(f"{m.spec.name} failed (exit {code}) with exit_on_failure")
            return False
        wanted = policy.restart == "always" or (policy.restart == "on_failure" and failed)
        if wanted and policy.max_restarts and m.info.restarts >= policy.max_restarts:
            log.warning("%s: max_restarts (%d) reached", m.spec.name, policy.max_restarts)
            return False
        return wanted

    async def run_process(self, m: Managed) -> None:
        if m.spec.disabled:
            self.set_state(m, "Disabled")
            m.finished.set()
            return
        why = await self.wait_dependencies(m)
        if why is not None:
            self.set_state(m, "Skipped", why)
            m.finished.set()
            return
        while not m.stopping:
            await self.spawn(m)
            helpers = []
            if m.spec.readiness_probe is not None:
                helpers.append(asyncio.create_task(self.readiness(m)))
            if m.spec.liveness_probe is not None:
                helpers.append(asyncio.create_task(self.liveness(m)))
            assert m.proc is not None
            code = await m.proc.wait()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            kill_group(m.proc.pid, signal.SIGKILL)  # leftovers of a process that exited
            m.info.exit_code = code
            m.info.ready = False
            m.healthy.clear()
            if m.stopping:
                break
            if not self.should_restart(m, code):
                self.set_state(m, "Completed" if code == 0 else "Error", f"exit {code}")
                m.finished.set()
                return
            manual, m.manual_restart = m.manual_restart, False
            m.info.restarts += 1
            self.set_state(m, "Restarting", "on request" if manual else f"exit {code}")
            # backoff_seconds: 0 starts it again at once (process-compose waits at least 1 s).
            if not manual and m.spec.availability.backoff_seconds > 0:
                m.restart_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(m.restart_now.wait(),
                                           m.spec.availability.backoff_seconds)
        self.set_state(m, "Completed", f"stopped (exit {m.info.exit_code})")
        m.finished.set()

    async def stop_process(self, m: Managed) -> None:
        m.stopping = True
        m.restart_now.set()
        if m.proc is not None and m.proc.returncode is None:
            self.set_state(m, "Terminating")
            await self.terminate(m)

    async def restart_process(self, name: str) -> None:
        m = self.procs.get(name)
        if m is None or m.stopping:
            return
        log.info("%s: restart requested", name)
        if m.proc is not None and m.proc.returncode is None:
            m.manual_restart = True
            await self.terminate(m)
        elif m.info.state == "Restarting":
            m.restart_now.set()

    # -- the stack ------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    async def handle_requests(self) -> None:
        """`restart NAME` writes requests/NAME and sends SIGUSR1: act on each file there."""
        folder = self.runtime_dir / state.REQUESTS_DIR
        for path in sorted(folder.glob("*")) if folder.exists() else []:
            name = path.name
            path.unlink(missing_ok=True)
            if name.startswith("restart-"):
                await self.restart_process(name.removeprefix("restart-"))

    async def stop_all(self) -> None:
        """Dependents before what they depend on; independent ones together."""
        self.state.status = "stopping"
        self.save()
        remaining = list(self.order)
        while remaining:
            needed = {dep for n in remaining for dep in self.procs[n].spec.depends_on}
            wave = [n for n in remaining if n not in needed] or remaining
            await asyncio.gather(*(self.stop_process(self.procs[n]) for n in wave))
            remaining = [n for n in remaining if n not in wave]

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        requests = asyncio.Queue[None]()
        loop.add_signal_handler(signal.SIGUSR1, requests.put_nowait, None)
        self.save()
        tasks = {name: asyncio.create_task(self.run_process(m)) for name, m in self.procs.items()}
        self.state.status = "running"
        self.save()
        log.info("stack %s started (supervisor pid %d)", self.stack_file, os.getpid())

        async def serve_requests() -> None:
            await self.handle_requests()
            while True:
                await requests.get()
                await self.handle_requests()

        server = asyncio.create_task(serve_requests())
        all_done = asyncio.create_task(asyncio.wait(list(tasks.values())))
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({all_done, stop}, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping the stack: %s", self._stop_reason or "every process ended")
        server.cancel()
        await self.stop_all()
        # Let each process's task record its end; those still waiting on dependencies
        # never started and are cancelled.
        await asyncio.wait(list(tasks.values()), timeout=5)
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for m in self.procs.values():
            if m.info.state in {"Pending", "Running", "Restarting", "Terminating"}:
                m.info.state = "Completed" if m.proc is not None else "Skipped"
        stop.cancel()
        all_done.cancel()
        self.state.status = "stopped"
        self.save()
        log.info("stack stopped")
        failed = any(m.info.state == "Error" for m in self.procs.values())
        return 1 if failed else 0
