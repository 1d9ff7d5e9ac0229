"""The echo service with a slow interpreter teardown, for the development fast-exit tests.

Its main() registers an atexit handler that sleeps ATEXIT_SLEEP_S seconds and then
writes ATEXIT_MARKER: the marker exists only when the interpreter's teardown ran. With
STUBBORN_CHILD=1 it also starts a multiprocessing child that ignores SIGTERM and that
nothing joins (a worker a service forgot), printing `stubborn child pid N` and, once
it ignores SIGTERM, `stubborn child ready`.
Run: python -m voice_common.launch --prefix ECHO tests.common.atexit_service
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import time
from pathlib import Path

from voice_testkit.echo_service import main as echo_main


def _slow_teardown() -> None:
    time.sleep(float(os.environ.get("ATEXIT_SLEEP_S", "0")))
    marker = os.environ.get("ATEXIT_MARKER")
    if marker:
        Path(marker).write_text("teardown ran\n")


def _stubborn() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stubborn child ready", flush=True)  # a SIGTERM from now on is ignored
    time.sleep(600)


def main() -> int:
    # Here, not at import: the spawned child imports this module too.
    atexit.register(_slow_teardown)
    if os.environ.get("STUBBORN_CHILD") == "1":
        child = multiprocessing.get_context("spawn").Process(target=_stubborn, name="stubborn")
        child.start()
        print(f"stubborn child pid {child.pid}", flush=True)
    return echo_main()
