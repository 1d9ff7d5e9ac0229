"""Development loop: cold start of a small stack, and save-to-SERVING after an edit.

Starts the fixture stack of the dev-environment tests (voice_testkit.devenv_stack: three
echo services on the shared runtime, `first` with a 1 s warm-up, `second` waiting
for `first` to be healthy; `backoff_seconds: 0` as in process-compose.yaml) with the
devstack runner, and measures:

- cold start: `devstack up --detach` until every process is ready (readiness
  probes every 1 s, as in process-compose.yaml);
- save to ready, for `first`, split from the processes' and the runner's log timestamps
  into batching wait, drain, restart gap, process start, warm-up and probe lag (see
  scripts/bench/devloop.py for where each step ends).

    .venv/bin/python scripts/bench/devenv.py [--saves 5] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devloop import STEPS, LogMarks, split_save, summary_rows

from devstack import state
from voice_testkit.devenv_stack import FixtureStack, write_stack

ROOT = Path(__file__).resolve().parents[2]


def devstack(stack: FixtureStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devstack", *args],
                          env=stack.env(), cwd=ROOT, capture_output=True, text=True, check=True,
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
    marks = LogMarks.now(log, runner_log)
    saved = time.time()
    (stack.watch[name] / "handler.py").write_text(f"VALUE = {index}\n")
    wait_ready(stack, name, restarts + 1)
    return split_save(name, saved, service_log=log, runner_log=runner_log, marks=marks)


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
    rows = summary_rows(runs, [*STEPS, "total"])
    body = "\n".join([
        f"Cold start of the 3-process fixture stack (devstack runner, `up --detach` to all "
        f"ready, `second` waiting for `first`): **{cold:.1f} s**.",
        "",
        f"Save to ready for `first` ({args.saves} saves; HOT_RELOAD_QUIET_MS="
        f"{os.environ.get('HOT_RELOAD_QUIET_MS', '300')}, backoff_seconds 0, warm-up 1 s, "
        "probe period 1 s), in ms:",
        "",
        "| step | median | min | max |",
        "|---|---:|---:|---:|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        from report import write_section

        print(f"wrote {write_section('devenv', 'Development loop (hot reload)', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
