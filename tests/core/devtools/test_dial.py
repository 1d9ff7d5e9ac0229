"""`python -m opensips_ai_core.devtools.dial`: the module scripts/dev-call.sh runs."""

from __future__ import annotations

import subprocess
import sys

from voice_testkit.procs import ROOT


def test_dial_is_the_module_dev_call_runs_and_it_explains_itself() -> None:
    script = (ROOT / "scripts" / "dev-call.sh").read_text()
    assert "-m opensips_ai_core.devtools.dial " in script
    result = subprocess.run([sys.executable, "-m", "opensips_ai_core.devtools.dial", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: dev-call.sh")
    assert "--sip" in result.stdout and "what the caller says" in result.stdout


def test_dial_without_text_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "opensips_ai_core.devtools.dial"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "the following arguments are required" in result.stderr
