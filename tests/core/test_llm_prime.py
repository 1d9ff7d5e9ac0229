"""The core primes the LLM service with its bot's request (grpc_clients/llm_prime.py).

A real core and a real LLM service (SmolLM2, the default, when its package is
installed; else the demo model) on loopback ports: the prime is sent once the LLM
channel is ready, before any call, and again after the service is restarted under the
running core; a prime that fails (the target answers no LLM) leaves the core up and
its calls answered. Every wait is for an outcome in the logs or the core's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from opensips_ai_core.config import BotConfig, load_bot_config
from opensips_ai_core.devtools.sip_uac import SipCaller, make_sdp, parse_media_address
from opensips_ai_core.devtools.softphone import RtpPeer
from opensips_ai_core.grpc_clients.llm_prime import CALL_ID, PRIME_TURN
from tests.conftest import AiServices
from voice_testkit.procs import ROOT, free_port, wait_until
from voice_testkit.stack import Core, Service, build_demo_llm, core, restart, service, start

BOT_CONFIG = ROOT / "core" / "bot.toml"
WAIT_S = 30.0
CORE_PRIMED = "LLM primed with the bot's prompt in "
SERVICE_PRIMED = f"primed ({CALL_ID}): "


@pytest.fixture(scope="module")
def bot() -> BotConfig:
    return load_bot_config(BOT_CONFIG)


def smollm2_installed() -> bool:
    try:
        from llm_service import smollm2
    except ImportError:
        return False
    return smollm2.available()


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The LLM service as the dev stack runs it (LLM_ENABLE_DEBUG=1): SmolLM2 from the
    usual cache (built there on a first start), else the demo model."""
    logdir = tmp_path_factory.mktemp("prime-llm")
    if smollm2_installed():
        env = {"LLM_MODEL": ""}
    else:
        cache = tmp_path_factory.mktemp("prime-llm-cache")
        build_demo_llm(cache)
        env = {"LLM_MODEL": "demo", "VOICE_CACHE_DIR": str(cache)}
    with service("llm", logdir, timeout=600, **env) as svc:
        yield svc


