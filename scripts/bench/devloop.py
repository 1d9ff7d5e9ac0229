#!/usr/bin/env python3
# Over 400 lines: one self-contained benchmark script (start, time the saves, read logs).
"""The development loop under the warm parent: save -> SERVING per service, cold start to
ready, and what the warm parent costs in memory; and where the time of a save goes, read
from log timestamps (helpers shared with devstack_real.py).

    .venv/bin/python scripts/bench/devloop.py [--saves 3] [--pause 3] [--no-write]
        [--services core,asr,tts,llm] [--no-cold] [--cold-only [--runs N]]

Starts core, ASR, TTS and the LLM (default engines) as process-compose.yaml starts them
(`voice_common.launch`, its environment, DEVELOPMENT_MODE=1, hot reload on) but on free
127.0.0.1 ports, all at once, and times spawn -> every /health 200 (cold start; set-up
and the demo model already done). Then, per service, it rewrites its package's
__init__.py unchanged (a save) `--pause` s after the service served (and after its
spare, if it has one, has loaded: voice_common.warm_spare), and times save -> SERVING
from the logs and by polling /health every 20 ms. Last, the memory of the warm parent,
the child and the spare (RSS, PSS and private, from /proc/PID/smaps_rollup), a second
cold start now that the warm parents' import lists are cached, and a third in
process-compose.yaml's order: each process spawned when its `depends_on` conditions
hold, ready at the first line of its log containing its `ready_log_line` (ASR, LLM,
TTS) or at its readiness probe's first success (initial delay, then every period: the
core), with the CPU seconds each had used by then. A subset of `--services`, `--no-cold` or
`--cold-only` are for profiling and write nothing.

One save under the warm parent (voice_common.warm_parent), each step ending at a
logged line:

    batching wait  save -> the child's "Hot-reload:" line (HOT_RELOAD_QUIET_MS after
                   the last change of a burst)
    drain          -> the parent's "Hot-reload: child N ended": the old child exited
    fork + import  -> the new child's "listening on" (fresh project modules, bind)
    warm-up        -> "SERVING" (model load, unless the parent or the spare did it)

Service lines are the development log format (`2026-11-26 09:38:39,565 | INFO | ...`),
local time with milliseconds. scripts/bench/devstack_real.py times the same saves on the
real stack under the devstack runner (scripts/dev-start.sh) with these helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
# A stamp has whole milliseconds: a line logged in the same millisecond as `after`
# may carry a stamp up to 1 ms before it.
STAMP_SLACK_S = 0.001
WARM_STEPS = ("batching wait", "drain", "fork + import", "warm-up", "to SERVING", "polled")


def stamp_of(line: str) -> float | None:
    """Epoch seconds of a log line's timestamp (local time), None without one."""
    match = STAMP.search(line)
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def log_size(path: Path) -> int:
    """Where a log ends now: later lines are read from here on."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def first_after(path: Path, needles: str | Sequence[str], after: float, *,
                offset: int = 0, timeout: float = 60) -> float:
    """The timestamp of the first line (from byte `offset` on) that contains one of
    `needles` and was logged at or after `after`; waits for it up to `timeout` s."""
    wanted = (needles,) if isinstance(needles, str) else tuple(needles)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            if any(needle in line for needle in wanted):
                at = stamp_of(line)
                if at is not None and at >= after - STAMP_SLACK_S:
                    return at
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {' or '.join(map(repr, wanted))} in {path} after {after}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Needles:
    """What the service logs when it listens and when it serves."""

    listening: Sequence[str] = ("listening on",)
    serving: Sequence[str] = ("SERVING (warm-up",)
    hot_reload: Sequence[str] = ("Hot-reload:",)


def split_warm_reload(saved: float, *, service_log: Path, offset: int,
                      needles: Needles = Needles(), timeout: float = 120) -> dict[str, float]:
    """Seconds per step of one save (`saved`: epoch seconds) under the warm parent."""

    def at(what: str | Sequence[str], after: float) -> float:
        return first_after(service_log, what, after, offset=offset, timeout=timeout)

    hot = at(needles.hot_reload, saved)
    ended = at("Hot-reload: child", hot)
    listening = at(needles.listening, ended)
    serving = at(needles.serving, listening)
    return {"batching wait": hot - saved, "drain": ended - hot,
            "fork + import": listening - ended, "warm-up": serving - listening,
            "to SERVING": serving - saved}


# -- the benchmark ---------------------------------------------------------------------------
@dataclass
class Service:
    name: str
    module: str
    prefix: str
    health_var: str  # the variable that holds its HTTP health port
    needles: Needles = field(default_factory=Needles)
    port_vars: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    log: Path = Path()

    @property
    def source(self) -> Path:
        top = {"core": "core/src/opensips_ai_core", "asr": "services/asr-service/src/asr_service",
               "tts": "services/tts-service/src/tts_service",
               "llm": "services/llm-service/src/llm_service"}[self.name]
        return ROOT / top / "__init__.py"

    def healthy(self, path: str = "/health") -> bool | None:
        """True on 200, False on another answer or a refused connection, None when the
        probe timed out (a busy machine, not an answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}",
                                        timeout=1) as response:
                return response.status == 200
        except TimeoutError:
            return None
        except urllib.error.URLError as err:
            return None if isinstance(err.reason, TimeoutError) else False
        except OSError:
            return False


