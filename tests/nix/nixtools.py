"""Run Debian's nix-instantiate offline: parse files and evaluate what needs no fetch."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from voice_testkit.procs import ROOT

NIX_FILES = sorted([ROOT / "flake.nix", *(ROOT / "nix").glob("*.nix")])


def nix_instantiate() -> str:
    path = shutil.which("nix-instantiate")
    if path is None:
        pytest.skip("nix-instantiate is not installed (CI installs Debian's nix-bin)")
    return path


def run_nix(*args: str) -> subprocess.CompletedProcess[str]:
    # The dummy store refuses any write or fetch: what passes needs no network and no /nix.
    return subprocess.run([nix_instantiate(), "--store", "dummy://", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def eval_json(expr: str) -> object:
    done = run_nix("--eval", "--strict", "--json", "-E", expr)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))
