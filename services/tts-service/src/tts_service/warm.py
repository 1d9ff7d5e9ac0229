"""What the development warm parent's spare loads ahead of a hot reload: the Piper voice.

onnxruntime starts a thread when it is imported, so the warm parent (which must fork
with one thread) can neither import it nor hold a voice. `stage()` runs in the spare
child that the parent forks once the running child serves (voice_common.warm_spare):
it loads the default Piper voice and runs the warm-up synthesis; the spare becomes the
next save's child, whose `__main__` gives `take(plan)` to the voice catalog. The voice
is used only when the plan (settings) and the voice's files are what it was loaded
with; the spare itself stands down when the code it loaded with changed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tts_service.engines import PiperEngine
from tts_service.voices import WARMUP_TEXT, VoicePlan, plan_voices

log = logging.getLogger("tts_service.warm")

_kept: tuple[PiperEngine, VoicePlan, tuple[tuple[str, int, int], ...]] | None = None


def voice_files(model: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of the voice's .onnx and .onnx.json: a replaced voice differs."""
    found = []
    for path in (model, Path(f"{model}.json")):
        if path.is_file():
            info = path.stat()
            found.append((str(path), info.st_size, info.st_mtime_ns))
    return tuple(found)


def stage() -> None:
    """In the spare: load the default Piper voice and run its warm-up synthesis."""
    global _kept
    from tts_service.settings import TtsSettings
    from voice_common.config import load_settings

    plan = plan_voices(load_settings(TtsSettings))
    engine = PiperEngine(plan.piper_model, plan.onnx_threads)
    asyncio.run(engine.synthesize(WARMUP_TEXT))
    _kept = (engine, plan, voice_files(plan.piper_model))


def take(plan: VoicePlan) -> PiperEngine | None:
    """The staged voice when it fits `plan` and its files are unchanged."""
    global _kept
    if _kept is None:
        return None
    engine, staged_plan, files = _kept
    _kept = None
    if staged_plan != plan or voice_files(plan.piper_model) != files:
        log.info("staged voice not used: the settings or the voice's files changed")
        return None
    log.info("piper voice %s loaded by the warm parent's spare (no load)", engine.voice.name)
    return engine