def services() -> list[Service]:
    core_needles = Needles(listening=("opensips-ai-core ready",),
                           serving=("opensips-ai-core ready",))
    return [
        Service("core", "opensips_ai_core", "CORE", "CORE_HTTP_PORT", core_needles,
                ("CORE_SIP_PORT", "CORE_EVENT_PORT")),
        Service("asr", "asr_service", "ASR", "ASR_HEALTH_HTTP_PORT", port_vars=("ASR_PORT",)),
        Service("tts", "tts_service", "TTS", "TTS_HEALTH_HTTP_PORT", port_vars=("TTS_PORT",)),
        Service("llm", "llm_service", "LLM", "LLM_HEALTH_HTTP_PORT", port_vars=("LLM_PORT",)),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose_env(name: str) -> dict[str, str]:
    """process-compose.yaml's environment for process `name` (global, then its own)."""
    import yaml

    spec = yaml.safe_load((ROOT / "process-compose.yaml").read_text())
    env = {}
    for item in [*spec.get("environment", []), *spec["processes"][name].get("environment", [])]:
        key, _, value = item.partition("=")
        env[key] = value
    return env


@dataclass(frozen=True)
class ComposeStart:
    """How process-compose starts a process: after its dependencies' conditions hold;
    ready at the first line of its output containing `ready_line` when it has one,
    else at its readiness probe's first success (from `initial_delay` s on, every
    `period` s)."""

    depends_on: dict[str, str]  # process -> condition (process_started, process_healthy)
    initial_delay: float
    period: float
    path: str
    ready_line: str | None = None


def compose_starts(svcs: list[Service]) -> dict[str, ComposeStart]:
    """process-compose.yaml's start order and readiness for `svcs` (dependencies on
    processes the benchmark does not run, OpenSIPS, are left out)."""
    import yaml

    spec = yaml.safe_load((ROOT / "process-compose.yaml").read_text())["processes"]
    names = {svc.name for svc in svcs}
    starts = {}
    for svc in svcs:
        process = spec[svc.name]
        depends = {dep: item["condition"] for dep, item in
                   (process.get("depends_on") or {}).items() if dep in names}
        if process.get("ready_log_line"):
            starts[svc.name] = ComposeStart(depends, 0.0, 0.0, "",
                                            ready_line=process["ready_log_line"])
            continue
        probe = process["readiness_probe"]
        starts[svc.name] = ComposeStart(
            depends, float(probe.get("initial_delay_seconds", 0)),
            float(probe.get("period_seconds", 10)), probe["http_get"]["path"])
    return starts


def start_all(svcs: list[Service], logdir: Path, *, compose: bool = False) -> dict[str, float]:
    """Start the services, all at once or (`compose`) in process-compose.yaml's order with
    its probe times; seconds from the first spawn to each one's readiness (compose) or {}."""
    ports = {s.name: {var: free_port() for var in (s.health_var, *s.port_vars)} for s in svcs}
    commands = {}
    for svc in svcs:
        env = {**os.environ, **compose_env(svc.name), **{k: str(v) for k, v in
                                                          ports[svc.name].items()}}
        env.update(VOICE_REPO_ROOT=str(ROOT), CORE_SIGNALLING="sip", CORE_RTP_PORT_MIN="36000",
                   CORE_RTP_PORT_MAX="36099", CORE_BOT_CONFIG=str(ROOT / "core" / "bot.toml"))
        for other in ("ASR", "LLM", "TTS"):
            if other.lower() not in ports:
                continue
            env[f"CORE_{other}_TARGET"] = f"127.0.0.1:{ports[other.lower()][f'{other}_PORT']}"
        svc.health_port = ports[svc.name][svc.health_var]
        svc.log = logdir / f"{svc.name}.log"
        commands[svc.name] = env
    if not compose:
        for svc in svcs:
            spawn(svc, commands[svc.name])
        return {}
    return compose_start(svcs, commands)


def spawn(svc: Service, env: dict[str, str]) -> None:
    # Its own process group in this session, as process-compose starts a process
    # (Setpgid): with the kernel's autogroups, a session of its own would put it in a
    # scheduling group of its own, where its nice value would not count against the
    # others'.
    args = [sys.executable, "-m", "voice_common.launch", "--prefix", svc.prefix, svc.module]
    with open(svc.log, "wb") as out:
        svc.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, process_group=0)


