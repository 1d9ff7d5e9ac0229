#!/usr/bin/env python3
"""The real dev stack: cold start, and save-to-SERVING per service after an edit.

Runs scripts/dev-start.sh (set-up and the demo model already done) and times it
until every process is ready; then, for each service, rewrites one of its source
files unchanged (a save) and times until its health is SERVING again, polling every
50 ms: gRPC health for asr/llm/tts, HTTP /health for the core. The split of that
time into batching, drain, restart and warm-up is in the `devenv` section (a small
fixture stack). Needs the stack's ports free; stops the stack at the end.

    .venv/bin/python scripts/bench/devstack_real.py [--saves 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench.report import write_section  # noqa: E402
from voice_common.healthcheck import check  # noqa: E402

SERVICES = {
    "core": ("core/src/opensips_ai_core/__init__.py", "http://127.0.0.1:8088/health"),
    "asr": ("services/asr-service/src/asr_service/__init__.py", "127.0.0.1:50051"),
    "tts": ("services/tts-service/src/tts_service/__init__.py", "127.0.0.1:50053"),
    "llm": ("services/llm-service/src/llm_service/__init__.py", "127.0.0.1:50052"),
}


def serving(target: str) -> bool:
    if target.startswith("http"):
        try:
            with urllib.request.urlopen(target, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False
    return check(target, "", timeout=1)[0] == 0


def save_to_serving(path: Path, target: str, timeout: float = 120) -> float:
    """Seconds from rewriting `path` (unchanged) until `target` is SERVING again."""
    path.write_bytes(path.read_bytes())
    saved = time.monotonic()
    deadline = saved + timeout
    went_down = False
    while time.monotonic() < deadline:
        up = serving(target)
        if not up:
            went_down = True
        elif went_down:
            return time.monotonic() - saved
        time.sleep(0.05)
    raise TimeoutError(f"{target} did not restart within {timeout} s")


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKIP_SETUP": "1", "NO_COLOR": "1"}
    return subprocess.run([str(ROOT / "scripts" / name), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    # The demo model is built before timing: cold start means "set-up already done".
    subprocess.run([sys.executable, "-m", "llm_service.demo_model", "build"], check=True,
                   capture_output=True, timeout=600)
    started = time.monotonic()
    result = script("dev-start.sh", "--timeout", "600")
    cold = time.monotonic() - started
    if result.returncode != 0:
        print(result.stdout, result.stderr)
        script("dev-stop.sh")
        return 1
    rows = []
    try:
        time.sleep(3)  # let liveness settle
        for name, (source, target) in SERVICES.items():
            times = [save_to_serving(ROOT / source, target) for _ in range(args.saves)]
            rows.append((name, statistics.median(times), min(times), max(times)))
            print(f"{name}: save to SERVING median {statistics.median(times):.2f} s")
    finally:
        script("dev-stop.sh")
    body = "\n".join([
        f"Cold start (`scripts/dev-start.sh` to every process ready, set-up and demo model "
        f"already built): **{cold:.1f} s** (target <= 20 s).",
        "",
        f"Save to SERVING per service ({args.saves} saves of an unchanged source file; "
        "targets: core <= 1.5 s, ASR and TTS <= 3 s, LLM <= 4 s):",
        "",
        "| service | median (s) | min (s) | max (s) |", "|---|---:|---:|---:|",
        *(f"| {n} | {m:.2f} | {lo:.2f} | {hi:.2f} |" for n, m, lo, hi in rows),
    ])
    print(body)
    if not args.no_write:
        print(f"written to {write_section('devstack_real', 'Dev loop: the real stack', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
