from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from voice_testkit.procs import ROOT
from voice_testkit.stack import Service, build_demo_llm, service


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
    # The dev stack's settings (process-compose.yaml): word timings and debug output on;
    # the demo LLM, whose replies are exact.
    with (service("asr", logdir, ASR_ENGINE="pocketsphinx", VOSK_SHOW_WORDS="1",
                  ASR_ENABLE_DEBUG="1") as asr,
          service("llm", logdir, VOICE_CACHE_DIR=str(cache), LLM_MODEL="demo",
                  LLM_ENABLE_DEBUG="1",
                  DEVELOPMENT_MODE="1") as llm,
          service("tts", logdir, TTS_ENABLE_DEBUG="1") as tts):
        yield AiServices(asr, llm, tts, logdir, cache)


# -- `slow`: what needs a model or starts a service process ----------------------------------
# `./scripts/dev-test.sh --fast` runs `-m "not slow and not e2e"`. Besides an explicit
# mark, a test is slow when it uses a fixture that starts services or builds a model, or
# when its module imports a helper that starts a service process (then most of its
# tests do; a fast test there is only left out of --fast, never wrongly included).
SLOW_FIXTURES = frozenset({"ai", "start_core", "tts", "demo_build", "korean_model", "speech_dir"})


def _process_helpers() -> tuple[object, ...]:
    from voice_testkit import procs, stack

    helpers: list[object] = [procs.running, procs.python_module, stack.service, stack.core,
                             stack.build_demo_llm, stack.start, stack.restart]
    for module, name in (("tests.asr.conftest", "asr_service"),
                         ("tests.tts.conftest", "start_tts"),
                         ("tests.llm.conftest", "start_server")):
        try:
            helpers.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):  # a part not installed, or renamed
            continue
    return tuple(helpers)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    helpers = _process_helpers()
    slow_modules: dict[str, bool] = {}
    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("e2e"):
            continue
        module = getattr(item, "module", None)
        name = getattr(module, "__name__", "")
        if name not in slow_modules:
            values = vars(module).values() if module is not None else ()
            slow_modules[name] = any(v is h for v in values for h in helpers)
        if slow_modules[name] or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
