"""dev-call shows a blind transfer: the demo's "talk to a person" turn against a real core.

The services are the session's (`ai`: pocketsphinx, the demo LLM, Piper, with the dev
stack's settings); the core is a subprocess on free loopback ports whose transfer
target (BOT_TRANSFER_TO) is the mock adviser (`devtools.mock_adviser`, a subprocess
saying its line through the same TTS); dev-call runs as scripts/dev-call.sh runs it.
Real SIP (REFER, NOTIFY, INVITE, BYE) and RTP over 127.0.0.1. Also: the caller that
refuses the REFER (405), and a target that never answers (a bound UDP port).
"""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import AiServices
from voice_testkit.procs import LOOPBACK, Proc, base_env, free_port, python_module, wait_until
from voice_testkit.stack import Core, core

pytestmark = [pytest.mark.timeout(400)]

ASK = "i want to talk to a person"
FAILED = "I'm sorry, I couldn't put you through. How else can I help?"


@dataclass
class Stack:
    core: Core
    adviser: Proc
    target: str


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(ai: AiServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logdir = tmp_path_factory.mktemp("dial-transfer")
    port = free_port(socket.SOCK_DGRAM)
    target = f"sip:advisers@{LOOPBACK}:{port}"
    adviser = Proc(python_module("opensips_ai_core.devtools.mock_adviser", "--port", str(port),
                                 "--tts", ai.tts.target), base_env(), logdir / "adviser.log")
    try:
        wait_until(lambda: _healthy(port), 60, 0.1, "the mock adviser's /health")
        with core(logdir, ai.asr.target, ai.llm.target, ai.tts.target,
                  BOT_TRANSFER_TO=target) as running:
            yield Stack(running, adviser, target)
    finally:
        adviser.stop()


def dev_call(stack: Stack | Core, ai: AiServices, *options: str) -> str:
    running = stack.core if isinstance(stack, Stack) else stack
    result = subprocess.run(
        python_module("opensips_ai_core.devtools.dial", "--sip",
                      f"{LOOPBACK}:{running.sip_port}", "--http",
                      f"{LOOPBACK}:{running.http_port}", "--asr", ai.asr.target,
                      "--tts", ai.tts.target, *options, ASK),
        env=base_env(), capture_output=True, text=True, timeout=300, check=False)
    print(result.stdout)  # shown with -s, or when the test fails
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_dev_call_follows_the_transfer_to_the_adviser(stack: Stack, ai: AiServices) -> None:
    out = dev_call(stack, ai)
    target = stack.target
    assert "  recognizer heard: i want to talk to a person\n" in out, out
    assert "transfer you to one of our advisers" in out
    # The REFER (with the bot as Referred-By), 202, the NOTIFYs each answered 200.
    assert f"bot asked to transfer to {target} (REFER, Referred-By: <sip:ai@" in out, out
    steps = [line for line in out.splitlines() if line.startswith("  caller")]
    assert steps == [
        "  caller: 202 Accepted",
        "  caller -> bot: NOTIFY SIP/2.0 100 Trying (the bot answered 200)",
        f"  caller -> {target}: INVITE, 200 OK",
        "  caller -> bot: NOTIFY SIP/2.0 200 OK (the bot answered 200)",
    ], out
    # The bot's BYE, then the adviser's line over the new call's RTP, then its BYE.
    assert "the bot hung up (BYE): the caller is with the transfer target now\n" in out
    said = next(line for line in out.splitlines() if line.startswith(f"{target} said (by ASR)"))
    assert said.split(": ", 1)[1].strip(), out  # the recognizer made words of it
    assert f"{target} hung up\n" in out
    assert "call ended: transferred" in out
    # The new INVITE reached the adviser with the bot's Referred-By.
    log = stack.adviser.output()
    assert f"INVITE {target} from <sip:caller@{LOOPBACK}>" in log, log
    assert "Referred-By: <sip:ai@" in log
    assert "saying 'You are through to an adviser. How can I help?'" in log


def test_dev_call_refusing_the_transfer_keeps_the_call(stack: Stack, ai: AiServices) -> None:
    before = stack.adviser.output().count("INVITE ")
    out = dev_call(stack, ai, "--refuse-transfer")
    assert f"bot asked to transfer to {stack.target} (REFER" in out, out
    assert "  caller: 405 Method Not Allowed (--refuse-transfer)\n" in out
    assert f"bot (prompt): {FAILED}\n" in out, out
    assert out.splitlines()[-2:][0] == "hung up"  # the caller ended the call, not the bot
    assert stack.adviser.output().count("INVITE ") == before  # nobody called the adviser


def test_dev_call_reports_a_target_that_never_answers(ai: AiServices, tmp_path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind((LOOPBACK, 0))
    target = f"sip:advisers@{LOOPBACK}:{silent.getsockname()[1]}"
    try:
        with core(tmp_path, ai.asr.target, ai.llm.target, ai.tts.target,
                  BOT_TRANSFER_TO=target) as running:
            out = dev_call(running, ai, "--ring-timeout", "3")
    finally:
        silent.close()
    steps = [line for line in out.splitlines() if line.startswith("  caller")]
    assert steps == [
        "  caller: 202 Accepted",
        "  caller -> bot: NOTIFY SIP/2.0 100 Trying (the bot answered 200)",
        f"  caller -> {target}: INVITE, 408 Request Timeout",
        "  caller -> bot: NOTIFY SIP/2.0 408 Request Timeout (the bot answered 200)",
    ], out
    assert f"bot (prompt): {FAILED}\n" in out, out
    assert "the bot hung up" not in out and "hung up\n" in out  # the call went on
    assert "call ended: transferred" not in out
