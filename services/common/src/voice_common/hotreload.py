"""Hot reload for development: watch source directories and say what a batch of saves
needs (voice_common.warm_parent acts on it).

Enabled when DEVELOPMENT_MODE=1 and `<SVC>_HOT_RELOAD=1`. A burst of saves is
batched: the reload comes HOT_RELOAD_QUIET_MS (300) after the last change and
never later than HOT_RELOAD_MAX_WAIT_MS (2000) after the first. The service child
then drains like on SIGTERM and the warm parent starts a fresh child
(voice_common.warm_parent).

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
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from voice_common.paths import is_dependency_file

log = logging.getLogger("voice_common.hotreload")

TEMP_SUFFIXES = ("~", ".tmp", ".swp", ".swo", ".swx", ".bak", ".orig", ".kate-swp")
SOURCE_SUFFIXES = (".py", ".pyi", ".proto", ".toml", ".yaml", ".yml", ".json", ".cfg")
# watchfiles' polling step and its own batch cap: short, so the quiet period below is ours.
WATCH_STEP_MS = 50
WATCH_DEBOUNCE_MS = 500
# Files outside the watched directories (the checkout's dependency files) are polled.
FILE_POLL_S = 0.5
# After this, the watcher is set up: files saved before it are found by their mtimes.
ARM_S = 0.05

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


def file_digest(path: str) -> str:
    """The content's digest ("" for a missing file): a rewrite of the same bytes is no change."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


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


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def changed_since(paths: Sequence[str], since: float) -> Changes:
    """Source files under `paths` modified after `since` (epoch seconds)."""
    keep = SourceFilter()
    found: Changes = set()
    for folder in existing(paths):
        for parent, dirs, names in os.walk(folder):
            dirs[:] = [d for d in dirs if d not in keep.ignore_dirs and not d.startswith(".")]
            for name in names:
                path = os.path.join(parent, name)
                if keep(Change.modified, path):
                    with contextlib.suppress(OSError):
                        if os.stat(path).st_mtime > since:
                            found.add((Change.modified, path))
    return found


def saved_since(paths: Sequence[str], files: Sequence[str], since: float) -> Changes:
    """Source files under `paths` and the polled `files` modified after `since`."""
    found = changed_since(paths, since)
    for path in files:
        with contextlib.suppress(OSError):
            if os.stat(path).st_mtime > since:
                found.add((Change.modified, path))
    return found


def newest_mtime(changes: Changes) -> float:
    """The newest modification time among a batch's files (now when none is left)."""
    times = []
    for _, path in changes:
        with contextlib.suppress(OSError):
            times.append(os.stat(path).st_mtime)
    return max(times, default=time.time())


async def wait_for_change(paths: Sequence[str], batching: Batching | None = None,
                          files: Sequence[str] = (), since: float | None = None) -> Changes:
    """Block until a batch of source changes under `paths` (or to one of `files`, polled
    every FILE_POLL_S); return it (all of a burst). With `since`, files (sources and
    polled ones) saved after that moment and before the watcher was set up count too
    (saves while a process starts)."""
    batching = batching or Batching.from_env()
    loop = asyncio.get_running_loop()
    delivered: asyncio.Queue[tuple[float, Changes]] = asyncio.Queue()

    async def missed() -> None:
        # The watcher is set up on the pump's first step, and the polled files' first
        # state is taken then; a save from then on is seen by them, one before by this.
        await asyncio.sleep(ARM_S)
        found = await asyncio.to_thread(saved_since, paths, files, since) if since else set()
        if found:
            delivered.put_nowait((loop.time(), found))

    async def pump() -> None:
        polled = asyncio.create_task(poll_files())
        try:
            if not existing(paths):
                await polled
                return
            async for changes in awatch(
                *existing(paths), watch_filter=SourceFilter(), step=WATCH_STEP_MS,
                debounce=WATCH_DEBOUNCE_MS, recursive=True,
            ):
                delivered.put_nowait((loop.time(), changes))
        finally:
            polled.cancel()

    async def poll_files() -> None:
        """Files whose directory is not watched (inotify on the file itself would lose
        it when an editor replaces it by a rename)."""
        if not files:
            await asyncio.Event().wait()
        seen = {path: _stamp(path) for path in files}
        while True:
            await asyncio.sleep(FILE_POLL_S)
            for path, before in seen.items():
                now = _stamp(path)
                if now != before:
                    seen[path] = now
                    kind = Change.deleted if now is None else Change.modified
                    delivered.put_nowait((loop.time(), {(kind, path)}))

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
    scan = asyncio.create_task(missed())
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
        scan.cancel()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


# What a batch of changes needs, least to most.
RELOAD = "reload"  # a fresh service child from the warm parent
REEXEC = "reexec"  # a file the warm parent itself imported: the parent execs itself anew
RESTART = "restart"  # a dependency file: the supervisor starts the process again


def needed(changes: Changes, parent_files: Mapping[str, str]) -> str:
    """RESTART for a dependency file, REEXEC for a file the parent imported whose content
    differs from what it imported (`parent_files`: path -> digest), RELOAD otherwise."""
    paths = {path for _, path in changes}
    if any(is_dependency_file(path) for path in paths):
        return RESTART
    for path in paths:
        if path in parent_files and file_digest(path) != parent_files[path]:
            return REEXEC
    return RELOAD


def start_watcher(paths: Sequence[str], files: Sequence[str],
                  on_change: Callable[[Changes], None],
                  since: float | None = None) -> threading.Thread | None:
    """Watch in a daemon thread of its own (a service's loop may be busy or not yet
    running); call `on_change` with the first batch, which includes files saved after
    `since`. None when nothing exists to watch."""
    watched = existing(paths)
    if not watched and not existing(files):
        log.warning("Hot-reload: none of %s exists; not watching", ", ".join(paths))
        return None

    def run() -> None:
        changes = asyncio.run(wait_for_change(watched, files=files, since=since))
        if changes:
            on_change(changes)

    log.debug("Hot-reload watching %s", ", ".join(watched))
    thread = threading.Thread(target=run, name="hot-reload", daemon=True)
    thread.start()
    return thread
