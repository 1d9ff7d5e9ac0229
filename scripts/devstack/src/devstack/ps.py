"""What `process-compose process list -o json` reports, for either runner, and what
"ready" means there.

process-compose v1.64.1 answers a JSON array sorted by name, each entry
(src/types/process.go, ProcessState):

    {"name", "namespace", "status", "system_time", "age" (nanoseconds), "is_ready"
     ("-", "Ready" or "Not Ready"), "has_ready_probe", "restarts", "exit_code", "pid",
     "is_elevated", "password_provided", "mem", "cpu", "is_running"}

`is_ready` is "-" both for a process without a probe and for one whose readiness
probe has not succeeded yet; `has_ready_probe` tells them apart (true when the process
has a readiness *or* a liveness probe). Right after `up --detached` the client may
print nothing (the server is not listening yet). The devstack runner's state file is
turned into the same rows, so the scripts read one format whichever runner runs.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from devstack import state

Row = dict[str, Any]
STATUS_OK = {"Running", "Foreground", "Launched", "Completed", "Skipped", "Disabled",
             "Restarting"}
ENDED = {"Completed", "Skipped", "Error"}


def is_ready_reason(row: Row) -> tuple[bool, str]:
    """process-compose's ProcessState.IsReadyReason, line for line."""
    status, health = row.get("status", ""), row.get("is_ready", "-")
    if status not in STATUS_OK:
        return False, f"status is {status}"
    if status == "Disabled":
        return True, "process is disabled"
    if row.get("has_ready_probe") and health != "Ready":
        return False, f"health is {'Unknown' if health == '-' else health}"
    if health not in ("Ready", "-"):
        return False, f"health is {health}"
    if row.get("exit_code", 0) != 0:
        return False, f"failed with exit code {row['exit_code']}"
    return True, ""


def has_failed(row: Row) -> bool:
    """Ended and will not run again by itself: waiting for it is pointless."""
    return row.get("status") in ENDED and row.get("exit_code", 0) != 0


def from_state(current: state.StackState) -> list[Row]:
    """The devstack runner's state as process-compose's rows."""
    alive = state.pid_alive(current.supervisor_pid) and current.status != "stopped"
    rows = []
    for name, proc in sorted(current.processes.items()):
        running = alive and proc.state == "Running"
        age = time.time() - proc.started_at if running and proc.started_at else 0.0
        rows.append({
            "name": name, "namespace": "default",
            # A stopped stack keeps the ends it recorded (why it stopped).
            "status": proc.state if alive or proc.state in ENDED else "Stopped",
            "system_time": _age_text(age) if running else "-",
            "age": int(age * 1e9), "is_ready": proc.health if alive else "-",
            "has_ready_probe": proc.has_readiness, "restarts": proc.restarts,
            "exit_code": proc.exit_code or 0, "pid": proc.pid if running else 0,
            "is_elevated": False, "password_provided": False, "mem": 0, "cpu": 0.0,
            "is_running": running,
            # The runner's own: why a process is in its state.
            "message": proc.message, "log": proc.log,
        })
    return rows


def _age_text(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60}m"


def from_process_compose(socket: Path, binary: str = "process-compose",
                         timeout: float = 10.0) -> list[Row] | None:
    """`process list -o json` from the server on `socket`; None while it does not answer
    (no socket yet, empty output, an error, or anything that is not the JSON list)."""
    try:
        done = subprocess.run([binary, "process", "list", "-o", "json", "--unix-socket",
                               str(socket)], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    try:
        rows = json.loads(done.stdout)
    except ValueError:
        return None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "name" in r for r in rows):
        return None
    return rows
