from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import ROOT
from tests.support.stack import Service, build_demo_llm, service


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@dataclass
class AiServices:
    asr: Service
    llm: Service
    tts: Service
    logdir: Path
    llm_cache: Path


@pytest.fixture(scope="session")
def ai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AiServices]:
    """The real services, once per session: ASR (pocketsphinx), LLM (demo), TTS (Piper)."""
    logdir = tmp_path_factory.mktemp("ai-logs")
    cache = tmp_path_factory.mktemp("ai-llm-cache")
    build_demo_llm(cache)
    with (service("asr", logdir, ASR_ENGINE="pocketsphinx") as asr,
          service("llm", logdir, VOICE_CACHE_DIR=str(cache), LLM_MODEL="demo", LLM_ENABLE_DEBUG="1",
                  DEVELOPMENT_MODE="1") as llm,
          service("tts", logdir, TTS_ENABLE_DEBUG="1") as tts):
        yield AiServices(asr, llm, tts, logdir, cache)
