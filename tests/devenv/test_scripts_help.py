"""Every dev script explains itself (--help from its header) and rejects what it does not know."""

from __future__ import annotations

import subprocess

import pytest

from voice_testkit.procs import ROOT

SCRIPTS = ["dev-start.sh", "dev-stop.sh", "dev-restart.sh", "dev-status.sh", "dev-logs.sh",
           "dev-debug.sh", "dev-clean.sh"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_prints_the_header_usage(name: str) -> None:
    result = subprocess.run([str(ROOT / "scripts" / name), "--help"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert f"Usage: scripts/{name}" in result.stdout
    assert not result.stdout.startswith("#!")


@pytest.mark.parametrize("name", ["dev-start.sh", "dev-stop.sh", "dev-status.sh", "dev-restart.sh",
                                  "dev-clean.sh", "dev-logs.sh"])
def test_unknown_options_are_refused(name: str) -> None:
    result = subprocess.run([str(ROOT / "scripts" / name), "--bogus"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert "unknown option: --bogus" in result.stderr
