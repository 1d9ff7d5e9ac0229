"""Where the time from a save to SERVING goes, read from log timestamps (shared by the
development-loop benchmarks: devenv.py on a fixture stack, devstack_real.py on the real one).

One save's timeline, each step ending at a logged line:

    batching wait  save -> the service's "Hot-reload:" line (HOT_RELOAD_QUIET_MS after
                   the last change of a burst)
    drain          -> the devstack runner's "NAME: Restarting (exit 0; ...)": the old
                   process has exited (health NOT_SERVING, in-flight calls finished, grace)
    restart gap    -> the runner's "NAME: Running": the new process is spawned
                   (max(backoff_seconds, floor): 1 s as in process-compose, unless the
                   runner runs with --backoff-floor 0)
    process start  -> the runtime's "listening on" line (interpreter, imports, bind)
    warm-up        -> the "SERVING" line (model load)
    probe lag      -> the runner's "NAME: ready": its readiness probe saw it

The runner's lines come from its own log (RUNTIME_DIR/devstack.log), so the split needs
the devstack runner, not process-compose. Service lines are the development log format
(`2026-11-26 09:38:39,565 | INFO | ...`), the runner's `2026-11-26 09:38:39,565 devstack
...`: both local time with milliseconds.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
# A stamp has whole milliseconds: a line logged in the same millisecond as `after`
# may carry a stamp up to 1 ms before it.
STAMP_SLACK_S = 0.001
STEPS = ("batching wait", "drain", "restart gap", "process start", "warm-up", "probe lag")


def stamp_of(line: str) -> float | None:
    """Epoch seconds of a log line's timestamp (local time), None without one."""
    match = STAMP.search(line)
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def log_size(path: Path) -> int:
    """Where a log ends now: later lines are read from here on."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def first_after(path: Path, needles: str | Sequence[str], after: float, *,
                offset: int = 0, timeout: float = 60) -> float:
    """The timestamp of the first line (from byte `offset` on) that contains one of
    `needles` and was logged at or after `after`; waits for it up to `timeout` s."""
    wanted = (needles,) if isinstance(needles, str) else tuple(needles)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            if any(needle in line for needle in wanted):
                at = stamp_of(line)
                if at is not None and at >= after - STAMP_SLACK_S:
                    return at
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {' or '.join(map(repr, wanted))} in {path} after {after}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Needles:
    """What the service logs when it listens and when it serves."""

    listening: Sequence[str] = ("listening on",)
    serving: Sequence[str] = ("SERVING (warm-up",)
    hot_reload: Sequence[str] = ("Hot-reload:",)


@dataclass(frozen=True)
class LogMarks:
    """Where the logs ended just before the save: only later lines count."""

    service: int
    runner: int

    @classmethod
    def now(cls, service_log: Path, runner_log: Path) -> LogMarks:
        return cls(log_size(service_log), log_size(runner_log))


def split_save(name: str, saved: float, *, service_log: Path, runner_log: Path,
               marks: LogMarks, needles: Needles = Needles(),
               timeout: float = 120) -> dict[str, float]:
    """Seconds per step of one save (`saved`: epoch seconds) of process `name`, and
    "to SERVING" (save -> SERVING line) and "total" (save -> the runner's ready)."""

    def service(what: Sequence[str], after: float) -> float:
        return first_after(service_log, what, after, offset=marks.service, timeout=timeout)

    def runner(what: str, after: float) -> float:
        return first_after(runner_log, f" {name}: {what}", after, offset=marks.runner,
                           timeout=timeout)

    hot = service(needles.hot_reload, saved)
    exited = runner("Restarting", hot)
    spawned = runner("Running", exited)
    listening = service(needles.listening, spawned)
    serving = service(needles.serving, listening)
    ready = runner("ready", serving)
    return {"batching wait": hot - saved, "drain": exited - hot,
            "restart gap": spawned - exited, "process start": listening - spawned,
            "warm-up": serving - listening, "probe lag": ready - serving,
            "to SERVING": serving - saved, "total": ready - saved}


def summary_rows(runs: Sequence[dict[str, float]], keys: Sequence[str]) -> list[str]:
    """Markdown rows `| step | median | min | max |` in milliseconds."""
    rows = []
    for key in keys:
        values = [run[key] for run in runs]
        rows.append(f"| {key} | {statistics.median(values) * 1000:.0f} | "
                    f"{min(values) * 1000:.0f} | {max(values) * 1000:.0f} |")
    return rows
