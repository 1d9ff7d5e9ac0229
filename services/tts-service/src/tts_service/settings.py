"""The TTS service's environment (``TTS_`` prefix), validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from voice_common.config import ServiceSettings

DEFAULT_PORT = 50053
# The contract's own ceiling (tts.proto header); a deployment may only lower it.
CONTRACT_MAX_TEXT_CHARS = 2000

Engine = Literal["piper", "espeak-ng"]


def looks_like_path(value: str) -> bool:
    """A TTS_VOICE naming a file rather than a voice: has a directory part or ends .onnx."""
    return "/" in value or value.endswith(".onnx")


class TtsSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TTS_", extra="ignore", frozen=True, title="tts-service"
    )

    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    engine: Engine = "piper"
    # Empty: the engine's default voice (the bundled Piper voice, or espeak-ng en-us).
    # A path: a Piper .onnx voice with its .onnx.json beside it. Otherwise a voice name.
    voice: str = ""
    max_text_chars: int = Field(CONTRACT_MAX_TEXT_CHARS, ge=1, le=CONTRACT_MAX_TEXT_CHARS)
    espeak_binary: str = "espeak-ng"
    # onnxruntime intra-op threads per Piper synthesis; 0: onnxruntime's default (all cores).
    # Two halve a sentence's time on an idle 2-core machine (first audio of a 10-word
    # clause 240 -> 140 ms); they do not spin, so busy calls lose little.
    onnx_threads: int = Field(2, ge=0, le=64)

    @field_validator("voice")
    @classmethod
    def _voice_file_exists(cls, value: str) -> str:
        value = value.strip()
        if value and looks_like_path(value):
            path = Path(value).expanduser()
            if not path.is_file():
                raise ValueError(f"Piper voice file does not exist: {path}")
            config = Path(f"{path}.json")
            if not config.is_file():
                raise ValueError(f"Piper voice config missing beside the model: {config}")
            return str(path)
        return value