def log_messages(path: Path) -> list[str]:
    """The messages of a JSON-lines log (a line that is not JSON as it is)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(str(json.loads(line).get("message", line)))
        except (json.JSONDecodeError, AttributeError):
            out.append(line)
    return out


def prime_prompts(svc: Service) -> list[str]:
    """The prompts the running LLM process logged for primes (LLM_ENABLE_DEBUG)."""
    return [m for m in log_messages(svc.proc.log_path) if m.startswith(f"prompt ({CALL_ID},")]


def service_primes(svc: Service) -> int:
    return sum(m.startswith(SERVICE_PRIMED) for m in log_messages(svc.proc.log_path))


def core_primes(running: Core) -> list[str]:
    return [line for line in running.proc.output().splitlines() if CORE_PRIMED in line]


@contextlib.contextmanager
def core_for(tmp_path: Path, llm_target: str, asr: str | None = None,
             tts: str | None = None) -> Iterator[Core]:
    """A core on free ports; ASR and TTS at addresses nothing listens on unless given
    (the prime needs neither)."""
    asr = asr or f"127.0.0.1:{free_port()}"
    tts = tts or f"127.0.0.1:{free_port()}"
    with core(tmp_path, asr, llm_target, tts, CORE_BOT_CONFIG=str(BOT_CONFIG)) as running:
        yield running


def assert_clean_exit(running: Core) -> None:
    """The core stopped (SIGTERM) with 0 and no traceback: the primer's watch, or a prime
    in flight, was cancelled with it."""
    log = running.proc.log_path.read_text(errors="replace")
    assert running.proc.popen.returncode == 0, log[-2000:]
    assert "Traceback" not in log and "Task was destroyed" not in log, log[-2000:]


def test_a_core_whose_llm_service_is_down_starts_and_stops_cleanly(tmp_path: Path) -> None:
    with core_for(tmp_path, f"127.0.0.1:{free_port()}") as running:
        assert core_primes(running) == []  # waiting for the channel, not failing
        assert running.get_json("/health")  # up and answering
    assert_clean_exit(running)


def test_the_core_primes_the_llm_service_before_any_call_and_again_after_a_restart(
        llm: Service, bot: BotConfig, tmp_path: Path) -> None:
    instructions = bot.system_prompt.split(". ")[0]  # "You are Ava, the telephone ..."
    before = service_primes(llm)
    with core_for(tmp_path, llm.target) as running:
        wait_until(lambda: service_primes(llm) > before, WAIT_S, 0.1,
                   "the LLM service's log of the core's prime")
        prompts = prime_prompts(llm)
        assert prompts and instructions in prompts[-1], prompts
        assert PRIME_TURN in prompts[-1]
        wait_until(lambda: core_primes(running), WAIT_S, 0.1, "the core's prime log line")
        assert running.calls() == []  # no call: the prime is none
        metrics = running.metrics()
        assert "voice_calls_total{" not in metrics and "voice_turns_total{" not in metrics

        restart(llm, timeout=600)  # the same port; a new process and log
        wait_until(lambda: service_primes(llm) >= 1, WAIT_S, 0.1,
                   "a prime of the restarted LLM service")
        assert instructions in prime_prompts(llm)[-1]
        wait_until(lambda: len(core_primes(running)) >= 2, WAIT_S, 0.1,
                   "the core's second prime log line")
        assert "(the LLM channel is ready again)" in core_primes(running)[-1]
        assert running.proc.popen.poll() is None
        assert running.calls() == []
        assert "| ERROR" not in running.proc.output()
    # The stop cancels the primer's watch: a clean exit, nothing left pending.
    assert_clean_exit(running)


def test_an_llm_service_down_at_start_is_primed_once_it_serves(
        llm: Service, tmp_path: Path) -> None:
    llm.proc.stop()  # down before the core starts
    try:
        with core_for(tmp_path, llm.target) as running:
            assert core_primes(running) == []  # nothing to prime yet; the core is up
            start(llm, timeout=600)  # the same port
            wait_until(lambda: service_primes(llm) >= 1, WAIT_S, 0.1,
                       "the prime once the LLM service serves")
            wait_until(lambda: core_primes(running), WAIT_S, 0.1, "the core's prime log line")
        assert_clean_exit(running)
    finally:
        if llm.proc.popen.poll() is not None:
            start(llm, timeout=600)


async def test_a_failing_prime_leaves_the_core_up_and_its_calls_answered(
        ai: AiServices, tmp_path: Path) -> None:
    """The LLM address names a server without the LLM service (the TTS service's): the
    prime fails (UNIMPLEMENTED), a WARNING says so, and a call is still answered and
    greeted (real ASR and TTS)."""
    cm = core_for(tmp_path, ai.tts.target, asr=ai.asr.target, tts=ai.tts.target)
    running = await asyncio.to_thread(cm.__enter__)
    try:
        def failed() -> bool:
            return "LLM prime failed (UNIMPLEMENTED" in running.proc.output()

        await asyncio.to_thread(wait_until, failed, WAIT_S, 0.1, "the failed prime's line")
        line = next(x for x in running.proc.output().splitlines()
                    if "LLM prime failed" in x)
        assert "WARNING" in line, line
        rtp = await RtpPeer().open()
        sip = await SipCaller(("127.0.0.1", running.sip_port)).open()
        try:
            answer = await sip.invite(make_sdp("127.0.0.1", rtp.local_port))
            assert answer.status == 200, answer
            ip, port, _ = parse_media_address(answer.body)
            rtp.start((ip, port))
            await asyncio.to_thread(wait_until, running.greeted_call, WAIT_S, 0.1,
                                    "the call's greeting played out")
            assert await rtp.wait_for_speech(0.0, WAIT_S) is not None, "no greeting heard"
        finally:
            with contextlib.suppress(Exception):
                await sip.bye()
            await rtp.close()
            sip.close()
        assert running.proc.popen.poll() is None
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)
