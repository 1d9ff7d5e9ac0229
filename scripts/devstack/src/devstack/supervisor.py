# Over 400 lines: start, probe, restart and stop share every managed process's state.
"""Run a stack in the foreground: start in dependency order, probe, restart, stop cleanly.

Each process runs as `bash -c COMMAND` in its own process group (in the runner's
session, as process-compose starts it), with its output appended to its log file.
Stopping sends the configured signal to the whole group, waits `timeout_seconds`, then
SIGKILLs the group, so nothing the command started survives it.

Probes and restarts mean what they mean in process-compose v1.64.1 (its
src/app/process.go and src/health/): one readiness and one liveness prober per process
for its whole life, across restarts; the readiness probe's `failure_threshold`-th
failure in a row stops the process for good (no restart) and skips every process that
waits for it with `process_healthy`; a liveness failure is only logged; a restart
waits at least 1 s (`backoff_floor_s`). A process with `ready_log_line` instead becomes
Ready at the first line of its output that contains it, once per run (its log file is
read every LOG_LINE_POLL_S from where the run began; process-compose reads the pipe).
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

# How often a run's log is read for its ready_log_line.
LOG_LINE_POLL_S = 0.02


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) members of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


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
    # The readiness probe reached failure_threshold: stopped, never restarted.
    aborted: bool = False
    run_offset: int = 0  # where the current run's output begins in its log file


class Supervisor:
    def __init__(self, project: Project, stack_file: Path, runtime_dir: Path, *,
                 backoff_floor_s: float = 1.0) -> None:
        self.project = project
        # process-compose waits max(backoff_seconds, 1) before any restart.
        self.backoff_floor_s = backoff_floor_s
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stack_file = stack_file.resolve()
        self.runtime_dir = runtime_dir.resolve()
        self.order = config.start_order(project)
        self.state = state.StackState(os.getpid(), str(self.stack_file), time.time())
        self.procs: dict[str, Managed] = {}
        base = dict(os.environ)
        for name in self.order:
            spec = project.processes[name]
            # process-compose's has_ready_probe: a readiness *or* a liveness probe.
            probed = spec.readiness_probe is not None or spec.liveness_probe is not None
            info = state.ProcessState(name=name, has_readiness=probed)
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
                    # process-compose's words.
                    return f"depended on {dep_name} to become ready, but it was terminated"
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
            m.run_offset = out.tell()  # this run's output starts here
            m.proc = await asyncio.create_subprocess_exec(
                "bash", "-c", m.spec.command, cwd=m.cwd, env=m.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                # Its own process group in the runner's session, as process-compose's
                # Setpgid: one session is one autogroup, so the processes' nice values
                # weigh against each other (in sessions of their own they did not).
                process_group=0,
            )
        m.info.pid = m.proc.pid
        m.info.started_at = time.time()
        m.info.exit_code = None
        m.info.ready = False
        m.info.health = "-"
        m.healthy.clear()
        m.started.set()
        self.set_state(m, "Running")

    async def readiness(self, m: Managed) -> None:
        """process-compose's readiness prober: the first success makes the process Ready
        (success_threshold is not consulted); the failure_threshold-th failure in a row,
        whenever it comes (first start, a restart, a later hang), stops the process."""
        probe = m.spec.readiness_probe
        assert probe is not None
        await asyncio.sleep(probe.initial_delay_seconds)
        failures = 0
        while True:
            ok, detail = await probes.check(probe, m.cwd, m.env)
            if m.proc is None or m.proc.returncode is not None:
                # Between runs (Restarting): process-compose's prober keeps counting, but
                # the state says "-" until the next run answers.
                failures = 0 if ok else failures + 1
            elif ok:
                failures = 0
                if m.info.health != "Ready":
                    m.info.ready, m.info.health = True, "Ready"
                    m.healthy.set()
                    log.info("%s: ready (%s)", m.spec.name, detail)
                    self.save()
            else:
                failures += 1
                if m.info.health != "Not Ready":
                    m.info.ready, m.info.health = False, "Not Ready"
                    m.healthy.clear()
                    self.save()
            if not ok and failures == probe.failure_threshold:
                log.warning("%s: readiness probe failed %d times in a row (%s): stopping it; "
                            "%s was aborted and won't become ready", m.spec.name, failures,
                            detail, m.spec.name)
                m.aborted = True
                m.restart_now.set()
                await self.terminate(m)
                return
            await asyncio.sleep(probe.period_seconds)

    async def ready_by_log(self, m: Managed) -> None:
        """process-compose's ready_log_line (src/app/process.go, handleOutput): the first
        complete output line of this run that contains it makes the process Ready; it
        stays Ready until the run ends (a restart sets its health back to unknown)."""
        needle = m.spec.ready_log_line
        assert needle is not None and m.proc is not None
        proc, offset, pending = m.proc, m.run_offset, b""
        while proc.returncode is None:
            try:
                with open(m.log_path, "rb") as handle:  # noqa: ASYNC230 - a local file
                    handle.seek(offset)
                    chunk = handle.read()
            except OSError:
                chunk = b""
            offset += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            if any(needle in line.decode(errors="replace") for line in lines):
                m.info.ready, m.info.health = True, "Ready"
                log.info("%s: ready (logged %r)", m.spec.name, needle)
                self.save()
                return
            await asyncio.sleep(LOG_LINE_POLL_S)

    async def liveness(self, m: Managed) -> None:
        """process-compose v1.64.1 only logs a liveness failure (it restarts nothing)."""
        probe = m.spec.liveness_probe
        assert probe is not None
        await asyncio.sleep(probe.initial_delay_seconds)
        failures = 0
        while True:
            ok, detail = await probes.check(probe, m.cwd, m.env)
            failures = 0 if ok else failures + 1
            if failures == probe.failure_threshold:
                log.warning("%s: liveness probe failed %d times in a row (%s); as in "
                            "process-compose, nothing is restarted", m.spec.name, failures,
                            detail)
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
                kill_group(proc.pid, signal.SIGKILL)
        code = await proc.wait()
        # Whatever the leader did, nothing of its group outlives it; say so when something
        # tried (a child it did not wait for).
        left = group_pids(proc.pid)
        if left:
            log.warning("%s: %d process(es) of its group outlived it (%s): SIGKILL",
                        m.spec.name, len(left), ", ".join(map(str, left)))
        kill_group(proc.pid, signal.SIGKILL)
        return code

    def should_restart(self, m: Managed, code: int) -> bool:
        if m.manual_restart:
            return True
        policy = m.spec.availability
        failed = code != 0
        if policy.restart == "exit_on_failure" and failed:
            self.request_stop(f"{m.spec.name} failed (exit {code}) with exit_on_failure")
            return False
        wanted = policy.restart == "always" or (policy.restart == "on_failure" and failed)
        if wanted and policy.max_restarts and m.info.restarts >= policy.max_restarts:
            log.warning("%s: max_restarts (%d) reached", m.spec.name, policy.max_restarts)
            return False
        return wanted

    def _end_aborted(self, m: Managed) -> None:
        m.info.exit_code = 1  # as process-compose reports an aborted process
        self.set_state(m, "Completed", "readiness probe failed: aborted, won't become ready")

    def backoff_s(self, m: Managed) -> float:
        return max(float(m.spec.availability.backoff_seconds), self.backoff_floor_s)

    async def run_process(self, m: Managed) -> None:
        if m.spec.disabled:
            self.set_state(m, "Disabled")
            m.finished.set()
            return
        why = await self.wait_dependencies(m)
        if why is not None:
            m.info.exit_code = 1  # as process-compose sets it for a skipped process
            self.set_state(m, "Skipped", why)
            m.finished.set()
            return
        probes_running: list[asyncio.Task[None]] = []
        try:
            await self._run_loop(m, probes_running)
        finally:
            for task in probes_running:
                task.cancel()
            await asyncio.gather(*probes_running, return_exceptions=True)
            m.finished.set()

    async def _run_loop(self, m: Managed, probes_running: list[asyncio.Task[None]]) -> None:
        while not m.stopping:
            if m.aborted:  # the probe ran out between two runs (a restart gap)
                self._end_aborted(m)
                return
            await self.spawn(m)
            if not probes_running:  # one prober per kind for the process's whole life
                if m.spec.readiness_probe is not None:
                    probes_running.append(asyncio.create_task(self.readiness(m)))
                if m.spec.liveness_probe is not None:
                    probes_running.append(asyncio.create_task(self.liveness(m)))
            assert m.proc is not None
            by_log = (asyncio.create_task(self.ready_by_log(m))
                      if m.spec.ready_log_line is not None else None)
            code = await m.proc.wait()
            if by_log is not None:
                by_log.cancel()
                await asyncio.gather(by_log, return_exceptions=True)
            kill_group(m.proc.pid, signal.SIGKILL)  # leftovers of a process that exited
            m.info.exit_code = code
            m.info.ready = False
            m.info.health = "-"
            m.healthy.clear()
            if m.stopping:
                break
            if m.aborted:
                # process-compose: Restarting (restarts + 1), then its run is cancelled.
                m.info.restarts += 1
                self._end_aborted(m)
                return
            if not self.should_restart(m, code):
                self.set_state(m, "Completed" if code == 0 else "Error", f"exit {code}")
                return
            manual, m.manual_restart = m.manual_restart, False
            m.info.restarts += 1
            # process-compose: "Restarting NAME in 1 second(s)..." even with
            # backoff_seconds: 0 (also after `process restart`).
            delay = self.backoff_s(m)
            self.set_state(m, "Restarting", f"{'on request' if manual else f'exit {code}'}"
                           f"; in {delay:g} s")
            if delay > 0:
                m.restart_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(m.restart_now.wait(), delay)
        self.set_state(m, "Completed", f"stopped (exit {m.info.exit_code})")

    async def stop_process(self, m: Managed) -> None:
        m.stopping = True
        m.restart_now.set()
        if m.proc is not None and m.proc.returncode is None:
            self.set_state(m, "Terminating")
            await self.terminate(m)

    async def restart_process(self, name: str) -> None:
        """As `process-compose process restart NAME`: a running process is stopped and
        started again; one that has ended (Completed, Error, Skipped, aborted) is started
        again, its dependencies waited for as at `up`."""
        m = self.procs.get(name)
        if m is None or m.stopping:
            return
        log.info("%s: restart requested", name)
        if m.finished.is_set():
            m.finished.clear()
            m.aborted = False
            m.info.restarts += 1
            self.set_state(m, "Pending", "restart requested")
            self.tasks[name] = asyncio.create_task(self.run_process(m))
        elif m.proc is not None and m.proc.returncode is None:
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
        self.tasks = {name: asyncio.create_task(self.run_process(m))
                      for name, m in self.procs.items()}
        self.state.status = "running"
        self.save()
        log.info("stack %s started (supervisor pid %d)", self.stack_file, os.getpid())

        async def serve_requests() -> None:
            await self.handle_requests()
            while True:
                await requests.get()
                await self.handle_requests()

        server = asyncio.create_task(serve_requests())
        stop = asyncio.create_task(self._stop.wait())
        # Until a stop request or every process has ended (a restart request may start
        # an ended one again meanwhile).
        while not stop.done():
            pending = [t for t in self.tasks.values() if not t.done()]
            if not pending:
                break
            await asyncio.wait({*pending, stop}, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping the stack: %s", self._stop_reason or "every process ended")
        server.cancel()
        await self.stop_all()
        # Let each process's task record its end; those still waiting on dependencies
        # never started and are cancelled.
        tasks = list(self.tasks.values())
        await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for m in self.procs.values():
            if m.info.state in {"Pending", "Running", "Restarting", "Terminating"}:
                m.info.state = "Completed" if m.proc is not None else "Skipped"
        stop.cancel()
        self.state.status = "stopped"
        self.save()
        log.info("stack stopped")
        failed = any(m.info.state == "Error" for m in self.procs.values())
        return 1 if failed else 0
