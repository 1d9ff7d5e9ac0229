"""The real services and the core as subprocesses on 127.0.0.1, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import urllib.request
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

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

    def greeted_call(self, exclude: Collection[str] = ()) -> dict | None:
        """A call (its id not in `exclude`) whose greeting is over by the core's own
        account: its first turn ended and nothing is left to play; None before. A caller
        that waited for a quiet spell instead could take a pause between two of the
        greeting's sentences (a busy machine) for its end."""
        for call in self.calls():
            if call["call_id"] not in exclude and call["turns"] >= 1 and not call["bot_talking"]:
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
