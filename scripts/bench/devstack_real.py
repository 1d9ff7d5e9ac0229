#!/usr/bin/env python3
"""The real dev stack: cold start, save-to-SERVING per service split into its steps, and
what the readiness probes cost.

Runs scripts/dev-start.sh with the devstack runner (set-up and the demo model already
done; DEV_RUNNER=devstack, whose own log gives the restart times) and times it until
every process is ready. Then, for each service, rewrites one of its source files
unchanged (a save) and times until its health is SERVING again, polling every 50 ms
(gRPC health for asr/llm/tts, HTTP /health for the core), and splits that time from
the service's log (.dev/logs/NAME.log) and the runner's (.dev/devstack.log) into
batching wait, drain, restart gap, process start, warm-up and probe lag
(scripts/bench/devloop.py). Last, with the stack idle, it measures the CPU the
supervisor's children (the exec probes) use per second, and one probe's CPU.
Needs the stack's ports free; stops the stack at the end.

    .venv/bin/python scripts/bench/devstack_real.py [--saves 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devloop import STEPS, LogMarks, Needles, split_save
from report import write_section

from devstack import state
from voice_common.healthcheck import check

ROOT = Path(__file__).resolve().parents[2]

RUNTIME_DIR = ROOT / ".dev"
RUNNER_LOG = RUNTIME_DIR / "devstack.log"
PYRUN = ROOT / "scripts" / "devstack" / "pyrun"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_WINDOW_S = 10.0


@dataclass(frozen=True)
class Service:
    source: str  # rewritten unchanged: a save
    target: str  # gRPC HOST:PORT or the core's HTTP health URL
    needles: Needles = field(default_factory=Needles)


SERVICES = {
    # The core logs no "listening" line of its own in OpenSIPS mode: its ready line then.
    "core": Service("core/src/opensips_ai_core/__init__.py", "http://127.0.0.1:8088/health",
                    Needles(listening=("listening on", "opensips-ai-core ready"),
                            serving=("opensips-ai-core ready",))),
    "asr": Service("services/asr-service/src/asr_service/__init__.py", "127.0.0.1:50051"),
    "tts": Service("services/tts-service/src/tts_service/__init__.py", "127.0.0.1:50053"),
    "llm": Service("services/llm-service/src/llm_service/__init__.py", "127.0.0.1:50052"),
}
COLUMNS = (*STEPS[:5], "to SERVING", "polled", "probe lag")


def serving(target: str) -> bool:
    if target.startswith("http"):
        try:
            with urllib.request.urlopen(target, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False
    return check(target, "", timeout=1)[0] == 0


def save_to_serving(path: Path, target: str, timeout: float = 120) -> tuple[float, float]:
    """Rewrite `path` unchanged; return (epoch seconds of the save, seconds until `target`
    is SERVING again as seen by polling)."""
    data = path.read_bytes()
    saved_at = time.time()
    saved = time.monotonic()
    path.write_bytes(data)
    deadline = saved + timeout
    went_down = False
    while time.monotonic() < deadline:
        up = serving(target)
        if not up:
            went_down = True
        elif went_down:
            return saved_at, time.monotonic() - saved
        time.sleep(0.05)
    raise TimeoutError(f"{target} did not restart within {timeout} s")


def wait_runner_ready(name: str, restarts: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = state.read(RUNTIME_DIR)
        if info is not None:
            proc = info.processes[name]
            if proc.restarts >= restarts and proc.ready:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{name} not ready again after {timeout} s")


def one_save(name: str, service: Service) -> dict[str, float]:
    log = RUNTIME_DIR / "logs" / f"{name}.log"
    info = state.read(RUNTIME_DIR)
    assert info is not None
    restarts = info.processes[name].restarts
    marks = LogMarks.now(log, RUNNER_LOG)
    saved_at, polled = save_to_serving(ROOT / service.source, service.target)
    wait_runner_ready(name, restarts + 1)
    steps = split_save(name, saved_at, service_log=log, runner_log=RUNNER_LOG, marks=marks,
                       needles=service.needles)
    return {**steps, "polled": polled}


# -- what the probes cost ----------------------------------------------------------------------
def cpu_of(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of `pid`, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = int(fields[11]) + int(fields[12])
    children = int(fields[13]) + int(fields[14])
    return own / CLOCK_TICKS, children / CLOCK_TICKS


def group_cpu(leader: int) -> float:
    """CPU seconds of the live processes in `leader`'s process group (the runner starts
    each process as `bash -c`, in its own group, so the service may be the leader's child)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == leader:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def one_command_cpu(command: str, runs: int = 5) -> float:
    """Median CPU seconds of `bash -c COMMAND` (as the runner runs an exec probe)."""
    costs = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, check=False,
                       timeout=30)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        costs.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(costs)