def cpu_seconds(pid: int) -> float:
    """CPU seconds used by `pid`, its live children and its reaped ones (/proc)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def used(one: int, *, reaped: bool) -> float:
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])  # utime, stime
        return (own + (int(fields[13]) + int(fields[14]) if reaped else 0)) / ticks

    total = used(pid, reaped=True)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError, IndexError):
            total += used(int(child), reaped=False)
    return total


CPU_AT_READY: dict[str, float] = {}  # service -> CPU seconds it used until ready


def compose_start(svcs: list[Service], envs: dict[str, dict[str, str]],
                  timeout: float = 600) -> dict[str, float]:
    """Spawn each service when its dependencies' conditions hold, find it ready as
    process-compose would (its log line, or its probe's first success); seconds from the
    start to each one's readiness."""
    starts = compose_starts(svcs)
    began = time.monotonic()
    spawned: dict[str, float] = {}
    ready: dict[str, float] = {}
    next_probe: dict[str, float] = {}
    while len(ready) < len(svcs):
        now = time.monotonic() - began
        if now > timeout:
            raise TimeoutError(f"not ready: {sorted(set(starts) - set(ready))}")
        for svc in svcs:
            start = starts[svc.name]
            if svc.name not in spawned and all(
                    (dep in ready) if condition == "process_healthy" else (dep in spawned)
                    for dep, condition in start.depends_on.items()):
                spawn(svc, envs[svc.name])
                spawned[svc.name] = now
                next_probe[svc.name] = now + start.initial_delay
            elif svc.name in spawned and svc.name not in ready:
                assert svc.proc is not None
                if svc.proc.poll() is not None:
                    raise RuntimeError(f"{svc.name} exited with {svc.proc.returncode}; "
                                       f"see {svc.log}")
                if start.ready_line is not None:
                    # process-compose reads the output pipe; the log file holds the same.
                    if logged(svc.log, (start.ready_line,), 0):
                        ready[svc.name] = time.monotonic() - began
                        with contextlib.suppress(OSError):
                            CPU_AT_READY[svc.name] = cpu_seconds(svc.proc.pid)
                elif now >= next_probe[svc.name]:
                    if svc.healthy(start.path):
                        ready[svc.name] = time.monotonic() - began
                        with contextlib.suppress(OSError):
                            CPU_AT_READY[svc.name] = cpu_seconds(svc.proc.pid)
                    else:
                        next_probe[svc.name] += start.period
        time.sleep(0.01)
    return ready


def stop_all(svcs: list[Service]) -> None:
    for svc in svcs:
        if svc.proc is not None and svc.proc.poll() is None:
            os.killpg(svc.proc.pid, signal.SIGTERM)
    for svc in svcs:
        if svc.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.proc.wait(30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait(5)


def wait_all_ready(svcs: list[Service], timeout: float = 600,
                   ready_at: dict[str, float] | None = None) -> float:
    """Seconds until every service's /health answered 200; each one's time in
    `ready_at` and the CPU seconds it had used by then in CPU_AT_READY."""
    began = time.monotonic()
    pending = list(svcs)
    while pending:
        for svc in list(pending):
            if svc.proc is not None and svc.proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited with {svc.proc.returncode}; see {svc.log}")
            if svc.healthy():
                pending.remove(svc)
                if ready_at is not None:
                    ready_at[svc.name] = time.monotonic() - began
                if svc.proc is not None:
                    with contextlib.suppress(OSError):
                        CPU_AT_READY[svc.name] = cpu_seconds(svc.proc.pid)
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"not ready: {[s.name for s in pending]}")
        time.sleep(0.02)
    return time.monotonic() - began


@contextlib.contextmanager
def stack(svcs: list[Service], logdir: Path, *, compose: bool = False,
          ready_at: dict[str, float] | None = None) -> Iterator[float]:
    """Start every service (`compose`: in process-compose.yaml's order, ready when its
    probe says so; each one's time in `ready_at`); yield seconds from the first spawn
    to all ready; stop them all."""
    started = time.monotonic()
    CPU_AT_READY.clear()
    try:
        times = start_all(svcs, logdir, compose=compose)
        if not compose:
            wait_all_ready(svcs, ready_at=times)
        if ready_at is not None:
            ready_at.update(times)
        yield time.monotonic() - started
    finally:
        stop_all(svcs)


def spare_staged(svc: Service, offset: int, timeout: float = 60) -> float | None:
    """Seconds from the service's last SERVING (logged from byte `offset` on) until its
    spare had staged, waiting for that; None for a service without a spare."""
    text = svc.log.read_bytes()[offset:].decode(errors="replace")
    forked = [line for line in text.splitlines()
              if "Hot-reload: spare" in line and "forked" in line]
    if not forked:
        return None
    forked_at = stamp_of(forked[-1])
    assert forked_at is not None
    serving = [stamp_of(line) for line in text.splitlines() if any(
        needle in line for needle in svc.needles.serving)]
    since = max((at for at in serving if at is not None and at <= forked_at), default=forked_at)
    staged = first_after(svc.log, "staged", forked_at, offset=offset, timeout=timeout)
    return staged - since


def logged(path: Path, needles: Sequence[str], offset: int) -> bool:
    """Whether a line from byte `offset` on contains one of `needles`."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    return any(needle in text for needle in needles)


def one_save(svc: Service) -> dict[str, float]:
    offset = log_size(svc.log)
    data = svc.source.read_bytes()
    saved_at, saved = time.time(), time.monotonic()
    svc.source.write_bytes(data)
    went_down, polled = False, float("nan")
    deadline = saved + 120
    while time.monotonic() < deadline:
        up = svc.healthy()
        if up is False:
            went_down = True
        elif up and went_down:
            polled = time.monotonic() - saved
            break
        elif up and logged(svc.log, svc.needles.serving, offset):
            break  # the new child serves and no poll fell in the gap: "polled" stays nan
        time.sleep(0.02)
    steps = split_warm_reload(saved_at, service_log=svc.log, offset=offset, needles=svc.needles)
    return {**steps, "polled": polled}


def memory(pid: int) -> dict[str, float]:
    """MB of RSS, PSS and private memory of `pid` (smaps_rollup)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) / 1024
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss": fields["Rss"], "pss": fields["Pss"], "private": private}


