"""voice_common.hotreload's batching, on real files with the real watcher: a burst of saves
is one batch, restarted HOT_RELOAD_QUIET_MS after its last save; a burst that never pauses
is cut HOT_RELOAD_MAX_WAIT_MS after its first save; a polled dependency file counts; and
what a batch needs (a fresh child, a new warm parent, a full restart)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from watchfiles import Change

from voice_common.hotreload import (
    FILE_POLL_S,
    REEXEC,
    RELOAD,
    RESTART,
    Batching,
    file_digest,
    needed,
    wait_for_change,
)

pytestmark = pytest.mark.timeout(60)
ARM_S = 0.3  # the watcher is set up when its task first runs; give it that moment


async def save_every(folder: Path, count: int, gap_s: float, saved_at: list[float]) -> None:
    """`count` saves `gap_s` apart, to distinct files; note each save's time."""
    for i in range(count):
        (folder / f"mod{i}.py").write_text(f"VALUE = {i}\n")
        saved_at.append(time.monotonic())
        await asyncio.sleep(gap_s)


async def test_env_configures_the_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOT_RELOAD_QUIET_MS", "120")
    monkeypatch.setenv("HOT_RELOAD_MAX_WAIT_MS", "900")
    assert Batching.from_env() == Batching(0.12, 0.9)
    monkeypatch.setenv("HOT_RELOAD_QUIET_MS", "-1")
    with pytest.raises(ValueError, match="HOT_RELOAD_QUIET_MS='-1': must not be negative"):
        Batching.from_env()


async def test_saves_100_ms_apart_are_one_batch_restarted_quiet_ms_after_the_last(
        tmp_path: Path) -> None:
    quiet = 0.3
    waiting = asyncio.create_task(wait_for_change([str(tmp_path)], Batching(quiet, 2.0)))
    await asyncio.sleep(ARM_S)
    saved_at: list[float] = []
    await save_every(tmp_path, 5, 0.1, saved_at)
    changes = await asyncio.wait_for(waiting, 30)
    returned = time.monotonic()
    # One batch holds every save of the burst: one restart.
    assert sorted(os.path.basename(path) for _, path in changes) == [
        f"mod{i}.py" for i in range(5)]
    # Not before the quiet period after the last save (a lower bound: 20 ms for the
    # file time's resolution).
    assert returned - saved_at[-1] >= quiet - 0.02


async def test_the_max_wait_cuts_a_burst_that_never_pauses(tmp_path: Path) -> None:
    max_wait = 1.0
    waiting = asyncio.create_task(wait_for_change([str(tmp_path)], Batching(0.3, max_wait)))
    await asyncio.sleep(ARM_S)
    saved_at: list[float] = []
    saving = asyncio.create_task(save_every(tmp_path, 60, 0.1, saved_at))  # 6 s of saves
    try:
        changes = await asyncio.wait_for(waiting, 30)
        returned = time.monotonic()
        # The batch ended while the saves went on, so not on a quiet period ...
        assert not saving.done()
        assert len(saved_at) < 60
        # ... and not before the cap: at least max_wait after the first save.
        assert returned - saved_at[0] >= max_wait - 0.02
        names = {os.path.basename(path) for _, path in changes}
        assert "mod0.py" in names and len(names) < 60
    finally:
        saving.cancel()


async def test_a_polled_file_outside_the_watched_folders_is_a_change(tmp_path: Path) -> None:
    watched, elsewhere = tmp_path / "src", tmp_path / "constraints.txt"
    watched.mkdir()
    elsewhere.write_text("numpy==1\n")
    waiting = asyncio.create_task(
        wait_for_change([str(watched)], Batching(0.1, 2.0), files=[str(elsewhere)]))
    await asyncio.sleep(ARM_S + FILE_POLL_S)
    elsewhere.write_text("numpy==2\n")
    changes = await asyncio.wait_for(waiting, 30)
    assert {path for _, path in changes} == {str(elsewhere)}


def test_what_a_batch_needs(tmp_path: Path) -> None:
    loader, other = tmp_path / "warm.py", tmp_path / "servicer.py"
    loader.write_text("A = 1\n")
    other.write_text("B = 1\n")
    parent_files = {str(loader): file_digest(str(loader))}

    def batch(*paths: Path) -> set[tuple[Change, str]]:
        return {(Change.modified, str(path)) for path in paths}

    assert needed(batch(other), parent_files) == RELOAD
    # Rewritten with the same bytes (a save without an edit): the parent's copy still fits.
    loader.write_text("A = 1\n")
    assert needed(batch(loader, other), parent_files) == RELOAD
    loader.write_text("A = 2\n")
    assert needed(batch(loader, other), parent_files) == REEXEC
    for name in ("pyproject.toml", "constraints.txt", "requirements-dev.txt", "uv.lock"):
        assert needed(batch(other, tmp_path / name), parent_files) == RESTART, name


async def test_a_save_before_the_watcher_was_set_up_is_not_lost(tmp_path: Path) -> None:
    # What a fresh child does: saves after the last batch it was started for (`since`)
    # count, even when they came before its watcher existed; older files do not.
    (tmp_path / "old.py").write_text("A = 1\n")
    since = time.time()
    os.utime(tmp_path / "old.py", (since - 10, since - 10))
    (tmp_path / "saved_meanwhile.py").write_text("B = 1\n")
    changes = await asyncio.wait_for(
        wait_for_change([str(tmp_path)], Batching(0.1, 2.0), since=since - 1), 30)
    assert {os.path.basename(path) for _, path in changes} == {"saved_meanwhile.py"}


async def test_a_dependency_file_saved_before_the_watcher_was_set_up_is_not_lost(
        tmp_path: Path) -> None:
    # A checkout-level dependency file is polled, not watched: its first poll takes the
    # file as it is then, so a save after `since` (the last batch) and before the child's
    # watcher existed must come from the scan of `since`, as a source file's does.
    watched, lock, old = tmp_path / "src", tmp_path / "constraints.txt", tmp_path / "uv.lock"
    watched.mkdir()
    since = time.time()
    old.write_text("unchanged\n")
    os.utime(old, (since - 10, since - 10))
    lock.write_text("numpy==2\n")  # saved while the child was starting
    changes = await asyncio.wait_for(
        wait_for_change([str(watched)], Batching(0.1, 2.0), files=[str(lock), str(old)],
                        since=since - 1), 30)
    assert {path for _, path in changes} == {str(lock)}
    assert needed(changes, {}) == RESTART
