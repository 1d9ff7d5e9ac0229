"""Hot reload for development: watch source directories, drain, exit, be restarted.

Enabled when DEVELOPMENT_MODE=1 and `<SVC>_HOT_RELOAD=1`. A burst of saves is
batched: the restart comes HOT_RELOAD_QUIET_MS (300) after the last change and
never later than HOT_RELOAD_MAX_WAIT_MS (2000) after the first, which is
watchfiles' own `step`/`debounce` pair. The process then drains like on SIGTERM
and exits 0; process-compose (or the project's runner) starts it again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

log = logging.getLogger("voice_common.hotreload")

TEMP_SUFFIXES = ("~", ".tmp", ".swp", ".swo", ".swx", ".bak", ".orig", ".kate-swp")
SOURCE_SUFFIXES = (".py", ".pyi", ".proto", ".toml", ".yaml", ".yml", ".json", ".cfg")


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


async def wait_for_change(paths: Sequence[str]) -> set[tuple[Change, str]]:
    """Block until a batch of source changes under `paths`; return it."""
    quiet = _env_ms("HOT_RELOAD_QUIET_MS", 300)
    max_wait = _env_ms("HOT_RELOAD_MAX_WAIT_MS", 2000)
    async for changes in awatch(
        *existing(paths), watch_filter=SourceFilter(), step=quiet, debounce=max_wait,
        recursive=True,
    ):
        if changes:
            return changes
    return set()


async def watch_and_request_restart(
    paths: Sequence[str], request_shutdown: Callable[[str], None]
) -> None:
    watched = existing(paths)
    log.debug("Hot-reload watching %s", ", ".join(watched))
    changes = await wait_for_change(watched)
    log.info("Hot-reload: %s changed; draining and restarting", describe_changes(changes))
    request_shutdown("hot reload")
