# Over 400 lines: one short function per runner command, and their one argument parser.
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
from collections.abc import Callable
from pathlib import Path

from devstack import config, ps, state
from devstack.supervisor import Supervisor, group_pids, kill_group

# The checkout (scripts/devstack/src/devstack/): the default stack file and runtime dir.
ROOT = Path(__file__).resolve().parents[4]


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
        if Path(running.stack_file) != path.resolve():
            return fail(f"a stack from {running.stack_file} is already running from {rdir} "
                        f"(supervisor pid {running.supervisor_pid}): stop it first")
        print(f"devstack: already running (supervisor pid {running.supervisor_pid})")
        return 0 if args.wait is None else wait_ready(rdir, args.wait)
    busy = busy_probe_ports(project)
    if busy and not args.allow_busy_ports:
        # Otherwise the probes would report someone else's server as ours.
        return fail("already in use: " + ", ".join(busy) + ": another stack or a test "
                    "listens there; stop it (or pass --allow-busy-ports)")
    rdir.mkdir(parents=True, exist_ok=True)
    if not args.detach:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack %(message)s")
        return asyncio.run(Supervisor(project, path, rdir,
                                      backoff_floor_s=args.backoff_floor).run())
    (rdir / state.REQUESTS_DIR).mkdir(exist_ok=True)
    state.state_path(rdir).unlink(missing_ok=True)
    with open(rdir / "devstack.log", "ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "devstack", "up", "-f", str(path), "--runtime-dir", str(rdir),
             "--allow-busy-ports",  # checked above, before anything of ours started
             "--backoff-floor", str(args.backoff_floor)],
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
    """Ports the health probes will ask that something already answers on (the readiness
    probe's, else, for a process made ready by its log, the liveness probe's)."""
    busy = []
    for name, spec in project.processes.items():
        kind, probe = config.health_probe(spec)
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
                    busy.append(f"127.0.0.1:{port} ({name}'s {kind} probe)")
    return busy


