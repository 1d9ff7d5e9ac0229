"""The real services under the warm parent: model weights kept across a hot reload (the
LLM's demo model and pocketsphinx on threads, ASR_WORKERS=0, are loaded once, in the
parent; after a save the fresh child answers with the inherited model), and the core
reloading in the same process.

Each service runs as the dev stack runs it (`python -m voice_common.launch MODULE`,
DEVELOPMENT_MODE=1, `<SVC>_HOT_RELOAD=1`, its debug settings) on a free 127.0.0.1 port;
the save goes to a scratch folder given as `<SVC>_WATCH_PATHS` so the checkout stays
untouched.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.asr.conftest import requires_espeak
from tests.llm.conftest import SERVICE as LLM_SERVICE
from tests.llm.conftest import DemoBuild, collect, demo_build, load_dialogue, request
from voice_testkit.asr_client import final_text, transcribe
from voice_testkit.procs import (
    Proc,
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
    wait_until,
)
from voice_testkit.speech import speech_pcm
from voice_testkit.stack import core_healthy, free_rtp_range, free_udp_port
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


@pytest.mark.parametrize("named", [False, True], ids=["demo-model", "transformers-folder"])
def test_the_llm_answers_with_the_parents_model_after_a_reload(
        demo_build: DemoBuild, tmp_path: Path, named: bool) -> None:
    """The embedded demo model (LLM_MODEL=demo), and a transformers folder named by
    LLM_MODEL (the demo model's, the same files a real model would have)."""
    item = next(i for i in load_dialogue() if i["name"] == "lost_card")

    def check(target: str) -> None:
        with grpc.insecure_channel(target) as channel:
            deltas, done = collect(llm_pb2_grpc.LanguageModelStub(channel),
                                   request(item["questions"][0]))
        assert "".join(deltas) == item["answer"] and done.finish_reason == "stop"

    model = {"LLM_MODEL": str(demo_build.model_dir) if named else "demo"}
    run_warm("llm_service", {"VOICE_CACHE_DIR": str(demo_build.cache_dir),
                             "TORCH_FORCE_CPU": "1", **model},
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


def test_the_core_reloads_in_the_same_process_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The core (direct SIP) as the dev stack runs it: `--prefix CORE`, the core's own
    settings; no ASR/LLM/TTS is needed for /health."""
    watched = tmp_path / "watched"
    watched.mkdir()
    http_port, rtp = free_port(), free_rtp_range()
    unused = f"127.0.0.1:{free_port()}"
    env = base_env(
        DEVELOPMENT_MODE="1", CORE_HOT_RELOAD="1", CORE_LOG_LEVEL="DEBUG",
        CORE_WATCH_PATHS=str(watched), HOT_RELOAD_QUIET_MS="100", CORE_SIGNALLING="sip",
        CORE_SIP_HOST="127.0.0.1", CORE_SIP_PORT=str(free_udp_port()),
        CORE_HTTP_PORT=str(http_port), CORE_RTP_PORT_MIN=str(rtp[0]),
        CORE_RTP_PORT_MAX=str(rtp[1]), CORE_EVENT_PORT=str(free_udp_port()),
        CORE_ASR_TARGET=unused, CORE_LLM_TARGET=unused, CORE_TTS_TARGET=unused)
    args = python_module("voice_common.launch", "--prefix", "CORE", "opensips_ai_core")
    http = f"http://127.0.0.1:{http_port}"
    with running(args, env, tmp_path / "core.log") as proc:
        wait_until(lambda: core_healthy(http, proc), 120, 0.1, "core /health")
        (watched / "edited.py").write_text("VALUE = 2\n")
        wait_until(lambda: proc.output().count("opensips-ai-core ready") >= 2, 120, 0.1,
                   "a second core child ready")
        wait_until(lambda: core_healthy(http, proc), 60, 0.1, "core /health again")
        assert "opensips-ai-core stopping (SIGTERM)" in proc.output()  # the old child drained
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert proc.output().count("opensips-ai-core stopping (SIGTERM)") == 2
