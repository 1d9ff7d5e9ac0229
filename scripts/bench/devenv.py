"""Development loop: cold start of a small stack, and save-to-SERVING after an edit.

Starts the fixture stack of the dev-environment tests (tests/devenv/stack.py: three
echo services on the shared runtime, `first` with a 1 s warm-up, `second` waiting
for `first` to be healthy) with the devstack runner, and measures:

- cold start: `devstack up --detach` until every process is ready (readiness
  probes every 1 s, as in the fixture; process-compose.yaml's real stack probes
  every 2 s and its models warm up for far longer);
- save to SERVING, for `first`, split from the processes' own log timestamps into
    batching wait  the save until the "Hot-reload:" line (HOT_RELOAD_QUIET_MS after the
                   last change of a burst, never more than HOT_RELOAD_MAX_WAIT_MS),
    drain          until the runner saw the process exit (health NOT_SERVING, grace),
    backoff        the restart policy's backoff_seconds (1 s in the fixture),
    process start  until the new process listens (interpreter, imports, bind),
    warm-up        until it reports SERVING (the fixture's 1 s warm-up),
    probe lag      until the runner's readiness probe saw it.

    .venv/bin/python scripts/bench/devenv.py [--saves 5] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from devstack import state  # noqa: E402

from tests.devenv.stack import FixtureStack, write_stack  # noqa: E402

STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def stamp_of(line: str) -> float | None:
    match = STAMP.search(line)
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def first_after(path: Path, needle: str, after: float, timeout: float = 60) -> float:
    """The timestamp of the first line containing `needle` logged at or after `after`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text(errors="replace").splitlines():
            if needle in line:
                at = stamp_of(line)
                if at is not None and at >= after - 0.001:
                    return at
        time.sleep(0.05)
    raise TimeoutError(f"no {needle!r} in {path} after {after}")


def devstack(stack: FixtureStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = stack.env(PYTHONPATH=str(ROOT / "scripts"))
    return subprocess.run([str(ROOT / "scripts/devstack/pyrun"), "-m", "devstack", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=True,
                          timeout=180)


def wait_ready(stack: FixtureStack, name: str, restarts: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = state.read(stack.runtime_dir)
        if info is not None:
            proc = info.processes[name]
            if proc.restarts == restarts and proc.ready:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{name} not ready")


def one_save(stack: FixtureStack, index: int) -> dict[str, float]:
    name = "first"
    log = stack.runtime_dir / "logs" / f"{name}.log"
    runner_log = stack.runtime_dir / "devstack.log"
    info = state.read(stack.runtime_dir)
    assert info is not None
    restarts = info.processes[name].restarts
    time.sleep(1.5)  # let the watcher arm after the previous restart
    saved = time.time()
    (stack.watch[name] / "handler.py").write_text(f"VALUE = {index}\n")
    wait_ready(stack, name, restarts + 1)
    hot = first_after(log, "Hot-reload:", saved)
    exited = first_after(runner_log, f"{name}: Restarting", hot)
    spawned = first_after(runner_log, f"{name}: Running", exited)
    listening = first_after(log, "listening on", spawned)
    serving = first_after(log, "SERVING (warm-up", listening)
    ready = first_after(runner_log, f"{name}: ready", serving)
    return {"batching wait": hot - saved, "drain": exited - hot, "backoff": spawned - exited,
            "process start": listening - spawned, "warm-up": serving - listening,
            "probe lag": ready - serving, "total": ready - saved}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-devenv-") as tmp:
        stack = write_stack(Path(tmp))
        try:
            began = time.monotonic()
            devstack(stack, "up", "--detach", "--wait", "120")
            cold = time.monotonic() - began
            runs = [one_save(stack, i) for i in range(args.saves)]
        finally:
            devstack(stack, "down")
    keys = list(runs[0])
    rows = [f"| {k} | {statistics.median(r[k] for r in runs) * 1000:.0f} | "
            f"{min(r[k] for r in runs) * 1000:.0f} | {max(r[k] for r in runs) * 1000:.0f} |"
            for k in keys]
    body = "\n".join([
        f"Cold start of the 3-process fixture stack (devstack runner, `up --detach` to all "
        f"ready, `second` waiting for `first`): **{cold:.1f} s**.",
        "",
        f"Save to ready for `first` ({args.saves} saves; HOT_RELOAD_QUIET_MS="
        f"{os.environ.get('HOT_RELOAD_QUIET_MS', '300')}, backoff 1 s, warm-up 1 s, "
        "probe period 1 s), in ms:",
        "",
        "| step | median | min | max |",
        "|---|---:|---:|---:|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        from scripts.bench.report import write_section

        print(f"wrote {write_section('devenv', 'Development loop (hot reload)', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