def probe_costs() -> list[str]:
    info = state.read(RUNTIME_DIR)
    assert info is not None
    supervisor = info.supervisor_pid
    services = {n: p.pid for n, p in info.processes.items() if p.pid}
    own0, children0 = cpu_of(supervisor)
    svc0 = {n: group_cpu(pid) for n, pid in services.items()}
    began = time.monotonic()
    time.sleep(IDLE_WINDOW_S)
    own1, children1 = cpu_of(supervisor)
    svc1 = {n: group_cpu(pid) for n, pid in services.items()}
    window = time.monotonic() - began
    probes = (children1 - children0) / window
    cores = os.cpu_count() or 1
    grpc_probe = one_command_cpu(f"{PYRUN} -m voice_common.healthcheck 127.0.0.1:50051")
    opensips_probe = one_command_cpu("scripts/devstack/opensips-run --probe")
    bare_python = one_command_cpu(f"{PYRUN} -c pass")
    idle = ", ".join(f"{n} {(svc1[n] - svc0[n]) / window:.3f}" for n in services)
    return [
        f"Readiness probes with the stack idle ({window:.0f} s window): the supervisor's "
        f"children (an exec probe for opensips every 1 s; asr, llm, tts and the core have "
        f"HTTP probes, run inside the supervisor) "
        f"used **{probes:.2f} CPU-s per second** ({probes / cores:.0%} of the {cores} cores); "
        f"the supervisor itself (the core's HTTP probe, its loop) {(own1 - own0) / window:.3f}. "
        f"One `voice_common.healthcheck` probe: {grpc_probe * 1000:.0f} ms CPU (a bare "
        f"`python -c pass`: {bare_python * 1000:.0f} ms); one `opensips-run --probe`: "
        f"{opensips_probe * 1000:.0f} ms. The idle services' own CPU per second: {idle}.",
    ]


def import_context() -> str:
    """How long the LLM's imports take here now: they are most of its warm-up, and they
    read ~1 GB of libraries, so the page cache decides (this VM reclaims it eagerly)."""
    times = []
    for _ in range(3):
        began = time.monotonic()
        subprocess.run([PYRUN, "-c", "import torch, transformers"], check=True, timeout=300)
        times.append(time.monotonic() - began)
    cached_mb = next(int(line.split()[1]) // 1024 for line in
                     Path("/proc/meminfo").read_text().splitlines() if line.startswith("Cached:"))
    return (f"Context: `import torch, transformers` in a fresh interpreter took "
            f"{min(times):.1f}-{max(times):.1f} s during this run (page cache {cached_mb} MB): "
            f"most of the LLM's warm-up is these imports and the model classes they load.")


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKIP_SETUP": "1", "NO_COLOR": "1", "DEV_RUNNER": "devstack",
           "RUNTIME_DIR": str(RUNTIME_DIR)}
    return subprocess.run([str(ROOT / "scripts" / name), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def table(results: dict[str, list[dict[str, float]]]) -> list[str]:
    head = "| service | " + " | ".join(COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    rows = []
    for name, runs in results.items():
        cells = [f"{statistics.median(r[c] for r in runs) * 1000:.0f}" for c in COLUMNS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return [head, rule, *rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    # The packaged models are built before timing: cold start means "set-up already done"
    # (SmolLM2, the default LLM, is converted when its package is installed).
    subprocess.run([sys.executable, "-m", "llm_service.demo_model", "build"], check=True,
                   capture_output=True, timeout=600)
    from llm_service import smollm2

    if smollm2.available():
        subprocess.run([sys.executable, "-m", "llm_service.smollm2", "build"], check=True,
                       capture_output=True, timeout=600)
    started = time.monotonic()
    result = script("dev-start.sh", "--timeout", "600")
    cold = time.monotonic() - started
    if result.returncode != 0:
        print(result.stdout, result.stderr)
        script("dev-stop.sh")
        return 1
    results: dict[str, list[dict[str, float]]] = {}
    try:
        time.sleep(3)  # let liveness settle
        for name, service in SERVICES.items():
            runs = []
            for _ in range(args.saves):
                time.sleep(1.0)  # the restarted process's watcher arms after it listens
                runs.append(one_save(name, service))
                print(name, " ".join(f"{k}={v * 1000:.0f}" for k, v in runs[-1].items()),
                      flush=True)
            results[name] = runs
        time.sleep(2)  # the last restart's probes settle
        probe_lines = probe_costs()
        context = import_context()
    finally:
        script("dev-stop.sh")
    body = "\n".join([
        f"Cold start (`scripts/dev-start.sh` to every process ready, devstack runner, set-up "
        f"and demo model already built): **{cold:.1f} s** (target <= 20 s).",
        "",
        f"Save to SERVING per service ({args.saves} saves of an unchanged source file; "
        "targets: core <= 1.5 s, ASR and TTS <= 3 s, LLM <= 4 s), medians in ms. Steps from "
        "the logs (scripts/bench/devloop.py): batching wait (save to `Hot-reload:`), drain "
        "(to the runner's `Restarting`), restart gap (to `Running`: backoff_seconds 0), "
        "process start (to `listening on`), warm-up (to SERVING); `to SERVING` is their sum "
        "from the logs, `polled` the same seen by a client polling health every 50 ms, "
        "`probe lag` from SERVING until the runner's readiness probe saw it:",
        "",
        *table(results),
        "",
        context,
        "",
        *probe_lines,
    ])
    print(body)
    if not args.no_write:
        print(f"written to {write_section('devstack_real', 'Dev loop: the real stack', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