def children_of(pid: int) -> tuple[int | None, int | None]:
    """(the serving child, the spare) of a warm parent: the spare names itself
    `warm-spare` (voice_common.warm_spare)."""
    child = spare = None
    for text in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{text}/comm").read_text().strip() == "warm-spare":
                spare = int(text)
            else:
                child = int(text)
    return child, spare


def memory_rows(svcs: list[Service]) -> list[str]:
    rows = ["| service | parent RSS | parent PSS | parent private | child RSS | child PSS "
            "| spare RSS | spare PSS | spare private | parent + spare private "
            "| parent + spare PSS |",
            "|---|" + "---:|" * 10]
    none = {"rss": 0.0, "pss": 0.0, "private": 0.0}
    for svc in svcs:
        assert svc.proc is not None
        parent = memory(svc.proc.pid)
        child_pid, spare_pid = children_of(svc.proc.pid)
        child = memory(child_pid) if child_pid else none
        spare = memory(spare_pid) if spare_pid else none
        spare_cells = (f"{spare['rss']:.0f} | {spare['pss']:.0f} | {spare['private']:.0f}"
                       if spare_pid else "- | - | -")
        rows.append(f"| {svc.name} | {parent['rss']:.0f} | {parent['pss']:.0f} | "
                    f"{parent['private']:.0f} | {child['rss']:.0f} | {child['pss']:.0f} | "
                    f"{spare_cells} | {parent['private'] + spare['private']:.0f} | "
                    f"{parent['pss'] + spare['pss']:.0f} |")
    return rows


