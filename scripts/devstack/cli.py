"""Command line of the runner: up, down, restart, status, wait, exec, logs, check, names.

Paths: the stack file is -f/--file, else $DEV_STACK_FILE, else process-compose.yaml
at the repository root; runtime state (state file, logs by default, supervisor
log) goes to --runtime-dir, else $RUNTIME_DIR, else .dev/ at the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devstack import config, state
from devstack.supervisor import Supervisor, kill_group

ROOT = Path(__file__).resolve().parents[2]
READY_STATES = {"Completed", "Disabled"}
FAILED_STATES = {"Error", "Skipped"}


def stack_file(args: argparse.Namespace) -> Path:
    return Path(args.file or os.environ.get("DEV_STACK_FILE") or ROOT / "process-compose.yaml")


def runtime_dir(args: argparse.Namespace) -> Path:
    return Path(args.runtime_dir or os.environ.get("RUNTIME_DIR") or ROOT / ".dev").resolve()


def fail(message: str, code: int = 1) -> int:
    print(f"devstack: {message}", file=sys.stderr)
    return code


# -- up / down ----------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    path, rdir = stack_file(args), runtime_dir(args)
    try:
        project = config.load(path)
    except config.ConfigError as err:
        return fail(str(err), 2)
    running = state.supervisor_running(rdir)
    if running is not None:
        return fail(f"a stack is already running from {rdir} (supervisor pid "
                    f"{running.supervisor_pid}): stop it first")
    busy = busy_probe_ports(project)
    if busy and not args.allow_busy_ports:
        # Otherwise the probes would report someone else's server as ours.
        return fail("already in use: " + ", ".join(busy) + ": another stack or a test "
                    "listens there; stop it (or pass --allow-busy-ports)")
    rdir.mkdir(parents=True, exist_ok=True)
    if not args.detach:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack %(message)s")
        return asyncio.run(Supervisor(project, path, rdir).run())
    (rdir / state.REQUESTS_DIR).mkdir(exist_ok=True)
    state.state_path(rdir).unlink(missing_ok=True)
    with open(rdir / "devstack.log", "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "devstack", "up", "-f", str(path), "--runtime-dir", str(rdir),
             "--allow-busy-ports"],  # checked above, before anything of ours started
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
        )
    print(f"devstack: started (supervisor pid {child.pid}; log {rdir / 'devstack.log'})")
    # Return once the supervisor has written its state, so that status/down work at once.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        current = state.read(rdir)
        if current is not None and current.supervisor_pid == child.pid:
            break
        time.sleep(0.05)
    if child.poll() is not None:
        return fail(f"the supervisor exited with {child.returncode}; see {rdir / 'devstack.log'}")
    if args.wait is None:
        return 0
    return wait_ready(rdir, args.wait, child)


_ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):(\d{1,5})\b")


def busy_probe_ports(project: config.Project) -> list[str]:
    """Ports the readiness probes will ask that something already answers on."""
    busy = []
    for name, spec in project.processes.items():
        probe = spec.readiness_probe
        if spec.disabled or probe is None:
            continue
        if probe.http_get is not None:
            ports = [probe.http_get.port_number()]
        else:
            assert probe.exec is not None
            ports = [int(p) for p in _ADDRESS.findall(probe.exec.command)]
        for port in ports:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    busy.append(f"127.0.0.1:{port} ({name}'s readiness probe)")
    return busy


def _pythonpath() -> str:
    here = str(Path(__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH", "")
    return f"{here}{os.pathsep}{rest}" if rest else here


def wait_ready(rdir: Path, timeout: float, child: subprocess.Popen[bytes] | None = None) -> int:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        current = state.read(rdir)
        if current is not None and current.processes:
            pending = [p for p in current.processes.values()
                       if p.state not in READY_STATES
                       and not (p.state == "Running" and (p.ready or not p.has_readiness))]
            failed = [p for p in current.processes.values() if p.state in FAILED_STATES]
            if failed:
                return fail("; ".join(f"{p.name} {p.state}: {p.message} (log {p.log})"
                                      for p in failed))
            if not pending:
                return 0
            last = ", ".join(f"{p.name} {p.state}" for p in pending)
        alive = child.poll() is None if child is not None else (
            current is not None and state.pid_alive(current.supervisor_pid))
        if not alive:
            return fail(f"the supervisor exited; see {rdir / 'devstack.log'}")
        time.sleep(0.2)
    return fail(f"not ready after {timeout:.0f} s: {last or 'no state yet'}")


def cmd_wait(args: argparse.Namespace) -> int:
    return wait_ready(runtime_dir(args), args.timeout)


def cmd_down(args: argparse.Namespace) -> int:
    rdir = runtime_dir(args)
    current = state.read(rdir)
    if current is None:
        print("devstack: no stack state: nothing to stop")
        return 0
    if state.pid_alive(current.supervisor_pid) and current.status != "stopped":
        os.kill(current.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while state.pid_alive(current.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if state.pid_alive(current.supervisor_pid):
            print("devstack: supervisor did not stop in time: killing", file=sys.stderr)
            os.kill(current.supervisor_pid, signal.SIGKILL)
    # Belt and braces: whatever the supervisor could not stop (it was killed, say).
    for proc in (state.read(rdir) or current).processes.values():
        if kill_group(proc.pid, signal.SIGKILL):
            print(f"devstack: killed leftover process group {proc.pid} ({proc.name})")
    print("devstack: stopped")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    rdir = runtime_dir(args)
    current = state.supervisor_running(rdir)
    if current is None:
        return fail("no running stack")
    unknown = [n for n in args.names if n not in current.processes]
    if unknown:
        return fail(f"no process {', '.join(unknown)} (have: {', '.join(current.processes)})")
    names = args.names or list(current.processes)
    before = {n: current.processes[n].started_at for n in names}
    folder = rdir / state.REQUESTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"restart-{name}").touch()
    os.kill(current.supervisor_pid, signal.SIGUSR1)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now = state.read(rdir)
        if now is not None and all(
            now.processes[n].started_at != before[n] and now.processes[n].state == "Running"
            and (now.processes[n].ready or not now.processes[n].has_readiness) for n in names
        ):
            print(f"devstack: restarted {', '.join(names)}")
            return 0
        time.sleep(0.2)
    return fail(f"{', '.join(names)} not back within {args.timeout:.0f} s")


# -- status -------------------------------------------------------------------------------------
def _ports(env: list[str]) -> str:
    return " ".join(item.split("=", 1)[1] for item in env
                    if item.split("=", 1)[0].endswith("_PORT"))


def _uptime(since: float | None) -> str:
    if not since:
        return "-"
    seconds = int(time.time() - since)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s")


async def _health(project: config.Project, path: Path, names: list[str]) -> dict[str, str]:
    from devstack import probes

    async def one(name: str) -> str:
        spec = project.processes[name]
        if spec.readiness_probe is None:
            return "-"
        ok, detail = await probes.check(spec.readiness_probe, config.working_dir(spec, path),
                                        config.process_env(project, spec, os.environ))
        return detail if ok or detail else "failing"

    results = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, results, strict=True))


def cmd_status(args: argparse.Namespace) -> int:
    rdir = runtime_dir(args)
    current = state.read(rdir)
    if current is None:
        return fail(f"no stack state under {rdir}: is the stack started?", 3)
    path = Path(current.stack_file)
    project = config.load(path)
    alive = state.pid_alive(current.supervisor_pid) and current.status != "stopped"
    running = [n for n, p in current.processes.items() if p.state == "Running"] if alive else []
    health = asyncio.run(_health(project, path, running)) if running else {}
    rows = []
    for name, proc in current.processes.items():
        spec = project.processes.get(name)
        rows.append({
            "name": name, "state": proc.state if alive else "Stopped",
            "pid": proc.pid if alive and proc.state == "Running" else None,
            "ready": proc.ready, "health": health.get(name, "-"),
            "ports": _ports(spec.environment) if spec else "",
            "uptime": _uptime(proc.started_at) if name in running else "-",
            "restarts": proc.restarts, "exit_code": proc.exit_code, "message": proc.message,
        })
    if args.json:
        print(json.dumps({"supervisor_pid": current.supervisor_pid, "running": alive,
                          "stack_file": str(path), "processes": rows}, indent=2))
        return 0 if alive else 3
    supervisor = f"pid {current.supervisor_pid}" if alive else "not running"
    print(f"stack {path} — supervisor {supervisor}")
    print(f"{'NAME':<10} {'STATE':<12} {'PID':>7}  {'HEALTH':<38} {'PORTS':<18} "
          f"{'UPTIME':>7} {'RESTARTS':>8}")
    for r in rows:
        print(f"{r['name']:<10} {r['state']:<12} {r['pid'] or '-':>7}  {r['health'][:38]:<38} "
              f"{r['ports'][:18]:<18} {r['uptime']:>7} {r['restarts']:>8}")
    return 0 if alive else 3


# -- exec / logs / check -------------------------------------------------------------------------
def cmd_exec(args: argparse.Namespace) -> int:
    path = stack_file(args)
    try:
        project = config.load(path)
    except config.ConfigError as err:
        return fail(str(err), 2)
    spec = project.processes.get(args.name)
    if spec is None:
        return fail(f"no process {args.name!r} in {path} (have: {', '.join(project.processes)})")
    env = config.process_env(project, spec, os.environ)
    command = args.command or [env.get("SHELL", "bash")]
    os.chdir(config.working_dir(spec, path))
    try:
        os.execvpe(command[0], command, env)
    except OSError as err:
        return fail(f"cannot run {command[0]}: {err.strerror}", 127)


def cmd_names(args: argparse.Namespace) -> int:
    project = config.load(stack_file(args))
    print("\n".join(project.processes))
    return 0


def cmd_logpaths(args: argparse.Namespace) -> int:
    path, rdir = stack_file(args), runtime_dir(args)
    project = config.load(path)
    for name, spec in project.processes.items():
        if not args.names or name in args.names:
            print(f"{name}\t{config.log_path(spec, path, rdir)}")
    return 0


def cmd_sip_uri(args: argparse.Namespace) -> int:
    """Where to call: OpenSIPS's port where it runs, else the core's own SIP address."""
    project = config.load(stack_file(args))
    core = project.processes.get("core")
    if core is None:
        return 0
    env = config.process_env(project, core, {})
    if shutil.which("opensips"):
        print(f"sip:ai@127.0.0.1:{os.environ.get('OPENSIPS_SIP_PORT', '5060')}")
    else:
        print(f"sip:ai@{env.get('CORE_SIP_HOST', '127.0.0.1')}:{env.get('CORE_SIP_PORT', '5080')}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    path = stack_file(args)
    try:
        project = config.load(path)
    except config.ConfigError as err:
        return fail(str(err), 2)
    print(f"{path}: OK, start order {' -> '.join(config.start_order(project))}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from devstack.logs import follow

    path, rdir = stack_file(args), runtime_dir(args)
    project = config.load(path)
    names = args.names or list(project.processes)
    unknown = [n for n in names if n not in project.processes]
    if unknown:
        return fail(f"no process {', '.join(unknown)} (have: {', '.join(project.processes)})")
    files = {n: config.log_path(project.processes[n], path, rdir) for n in names}
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    with contextlib.suppress(KeyboardInterrupt):
        follow(files, lines=args.lines, keep_following=args.follow, color=color,
               prefix=len(names) > 1 or args.prefix)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="devstack", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-f", "--file", help="stack file (default $DEV_STACK_FILE or "
                        "process-compose.yaml)")
    common.add_argument("--runtime-dir", help="state and logs (default $RUNTIME_DIR or .dev)")
    sub = top.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", parents=[common], help="run the stack (foreground or --detach)")
    up.add_argument("-d", "--detach", action="store_true", help="run in the background")
    up.add_argument("--wait", type=float, metavar="SECONDS",
                    help="with --detach: wait until every process is ready")
    up.add_argument("--allow-busy-ports", action="store_true",
                    help="start even if a readiness probe's port already answers")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", parents=[common], help="stop the stack gracefully")
    down.add_argument("--timeout", type=float, default=120.0)
    down.set_defaults(func=cmd_down)
    restart = sub.add_parser("restart", parents=[common], help="restart processes (all if none)")
    restart.add_argument("names", nargs="*")
    restart.add_argument("--timeout", type=float, default=120.0)
    restart.set_defaults(func=cmd_restart)
    status = sub.add_parser("status", parents=[common], help="per-process state and health")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    wait = sub.add_parser("wait", parents=[common], help="wait until every process is ready")
    wait.add_argument("--timeout", type=float, default=300.0)
    wait.set_defaults(func=cmd_wait)
    exe = sub.add_parser("exec", parents=[common],
                         help="run a command (default a shell) in a process's environment")
    exe.add_argument("name")
    exe.add_argument("command", nargs=argparse.REMAINDER)
    exe.set_defaults(func=cmd_exec)
    logs = sub.add_parser("logs", parents=[common], help="print (and follow) logs")
    logs.add_argument("names", nargs="*")
    logs.add_argument("-F", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=20)
    logs.add_argument("--prefix", action="store_true", help="prefix lines even for one process")
    logs.set_defaults(func=cmd_logs)
    for name, func, text in (("check", cmd_check, "validate the stack file"),
                             ("names", cmd_names, "print the process names"),
                             ("sip-uri", cmd_sip_uri, "print the SIP URI to call")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.set_defaults(func=func)
    lp = sub.add_parser("logpaths", parents=[common], help="print NAME<TAB>LOGFILE")
    lp.add_argument("names", nargs="*")
    lp.set_defaults(func=cmd_logpaths)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        return args.func(args)
    except config.ConfigError as err:
        return fail(str(err), 2)
