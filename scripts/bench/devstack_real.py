#!/usr/bin/env python3
"""The real dev stack under the devstack runner: cold start, save-to-SERVING per service
under the warm parent, and what the readiness probes cost.

Runs scripts/dev-start.sh with the devstack runner (DEV_RUNNER=devstack, set-up and the
demo model already done) and times it until every process is ready. Then, for core, ASR,
TTS and the LLM, it saves as scripts/bench/devloop.py does: rewrites the package's
__init__.py unchanged `--pause` s after the service served (and after its spare, if it
has one, has loaded), polls its HTTP /health every 20 ms, and splits save -> SERVING from
the service's log (.dev/logs/NAME.log) into batching wait, drain, fork + import and
warm-up (devloop.split_warm_reload). Under the warm parent (voice_common.warm_parent) the
supervised process keeps its PID and a save forks a fresh child, so the runner restarts
nothing: the script checks that the runner's PID and restart count stayed the same, and
counts the saves whose gap the runner's readiness probe saw (its state went Not Ready,
then its log says `NAME: ready` again). Last, with the stack idle, the CPU the
supervisor's children (the exec probes) use per second, and one probe's CPU. The load
average goes into the text: the machine may be shared. Needs the stack's ports free;
stops the stack at the end.

    .venv/bin/python scripts/bench/devstack_real.py [--saves 3] [--pause 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devloop import Service, compose_env, first_after, log_size, one_save, services, spare_staged
from devloop import table as save_table
from report import write_section

from devstack import state

ROOT = Path(__file__).resolve().parents[2]

RUNTIME_DIR = ROOT / ".dev"
RUNNER_LOG = RUNTIME_DIR / "devstack.log"
PYRUN = ROOT / "scripts" / "devstack" / "pyrun"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_WINDOW_S = 10.0
# The runner's readiness probe runs every period_seconds (1 s): it logs `ready` again
# within about that after SERVING if it saw the gap at all.
PROBE_SEEN_WITHIN_S = 2.5
# voice_common.warm_parent: a warm import that leaves a thread (learnt at the first save
# after a cold start without cached warm lists) makes the parent exec itself anew.
REEXEC_LINE = "the warm parent starts anew"
REEXEC_NOTE = ("; a save where the warm parent started anew (same PID) to leave out an "
               "import that starts a thread paid its imports again: the max column")


def real_services() -> list[Service]:
    """devloop's services on the real stack's health ports and logs."""
    svcs = services()
    for svc in svcs:
        svc.health_port = int(compose_env(svc.name)[svc.health_var])
        svc.log = RUNTIME_DIR / "logs" / f"{svc.name}.log"
    return svcs


@dataclass
class RunnerView:
    """What the runner saw of the saves of one service."""

    saves: int = 0
    same_process: int = 0  # the runner's PID and restart count unchanged
    saw_gap: int = 0  # its readiness probe saw the reload as Not Ready
    reexec: int = 0  # the warm parent started anew (same PID) in the save
    ready_after: list[float] | None = None  # SERVING -> the runner's `ready`, when it saw


def save_under_runner(svc: Service, view: RunnerView) -> dict[str, float]:
    """One save (devloop.one_save), and what the runner saw of it."""
    before = state.read(RUNTIME_DIR)
    assert before is not None
    proc = before.processes[svc.name]
    runner_offset = log_size(RUNNER_LOG)
    service_offset = log_size(svc.log)
    saved_at = time.time()
    run = one_save(svc)
    with open(svc.log, "rb") as handle:
        handle.seek(service_offset)
        if REEXEC_LINE in handle.read().decode(errors="replace"):
            view.reexec += 1
    serving_at = saved_at + run["to SERVING"]
    try:
        ready = first_after(RUNNER_LOG, f" {svc.name}: ready", serving_at - 1.0,
                            offset=runner_offset, timeout=PROBE_SEEN_WITHIN_S)
    except TimeoutError:
        ready = None
    after = state.read(RUNTIME_DIR)
    assert after is not None
    view.saves += 1
    now = after.processes[svc.name]
    if (now.pid, now.restarts) == (proc.pid, proc.restarts):
        view.same_process += 1
    if ready is not None:
        view.saw_gap += 1
        view.ready_after = [*(view.ready_after or []), ready - serving_at]
    return run


def runner_text(views: dict[str, RunnerView]) -> str:
    parts = []
    for name, view in views.items():
        lag = (f", ready again {statistics.median(view.ready_after) * 1000:.0f} ms after "
               f"SERVING (median)" if view.ready_after else "")
        reexec = (f", the warm parent started anew in {view.reexec}/{view.saves}"
                  if view.reexec else "")
        parts.append(f"{name}: same PID and restart count in {view.same_process}/{view.saves}"
                     f", the gap seen in {view.saw_gap}/{view.saves}{lag}{reexec}")
    return "; ".join(parts)


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
        f"children (the exec probe of opensips, every 1 s; the other processes have HTTP "
        f"probes, run inside the supervisor) "
        f"used **{probes:.2f} CPU-s per second** ({probes / cores:.0%} of the {cores} cores); "
        f"the supervisor itself (the HTTP probes, its loop) {(own1 - own0) / window:.3f}. "
        f"One `voice_common.healthcheck` probe: {grpc_probe * 1000:.0f} ms CPU (a bare "
        f"`python -c pass`: {bare_python * 1000:.0f} ms); one `opensips-run --probe`: "
        f"{opensips_probe * 1000:.0f} ms. The idle services' own CPU per second: {idle}.",
    ]


def import_context() -> str:
    """How long the LLM's imports take here now: they are most of its cold start, and they
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
            f"most of the LLM's cold start is these imports and the model classes they load.")


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKIP_SETUP": "1", "NO_COLOR": "1", "DEV_RUNNER": "devstack",
           "RUNTIME_DIR": str(RUNTIME_DIR)}
    return subprocess.run([str(ROOT / "scripts" / name), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--pause", type=float, default=3.0,
                        help="seconds between SERVING and the next save (as devloop.py)")
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
    svcs = real_services()
    logged_before = {svc.name: log_size(svc.log) for svc in svcs}
    load_start = os.getloadavg()[0]
    print(f"load average {load_start:.1f}", flush=True)
    started = time.monotonic()
    result = script("dev-start.sh", "--timeout", "600")
    cold = time.monotonic() - started
    if result.returncode != 0:
        print(result.stdout, result.stderr)
        script("dev-stop.sh")
        return 1
    print(f"cold start {cold:.1f} s", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    views: dict[str, RunnerView] = {}
    try:
        for svc in svcs:
            # This run's lines only (the logs of earlier runs may be appended to).
            before = logged_before[svc.name]
            offset = before if log_size(svc.log) >= before else 0
            runs = []
            views[svc.name] = view = RunnerView()
            for _ in range(args.saves):
                time.sleep(args.pause)
                staged = spare_staged(svc, offset)
                offset = log_size(svc.log)
                runs.append(save_under_runner(svc, view))
                if staged is not None:
                    runs[-1]["spare staged"] = staged
                print(svc.name, " ".join(f"{k}={v * 1000:.0f}" for k, v in runs[-1].items()),
                      flush=True)
            results[svc.name] = runs
        time.sleep(2)  # the spares load; the probes settle
        probe_lines = probe_costs()
        context = import_context()
    finally:
        script("dev-stop.sh")
    load_end = os.getloadavg()[0]
    cores = os.cpu_count()
    busy = max(load_start, load_end) > 1.0
    body = "\n".join([
        f"Load average {load_start:.1f} at the start, {load_end:.1f} at the end, on {cores} "
        f"cores{' (other work was running: an idle machine will do better)' if busy else ''}.",
        "",
        f"Cold start (`scripts/dev-start.sh` to every process ready, devstack runner, set-up "
        f"and demo model already built): **{cold:.1f} s** (target <= 20 s).",
        "",
        f"Save to SERVING under the runner ({args.saves} saves of the package's __init__.py, "
        f"unchanged, each {args.pause:g} s after the service served; target <= 1000 ms), "
        "medians in ms, steps as in `devloop` below (the warm parent's log lines): batching "
        "wait to the child's `Hot-reload:` line, drain to the parent's `child N ended`, fork "
        "+ import to `listening on` (the core: its ready line), warm-up to SERVING; polled: "
        "the same seen by a client polling /health every 20 ms (`-`: no poll fell in the "
        "gap); spare staged after: from SERVING until the spare had loaded (the benchmark "
        "waited for it before the next save):",
        "",
        *save_table(results),
        "",
        "What the runner saw (the supervised process keeps its PID under the warm parent; "
        "its readiness probe, every 1 s, sees a reload only when a probe falls in the gap"
        f"{REEXEC_NOTE if any(view.reexec for view in views.values()) else ''}): "
        f"{runner_text(views)}.",
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
