"""Hot reload for development: watch source directories, drain, exit, be restarted.

Enabled when DEVELOPMENT_MODE=1 and `<SVC>_HOT_RELOAD=1`. A burst of saves is
batched: the restart comes HOT_RELOAD_QUIET_MS (300) after the last change and
never later than HOT_RELOAD_MAX_WAIT_MS (2000) after the first. The process then
drains like on SIGTERM and exits 0; process-compose (or the project's runner)
starts it again.

watchfiles is asked for its batches every WATCH_STEP_MS (50 ms): its own
`step`/`debounce` loop yields between one and two steps after the last change,
so using it for the quiet period (step=300) restarted 300 to 600 ms after a save.
The quiet period and the cap are applied here instead, over those short batches,
with each batch's time taken from the changed files' modification times (the
moment of the save, not of the batch's delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

log = logging.getLogger("voice_common.hotreload")

TEMP_SUFFIXES = ("~", ".tmp", ".swp", ".swo", ".swx", ".bak", ".orig", ".kate-swp")
SOURCE_SUFFIXES = (".py", ".pyi", ".proto", ".toml", ".yaml", ".yml", ".json", ".cfg")
# watchfiles' polling step and its own batch cap: short, so the quiet period below is ours.
WATCH_STEP_MS = 50
WATCH_DEBOUNCE_MS = 500

Changes = set[tuple[Change, str]]


def _env_ms(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected milliseconds as an integer") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r}: must not be negative")
    return value


class SourceFilter(DefaultFilter):
    """Source files only: no caches, bytecode, VCS, editor swap/temp files or runtime state."""

    ignore_dirs = (*DefaultFilter.ignore_dirs, ".dev", ".venv", "node_modules", ".ruff_cache")

    def __call__(self, change: Change, path: str) -> bool:
        name = os.path.basename(path)
        # Editors' lock, swap, backup and probe files (vim writes "4913" to test a directory).
        if name.startswith((".#", "#")) or name == "4913" or name.endswith(TEMP_SUFFIXES):
            return False
        return super().__call__(change, path) and name.endswith(SOURCE_SUFFIXES)


def existing(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    return [str(p) for p in paths if Path(p).exists()]


def describe_changes(changes: set[tuple[Change, str]], root: str | None = None) -> str:
    root = os.path.abspath(root or os.getcwd())

    def shown_name(path: str) -> str:
        # Relative where that is shorter (inside the checkout), absolute elsewhere.
        inside = os.path.commonpath([root, os.path.abspath(path)]) == root
        return os.path.relpath(path, root) if inside else path

    names = sorted({shown_name(path) for _, path in changes})
    shown = ", ".join(names[:10])
    if len(names) > 10:
        shown += f" (+{len(names) - 10} more)"
    return shown


@dataclass(frozen=True)
class Batching:
    """Restart `quiet_s` after the last change of a burst, never later than `max_wait_s`
    after its first."""

    quiet_s: float
    max_wait_s: float

    @classmethod
    def from_env(cls) -> Batching:
        return cls(_env_ms("HOT_RELOAD_QUIET_MS", 300) / 1000,
                   _env_ms("HOT_RELOAD_MAX_WAIT_MS", 2000) / 1000)


def change_ages(changes: Changes) -> tuple[float, float]:
    """How long ago (seconds) the newest and the oldest change of a just-delivered batch
    happened, from the files' modification times.

    watchfiles delivers a batch between one and two steps after its last change (and
    cuts a batch WATCH_DEBOUNCE_MS after its first), so the ages are clamped to what
    that allows: a file whose mtime is older (copied with `cp -p`, extracted from an
    archive) or in the future does not move the restart. A deleted file has no mtime:
    one step is the estimate."""
    step = WATCH_STEP_MS / 1000
    now = time.time()
    ages = []
    for _, path in changes:
        try:
            ages.append(now - os.stat(path).st_mtime)
        except OSError:
            ages.append(step)
    newest = min(max(min(ages, default=step), 0.0), 2 * step)
    oldest = min(max(max(ages, default=step), newest), WATCH_DEBOUNCE_MS / 1000 + 2 * step)
    return newest, oldest


async def wait_for_change(paths: Sequence[str], batching: Batching | None = None) -> Changes:
    """Block until a batch of source changes under `paths`; return it (all of a burst)."""
    batching = batching or Batching.from_env()
    loop = asyncio.get_running_loop()
    delivered: asyncio.Queue[tuple[float, Changes]] = asyncio.Queue()

    async def pump() -> None:
        async for changes in awatch(
            *existing(paths), watch_filter=SourceFilter(), step=WATCH_STEP_MS,
            debounce=WATCH_DEBOUNCE_MS, recursive=True,
        ):
            delivered.put_nowait((loop.time(), changes))

    async def next_batch() -> tuple[float, Changes] | None:
        """The next batch, or None when the watcher ended (nothing left to watch)."""
        getter = asyncio.ensure_future(delivered.get())
        try:
            await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()  # no effect when done; else no stray getter takes a batch
        if getter.done() and not getter.cancelled():
            return getter.result()
        watcher.result()  # raises what ended the watcher, if anything did
        return None

    watcher = asyncio.create_task(pump())
    try:
        batch = await next_batch()
        if batch is None:
            return set()
        arrived, collected = batch[0], set(batch[1])
        newest, oldest = change_ages(collected)
        first, last = arrived - oldest, arrived - newest
        while True:
            deadline = min(last + batching.quiet_s, first + batching.max_wait_s)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return collected
            try:
                batch = await asyncio.wait_for(next_batch(), remaining)
            except TimeoutError:
                return collected
            if batch is None:
                return collected
            collected |= batch[1]
            newest, _ = change_ages(batch[1])
            last = max(last, batch[0] - newest)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def watch_and_request_restart(
    paths: Sequence[str], request_shutdown: Callable[[str], None]
) -> None:
    watched = existing(paths)
    log.debug("Hot-reload watching %s", ", ".join(watched))
    changes = await wait_for_change(watched)
    log.info("Hot-reload: %s changed; draining and restarting", describe_changes(changes))
    request_shutdown("hot reload")
