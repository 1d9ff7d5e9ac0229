"""The runner's state file: what runs, as which PID, since when, how healthy (JSON)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "devstack.json"
REQUESTS_DIR = "requests"


@dataclass
class ProcessState:
    name: str
    # Pending Running Restarting Terminating Completed Error Skipped Disabled
    state: str = "Pending"
    pid: int | None = None
    ready: bool = False
    has_readiness: bool = False
    # process-compose's is_ready: "-" until the readiness probe answers (and while
    # Restarting), then "Ready" or "Not Ready".
    health: str = "-"
    restarts: int = 0
    started_at: float | None = None  # epoch seconds of the current run
    exit_code: int | None = None
    log: str = ""
    message: str = ""


@dataclass
class StackState:
    supervisor_pid: int
    stack_file: str
    started_at: float
    status: str = "starting"  # starting running stopping stopped
    processes: dict[str, ProcessState] = field(default_factory=dict)


def state_path(runtime_dir: Path) -> Path:
    return runtime_dir / STATE_FILE


def write(runtime_dir: Path, state: StackState) -> None:
    """Atomic: readers never see half a file."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(runtime_dir)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path)


def read(runtime_dir: Path) -> StackState | None:
    try:
        raw = json.loads(state_path(runtime_dir).read_text())
    except (OSError, ValueError):
        return None
    processes = {name: ProcessState(**item) for name, item in raw.pop("processes", {}).items()}
    return StackState(**raw, processes=processes)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for us: look at /proc where there is one.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def supervisor_running(runtime_dir: Path) -> StackState | None:
    state = read(runtime_dir)
    if state is not None and state.status != "stopped" and pid_alive(state.supervisor_pid):
        return state
    return None
