"""Checks on what a client sends, each failing with a message that names the limit."""

from __future__ import annotations

from asr_service.settings import SUPPORTED_SAMPLE_RATES, AsrSettings
from voiceai.asr.v1 import asr_pb2


class InvalidRequestError(ValueError):
    """A request the contract refuses (answered with INVALID_ARGUMENT and this message)."""


def check_config(config: asr_pb2.StreamingConfig, settings: AsrSettings) -> None:
    if config.sample_rate_hz not in SUPPORTED_SAMPLE_RATES:
        raise InvalidRequestError(
            f"sample_rate_hz={config.sample_rate_hz} is not supported: use 8000 or 16000"
        )
    if len(config.phrases) > settings.max_phrases:
        raise InvalidRequestError(
            f"too many phrases: {len(config.phrases)} (limit {settings.max_phrases})"
        )
    for index, phrase in enumerate(config.phrases):
        if len(phrase) > settings.max_phrase_chars:
            raise InvalidRequestError(
                f"phrase {index} is too long: {len(phrase)} characters "
                f"(limit {settings.max_phrase_chars})"
            )


def check_audio(chunk: bytes, settings: AsrSettings) -> None:
    if len(chunk) > settings.max_chunk_bytes:
        raise InvalidRequestError(
            f"audio chunk of {len(chunk)} bytes exceeds the limit of "
            f"{settings.max_chunk_bytes} bytes"
        )
    if len(chunk) % 2:
        raise InvalidRequestError(
            f"audio chunk of {len(chunk)} bytes has an odd length: PCM16 needs 2 bytes a sample"
        )


def first_request_config(request: asr_pb2.RecognizeRequest) -> asr_pb2.StreamingConfig:
    """The config the first request must carry."""
    if request.WhichOneof("request") != "config":
        raise InvalidRequestError("the first request must carry the StreamingConfig, not audio")
    return request.config