def median_ms(values: Sequence[float]) -> str:
    """The median in ms of the values measured (nan: a poll that never saw the gap)."""
    measured = [value for value in values if not math.isnan(value)]
    return f"{statistics.median(measured) * 1000:.0f}" if measured else "-"


def table(results: dict[str, list[dict[str, float]]]) -> list[str]:
    head = ("| service | " + " | ".join(WARM_STEPS) + " | max to SERVING "
            "| spare staged after (s) |")
    rule = "|---|" + "---:|" * (len(WARM_STEPS) + 2)
    rows = []
    for name, runs in results.items():
        cells = [median_ms([r[c] for r in runs]) for c in WARM_STEPS]
        worst = max(r["to SERVING"] for r in runs) * 1000
        staged = [r["spare staged"] for r in runs if "spare staged" in r]
        spare = f"{statistics.median(staged):.1f}" if staged else "-"
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {worst:.0f} | {spare} |")
    return [head, rule, *rows]


def ready_text(ready: dict[str, float]) -> str:
    return ", ".join(f"{name} ready at {at:.1f} s ({CPU_AT_READY.get(name, 0):.1f} CPU-s)"
                     for name, at in sorted(ready.items(), key=lambda item: item[1]))


def cold_only(wanted: list[str], runs: int = 1) -> int:
    logdir = ROOT / ".dev" / "bench-devloop"
    logdir.mkdir(parents=True, exist_ok=True)
    svcs = [svc for svc in services() if svc.name in wanted]
    for _ in range(runs):
        print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        together_at: dict[str, float] = {}
        with stack(svcs, logdir, ready_at=together_at) as together:
            print(f"cold start, all at once: {together:.1f} s ({ready_text(together_at)})",
                  flush=True)
        ready: dict[str, float] = {}
        with stack(svcs, logdir, compose=True, ready_at=ready) as composed:
            print(f"cold start in process-compose's order: {composed:.1f} s "
                  f"({ready_text(ready)})", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--pause", type=float, default=3.0,
                        help="seconds between SERVING and the next save (a spare loads "
                             "in this time; a save sooner waits for the rest of its load)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--services", default="core,asr,tts,llm",
                        help="comma-separated: which services to start and save (a subset "
                             "is for profiling; --no-write is implied)")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the second cold start and the torch import timing")
    parser.add_argument("--cold-only", action="store_true",
                        help="only the cold starts: all at once, and in process-compose.yaml's "
                             "order with its probes (no saves; --no-write is implied)")
    parser.add_argument("--runs", type=int, default=1,
                        help="with --cold-only: how many times to repeat the two cold starts")
    args = parser.parse_args()
    if args.cold_only:
        return cold_only(args.services.split(","), args.runs)
    wanted = args.services.split(",")
    if set(wanted) != {"core", "asr", "tts", "llm"} or args.no_cold:
        args.no_write = True
    subprocess.run([sys.executable, "-m", "llm_service.demo_model", "build"], check=True,
                   capture_output=True, timeout=600)
    logdir = ROOT / ".dev" / "bench-devloop"
    logdir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    svcs = [svc for svc in services() if svc.name in wanted]
    results: dict[str, list[dict[str, float]]] = {}
    last_save: dict[str, int] = {}  # where each service's log was at its last save
    with stack(svcs, logdir) as cold_first:
        print(f"cold start {cold_first:.1f} s", flush=True)
        time.sleep(2)
        for svc in svcs:
            runs = []
            offset = 0
            for _ in range(args.saves):
                time.sleep(args.pause)
                staged = spare_staged(svc, offset)
                offset = log_size(svc.log)
                runs.append(one_save(svc))
                if staged is not None:
                    runs[-1]["spare staged"] = staged
                print(svc.name, " ".join(f"{k}={v * 1000:.0f}" for k, v in runs[-1].items()),
                      flush=True)
            results[svc.name] = runs
            last_save[svc.name] = offset
        time.sleep(2)
        for svc in svcs:  # the spares as they wait for a save: loaded
            spare_staged(svc, last_save[svc.name])
        mem = memory_rows(svcs)
        print("\n".join(mem), flush=True)
    if args.no_cold:
        return 0
    with stack(svcs, logdir) as cold_cached:
        print(f"cold start (warm lists cached) {cold_cached:.1f} s", flush=True)
    compose_ready: dict[str, float] = {}
    with stack(svcs, logdir, compose=True, ready_at=compose_ready) as cold_compose:
        print(f"cold start in process-compose's order {cold_compose:.1f} s: "
              f"{ready_text(compose_ready)}", flush=True)
    load = max(load, os.getloadavg()[0])
    began = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch, transformers"], check=True,
                   timeout=300)
    torch_import = time.monotonic() - began
    body = "\n".join([
        f"Load average up to {load:.1f} on {os.cpu_count()} cores during the run"
        f"{' (other work was running: an idle machine will do better)' if load > 1.0 else ''}"
        ". Hot reload under the warm parent (voice_common.warm_parent): the supervised "
        "process keeps its PID, a save forks a fresh child. The services run with their "
        "default engines (Whisper ASR, SmolLM2 when installed, Piper).",
        "",
        f"Cold start (all four processes at once, spawn to every /health 200, set-up and "
        f"demo model done): **{cold_first:.1f} s**; again with the warm parents' import "
        f"lists cached: **{cold_cached:.1f} s**; in process-compose.yaml's order, each process "
        f"started when its `depends_on` holds and ready at its readiness probe's first "
        f"success (initial delay, period): **{cold_compose:.1f} s** (target <= 5 s; "
        f"{ready_text(compose_ready)}; CPU-s: what the process and its children had used "
        "by then).",
        "",
        f"Save to SERVING ({args.saves} saves of the package's __init__.py, unchanged, each "
        f"{args.pause:g} s after the service served; target <= 1000 ms), medians in ms. "
        "batching wait: save to the child's "
        "`Hot-reload:` line; drain: to the parent's `child N ended`; fork + import: to "
        "`listening on` (the core: its ready line); warm-up: to SERVING; polled: the same "
        "seen by a client polling /health every 20 ms; spare staged after: from SERVING "
        "until the spare had loaded (where it had not by the save, the benchmark waited):",
        "",
        *table(results),
        "",
        "Memory after the saves, once the spares had loaded, MB (smaps_rollup; the parent "
        "shares its pages with its child and the spare copy-on-write, so PSS splits what "
        "they map between them "
        "(the LLM's weights three ways); private is what a process alone holds. The spare "
        "(ASR, TTS, LLM) is the child forked once the service serves, which loads what "
        "the parent may not hold and becomes the next save's child. What the warm "
        "machinery adds to the serving child lies between parent + spare private (what "
        "only they hold) and parent + spare PSS (which also counts their share of the "
        "pages the child maps too); target <= 300 MB per service):",
        "",
        *mem,
        "",
        f"Context: `import torch, transformers` in a fresh interpreter took "
        f"{torch_import:.1f} s right after this run (1.9-2.0 s on an idle machine on "
        "2026-11-26). TTS: onnxruntime starts a thread at import, so the warm parent "
        "can neither import it nor hold the Piper voice: the spare loads the voice (from "
        "the cached optimised graph, tts_service.onnx_cache) and runs its warm-up "
        "synthesis; the warm-up left is the espeak-ng voices' probe. ASR: CTranslate2 and "
        "onnxruntime start threads as the "
        "Whisper engine loads (model, Silero VAD, smart-turn, a decode of silence), so the "
        "spare loads it (voice_common.warm_spare). LLM: the parent holds SmolLM2's weights; "
        "the spare runs the warm-up generation; at a cold start it runs behind SERVING. "
        "The spare loads once a core is idle (at most 10 s after SERVING): a save sooner "
        "waits for the rest of its load. The section above (`devstack_real`) times the same "
        "saves on the real stack under the devstack runner (scripts/dev-start.sh).",
    ])
    print(body)
    if not args.no_write:
        from report import write_section

        print(f"written to {write_section('devloop', 'Dev loop: the warm parent', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
