"""The real stack for end-to-end tests: ASR (pocketsphinx), LLM (demo model), TTS (Piper).

The three services start once per session; each test starts its own core.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.stack import Core, Service, build_demo_llm, core, service


@dataclass
class AiServices:
    asr: Service
    llm: Service
    tts: Service
    logdir: Path
    llm_cache: Path


@pytest.fixture(scope="session")
def ai(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AiServices]:
    logdir = tmp_path_factory.mktemp("e2e-logs")
    cache = tmp_path_factory.mktemp("e2e-llm-cache")
    build_demo_llm(cache)
    with (service("asr", logdir, ASR_ENGINE="pocketsphinx") as asr,
          service("llm", logdir, VOICE_CACHE_DIR=str(cache), LLM_ENABLE_DEBUG="1",
                  DEVELOPMENT_MODE="1") as llm,
          service("tts", logdir, TTS_ENABLE_DEBUG="1") as tts):
        yield AiServices(asr, llm, tts, logdir, cache)


@pytest.fixture
def start_core(ai: AiServices, tmp_path: Path):
    """Start a core against the session's services: `with start_core(**env) as c:`."""

    @contextlib.contextmanager
    def starter(**env: str) -> Iterator[Core]:
        with core(tmp_path, ai.asr.target, ai.llm.target, ai.tts.target, **env) as running:
            yield running

    return starter
