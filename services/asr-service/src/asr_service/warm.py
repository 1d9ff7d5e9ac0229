"""What the development warm parent keeps across hot reloads: the loaded engine.

voice_common.warm_parent calls `preload()` in the parent (hot reload on) before it
forks a service child; the child's `__main__` asks `take(settings)` for the engine. Only
an engine that runs on threads in the service process (ASR_WORKERS=0, or Vosk) is
loaded here: worker processes load their own. The child gets it while this module and
everything it imports are byte-identical to their files (a save of one makes the parent
start anew, loading with the new code), with the same settings and model files.

Whisper starts threads while it loads (CTranslate2's workers, onnxruntime's sessions for
Silero VAD and smart-turn), and the parent must fork with one thread: `stage()` loads
it instead, in the spare child that the parent forks once the running child serves
(voice_common.warm_spare); the spare becomes the next save's child and takes it the
same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

from asr_service.engines import Engine, create_engine
from asr_service.settings import AsrSettings
from asr_service.workers import worker_count
from voice_common.config import load_settings

log = logging.getLogger("asr_service.warm")

# Engines whose load starts threads: staged in the spare, never loaded in the parent.
THREADED_LOADS = frozenset({"whisper"})

_kept: tuple[Engine, dict[str, object], tuple[tuple[str, int, int], ...]] | None = None


def model_files(engine: Engine) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of the model directory's files: a changed model differs."""
    folder = (getattr(engine, "model_path", None) or getattr(engine, "model_dir", None)
              or getattr(getattr(engine, "config", None), "model_path", None))
    root = Path(str(folder)) if folder else None
    if root is None or not root.is_dir():
        return ()
    return tuple((str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
                 for f in sorted(root.rglob("*")) if f.is_file())


def preload() -> None:
    """Load the engine the service would load on its threads, in the warm parent, unless
    its load starts threads."""
    settings = load_settings(AsrSettings)
    if settings.engine_name() in THREADED_LOADS:
        log.info("warm parent: %s starts threads as it loads; a spare child loads it "
                 "ahead of each save", settings.engine_name())
        return
    _load(settings)


def stage() -> None:
    """In the warm parent's spare child: load an engine that starts threads as it loads."""
    settings = load_settings(AsrSettings)
    if settings.engine_name() in THREADED_LOADS:
        _load(settings)


def _load(settings: AsrSettings) -> None:
    global _kept
    engine = create_engine(settings)
    if worker_count(settings, engine):
        log.info("warm parent: %s runs in worker processes; each loads its own model",
                 engine.name)
        return
    engine.load()
    _kept = (engine, settings.model_dump(), model_files(engine))


def _loaded(engine: Engine) -> None:
    """The recognizers call `load()` at warm-up: for this engine it already ran."""


def take(settings: AsrSettings) -> Engine | None:
    """The parent's loaded engine when it fits `settings` and its model is unchanged."""
    global _kept
    if _kept is None:
        return None
    engine, loaded_with, files = _kept
    _kept = None
    if loaded_with != settings.model_dump() or model_files(engine) != files:
        log.info("warm engine not used: settings or model files changed since the parent "
                 "loaded it")
        return None
    engine.load = lambda: _loaded(engine)  # type: ignore[method-assign]
    log.info("engine %s kept from the warm parent (no load)", engine.name)
    return engine
