"""Model weights kept by the warm parent across a hot reload, with the real services: the
LLM's demo model and pocketsphinx on threads (ASR_WORKERS=0) are loaded once, in the
parent; after a save the fresh child answers with the inherited model.

Each service runs as the dev stack runs it (`python -m voice_common.launch MODULE`,
DEVELOPMENT_MODE=1, `<SVC>_HOT_RELOAD=1`, its debug settings) on a free 127.0.0.1 port;
the save goes to a scratch folder given as `<SVC>_WATCH_PATHS` so the checkout stays
untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.asr.client import final_text, transcribe
from tests.asr.conftest import requires_espeak
from tests.asr.speech import speech_pcm
from tests.llm.conftest import SERVICE as LLM_SERVICE
from tests.llm.conftest import DemoBuild, collect, demo_build, load_dialogue, request
from tests.support.procs import (
    Proc,
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
    wait_until,
)
from voiceai.llm.v1 import llm_pb2_grpc

__all__ = ["demo_build"]  # the session fixture, used here too

pytestmark = pytest.mark.timeout(300)


def reload_once(proc: Proc, watched: Path, target: str, kept_line: str,
                service: str = "") -> None:
    """Save a file, wait for the second child to serve, check it kept the model."""
    (watched / "edited.py").write_text("VALUE = 2\n")
    wait_until(lambda: proc.output().count(kept_line) >= 2, 120,
               message="a second child with the kept model")
    wait_serving(target, proc, timeout=120, service=service)
    assert proc.popen.poll() is None  # the same process throughout
    assert proc.output().count("draining and reloading") == 1


def run_warm(module: str, env: dict[str, str], log: Path, *,
             check: Callable[[str], None], kept_line: str, service: str = "") -> None:
    prefix = module.split("_", 1)[0].upper()
    port = free_port()
    watched = log.parent / "watched"
    watched.mkdir()
    target = f"127.0.0.1:{port}"
    environment = base_env(**{
        "DEVELOPMENT_MODE": "1", "LOG_LEVEL": "DEBUG", f"{prefix}_HOT_RELOAD": "1",
        f"{prefix}_PORT": str(port), f"{prefix}_WATCH_PATHS": str(watched),
        f"{prefix}_ENABLE_DEBUG": "1", "HOT_RELOAD_QUIET_MS": "100", **env})
    with running(python_module("voice_common.launch", module), environment, log) as proc:
        wait_serving(target, proc, timeout=180, service=service)
        assert kept_line in proc.output()  # the first child already got the parent's
        check(target)
        reload_once(proc, watched, target, kept_line, service)
        check(target)
        assert "preloaded" in proc.output() and proc.output().count("preloaded") == 1


def test_the_llm_answers_with_the_parents_model_after_a_reload(
        demo_build: DemoBuild, tmp_path: Path) -> None:
    item = next(i for i in load_dialogue() if i["name"] == "lost_card")

    def check(target: str) -> None:
        with grpc.insecure_channel(target) as channel:
            deltas, done = collect(llm_pb2_grpc.LanguageModelStub(channel),
                                   request(item["questions"][0]))
        assert "".join(deltas) == item["answer"] and done.finish_reason == "stop"

    run_warm("llm_service", {"VOICE_CACHE_DIR": str(demo_build.cache_dir),
                             "TORCH_FORCE_CPU": "1"},
             tmp_path / "llm.log", check=check, kept_line="kept from the warm parent (no load)",
             service=LLM_SERVICE)


@requires_espeak
def test_pocketsphinx_on_threads_recognizes_with_the_parents_model_after_a_reload(
        tmp_path: Path) -> None:
    pcm = speech_pcm("hello world, please call my office tomorrow", "en-us", tmp_path, 16000,
                     words_per_minute=150)

    def check(target: str) -> None:
        text = final_text(transcribe(target, pcm, 16000))
        assert {"hello", "world", "tomorrow"} <= set(text.lower().split()), text

    run_warm("asr_service", {"ASR_ENGINE": "pocketsphinx", "ASR_WORKERS": "0",
                             "VOSK_SHOW_WORDS": "1"},
             tmp_path / "asr.log", check=check,
             kept_line="engine pocketsphinx kept from the warm parent")
