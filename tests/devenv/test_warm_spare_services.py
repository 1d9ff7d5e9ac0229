"""The spare (voice_common.warm_spare) with the real services and their default engines:
Whisper (ASR), SmolLM2's warm-up generation (LLM), the Piper voice (TTS). Each runs as
the dev stack runs it (`python -m voice_common.launch <module>`, DEVELOPMENT_MODE=1,
<SVC>_HOT_RELOAD=1, debug output on) on free 127.0.0.1 ports; the watched folder is a
temporary one (<SVC>_WATCH_PATHS), so a save there is a source change that touches no
file of the checkout. After the first child serves, the spare stages; a save then hands
it over: the new child serves what the spare loaded, without loading it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from voice_testkit.procs import (
    Proc,
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
    wait_until,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    module: str
    prefix: str
    handed_over: str  # what the new child logs when it uses what the spare loaded


CASES = {
    "asr": Case("asr_service", "ASR", "engine whisper kept from the warm parent (no load)"),
    "llm": Case("llm_service", "LLM", "warm-up generation already run by the warm parent's "
                                      "spare"),
    "tts": Case("tts_service", "TTS", "loaded by the warm parent's spare (no load)"),
}


@dataclass
class Running:
    proc: Proc
    target: str
    watched: Path


@pytest.fixture(params=sorted(CASES))
def service(request: pytest.FixtureRequest, tmp_path: Path,
            logdir: Path) -> Iterator[tuple[Case, Running]]:
    case = CASES[request.param]
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "edited.py").write_text("VALUE = 1\n")
    port = free_port()
    prefix = case.prefix
    env = base_env(**{
        "DEVELOPMENT_MODE": "1", f"{prefix}_HOT_RELOAD": "1", f"{prefix}_PORT": str(port),
        f"{prefix}_HEALTH_HTTP_PORT": str(free_port()), f"{prefix}_WATCH_PATHS": str(watched),
        f"{prefix}_ENABLE_DEBUG": "1", f"{prefix}_LOG_LEVEL": "DEBUG",
        f"{prefix}_CRASH_BACKOFF_S": "0", "VOSK_SHOW_WORDS": "1", "ASR_WORKERS": "0",
        "HOT_RELOAD_QUIET_MS": "100",
    })
    args = python_module("voice_common.launch", "--prefix", prefix, case.module)
    with running(args, env, logdir / f"spare-{request.param}.log") as proc:
        target = f"127.0.0.1:{port}"
        wait_serving(target, proc, timeout=300)
        yield case, Running(proc, target, watched)


def test_a_save_hands_the_staged_engine_to_the_next_child(
        service: tuple[Case, Running]) -> None:
    case, svc = service
    staged = f"staged {case.module}.warm"
    wait_until(lambda: staged in svc.proc.output(), 120, message="the spare to stage")
    assert case.handed_over not in svc.proc.output()  # the first child loaded its own
    # The first save in a fresh checkout (CI's) teaches the parent what the child imports
    # (voice_common.warm_imports' cache); where that includes a module that leaves a
    # thread (onnxruntime), the parent starts anew, same PID, instead of handing over.
    # Either way a spare stages again: the save after that is the one under test.
    (svc.watched / "edited.py").write_text("VALUE = 2\n")
    wait_until(lambda: svc.proc.output().count(staged) >= 2, 180,
               message="the spare to stage after the first save")
    before = len(svc.proc.output())
    (svc.watched / "edited.py").write_text("VALUE = 3\n")
    wait_until(lambda: "started as the child" in svc.proc.output()[before:], 60,
               message="the spare to take over")
    wait_serving(svc.target, svc.proc, timeout=60)
    output = svc.proc.output()
    assert case.handed_over in output[before:]
    assert "stale" not in output and "Traceback" not in output
