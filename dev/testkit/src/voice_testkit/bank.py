"""The demo's mock bank (opensips_ai_core.devtools.mock_bank) as a real subprocess."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from voice_testkit.procs import Proc, base_env, free_port, python_module, running, wait_until


def _healthy(url: str, proc: Proc) -> bool:
    if proc.popen.poll() is not None:
        raise RuntimeError(f"the mock bank exited:\n{proc.output()}")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mock_bank(log_dir: Path) -> Iterator[str]:
    """Yield its base URL (http://127.0.0.1:PORT) once `GET /health` answers 200."""
    port = free_port()
    args = python_module("opensips_ai_core.devtools.mock_bank", "--port", str(port))
    with running(args, base_env(), log_dir / "bank.log") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(f"{base}/health", proc), 30, message="the mock bank")
        yield base