def _pythonpath() -> str:
    here = str(Path(__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH", "")
    return f"{here}{os.pathsep}{rest}" if rest else here


def wait_ready(rdir: Path, timeout: float, child: subprocess.Popen[bytes] | None = None,
               names: list[str] | None = None) -> int:
    """Until every (named) process is ready as process-compose's IsReadyReason says: a
    process with a probe has had its first success; fail at once when one has ended
    for good (aborted by its readiness probe, skipped, failed)."""

    def rows() -> list[ps.Row] | None:
        current = state.read(rdir)
        return ps.from_state(current) if current is not None and current.processes else None

    def alive() -> bool:
        if child is not None:
            return child.poll() is None
        current = state.read(rdir)
        return current is not None and state.pid_alive(current.supervisor_pid)

    return await_rows(rows, timeout, names, alive, f"see {rdir / 'devstack.log'}")


def await_rows(rows: Callable[[], list[ps.Row] | None], timeout: float,
               names: list[str] | None, alive: Callable[[], bool], where: str) -> int:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        current = rows()
        if current is not None:
            chosen = [r for r in current if not names or r["name"] in names]
            failed = [r for r in chosen if ps.has_failed(r)]
            if failed:
                return fail("; ".join(
                    f"{r['name']} {r['status']} (exit {r['exit_code']})"
                    + (f": {r['message']}" if r.get("message") else "")
                    + (f" (log {r['log']})" if r.get("log") else "") for r in failed))
            waiting = [(r["name"], ps.is_ready_reason(r)[1]) for r in chosen
                       if not ps.is_ready_reason(r)[0]]
            if chosen and not waiting:
                return 0
            last = ", ".join(f"{n} ({why})" for n, why in waiting) or "no processes listed"
        if not alive():
            ended = [r for r in rows() or [] if ps.has_failed(r)]
            why = "; ".join(f"{r['name']} {r['status']}: {r.get('message', '')}" for r in ended)
            return fail(f"the stack stopped{': ' + why if why else ''}; {where}")
        time.sleep(0.2)
    return fail(f"not ready after {timeout:.0f} s: {last}")


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
        # Zombies (reaped later by init) are not leftovers: only live members count.
        if proc.pid and group_pids(proc.pid) and kill_group(proc.pid, signal.SIGKILL):
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
        rows = {r["name"]: r for r in ps.from_state(now)} if now is not None else {}
        if now is not None and all(
            now.processes[n].started_at != before[n] and rows[n]["status"] == "Running"
            and ps.is_ready_reason(rows[n])[0] for n in names
        ):
            print(f"devstack: restarted {', '.join(names)}")
            return 0
        failed = [r for n, r in rows.items() if n in names and ps.has_failed(r)
                  and now is not None and now.processes[n].started_at != before[n]]
        if failed:
            return fail("; ".join(f"{r['name']} {r['status']}: {r['message']}" for r in failed))
        time.sleep(0.2)
    return fail(f"{', '.join(names)} not back within {args.timeout:.0f} s")


# -- status / list / await (either runner) -------------------------------------------------------
def chosen_runner(args: argparse.Namespace) -> str:
    named = getattr(args, "runner", None) or os.environ.get("DEV_RUNNER")
    if named:
        return named
    return "process-compose" if shutil.which("process-compose") else "devstack"


def pc_socket(args: argparse.Namespace) -> Path:
    return runtime_dir(args) / "process-compose.sock"


def listed_rows(args: argparse.Namespace) -> tuple[list[ps.Row] | None, str]:
    """The processes as `process-compose process list -o json` lists them (None when no
    stack runs), and where the stack file is."""
    rdir = runtime_dir(args)
    if chosen_runner(args) == "process-compose":
        return ps.from_process_compose(pc_socket(args)), str(stack_file(args))
    current = state.read(rdir)
    if current is None or not state.pid_alive(current.supervisor_pid) or (
            current.status == "stopped"):
        return None, current.stack_file if current else str(stack_file(args))
    return ps.from_state(current), current.stack_file


def cmd_status(args: argparse.Namespace) -> int:
    from devstack import status

    rows, where = listed_rows(args)
    if rows is None:
        if args.json:
            print(json.dumps({"running": False, "stack_file": where, "processes": []}))
        else:
            print(f"stack {where}: not running")
        return 3
    path = Path(where)
    out = status.rows(config.load(path), path, rows, runtime_dir(args))
    if args.json:
        print(json.dumps({"running": True, "runner": chosen_runner(args),
                          "stack_file": str(path), "processes": out}, indent=2))
        return 0
    print(f"stack {path} ({chosen_runner(args)})")
    print(status.table(out))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """process-compose's `process list -o json|wide` output, for either runner."""
    rows, _ = listed_rows(args)
    if rows is None:
        return fail("no running stack", 3)
    if args.output == "json":
        print(json.dumps(rows, indent="\t"))
    else:
        head = ["PID", "NAME", "NAMESPACE", "STATUS", "AGE", "HEALTH", "RESTARTS", "EXITCODE"]
        keys = ["pid", "name", "namespace", "status", "system_time", "is_ready", "restarts",
                "exit_code"]
        cells = [[str(r.get(k, "")) for k in keys] for r in rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
                  for i, h in enumerate(head)]
        for line in (head, *cells):
            print("".join(f"{v:<{w}}   " for v, w in zip(line, widths, strict=True)))
    return 0


def cmd_await(args: argparse.Namespace) -> int:
    """Wait until the (named) processes are ready, as dev-start and dev-restart do with
    either runner."""
    if chosen_runner(args) == "devstack":
        return wait_ready(runtime_dir(args), args.timeout, names=args.names)
    socket = pc_socket(args)

    def rows() -> list[ps.Row] | None:
        return ps.from_process_compose(socket)

    return await_rows(rows, args.timeout, args.names, lambda: True,
                      "see `process-compose process logs NAME` and .dev/logs/")


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
    up.add_argument("--backoff-floor", type=float, metavar="SECONDS",
                    default=float(os.environ.get("DEVSTACK_BACKOFF_FLOOR_S", "1")),
                    help="the least wait before a restart (process-compose's: 1; "
                         "default $DEVSTACK_BACKOFF_FLOOR_S or 1)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", parents=[common], help="stop the stack gracefully")
    down.add_argument("--timeout", type=float, default=120.0)
    down.set_defaults(func=cmd_down)
    restart = sub.add_parser("restart", parents=[common], help="restart processes (all if none)")
    restart.add_argument("names", nargs="*")
    restart.add_argument("--timeout", type=float, default=120.0)
    restart.set_defaults(func=cmd_restart)
    runner = argparse.ArgumentParser(add_help=False)
    runner.add_argument("--runner", choices=["devstack", "process-compose"],
                        help="whose stack (default $DEV_RUNNER, else process-compose when "
                             "on PATH, else devstack)")
    status = sub.add_parser("status", parents=[common, runner],
                            help="per-process state and health")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    lst = sub.add_parser("list", parents=[common, runner],
                         help="process-compose's `process list` output")
    lst.add_argument("-o", "--output", choices=["json", "wide"], default="wide")
    lst.set_defaults(func=cmd_list)
    wait_for = sub.add_parser("await", parents=[common, runner],
                              help="wait until the (named) processes are ready")
    wait_for.add_argument("names", nargs="*")
    wait_for.add_argument("--timeout", type=float, default=600.0)
    wait_for.set_defaults(func=cmd_await)
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
    # `devstack status --json | head`: end quietly on a closed pipe, as Unix tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        return args.func(args)
    except config.ConfigError as err:
        return fail(str(err), 2)
