"""Which voices the service offers, which one is the default, and loading them.

`plan_voices` checks the configuration before the server starts (a mistake is a
one-line error and exit code 2); `VoiceCatalog.load` does the slow part (the
Piper model, a warm-up synthesis) during the runtime's warm-up.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tts_service.engines import (
    Engine,
    EspeakEngine,
    PiperEngine,
    VoiceInfo,
    bundled_piper_voice,
    find_espeak,
    piper_voice_name,
)
from tts_service.settings import TtsSettings, looks_like_path

log = logging.getLogger(__name__)

# espeak-ng voices always offered beside the configured one (English, as the bot speaks).
ESPEAK_VOICES = ("en-us", "en-gb")
WARMUP_TEXT = "Hello."


class VoiceConfigError(ValueError):
    """TTS_ENGINE/TTS_VOICE name something that cannot be served."""


@dataclass(frozen=True)
class VoicePlan:
    piper_model: Path
    espeak_binary: str | None        # None: espeak-ng is not installed
    espeak_voices: tuple[str, ...]
    default_voice: str
    onnx_threads: int = 1


def _espeak_languages(binary: str) -> set[str]:
    out = subprocess.run([binary, "--voices"], capture_output=True, text=True, timeout=30,
                         check=False).stdout
    return {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) >= 2}


def plan_voices(settings: TtsSettings) -> VoicePlan:
    """Resolve TTS_ENGINE/TTS_VOICE into the voices to load; raise VoiceConfigError."""
    voice = settings.voice
    espeak = find_espeak(settings.espeak_binary)
    piper_model = bundled_piper_voice()
    espeak_voices = list(ESPEAK_VOICES)

    if settings.engine == "piper":
        if voice and looks_like_path(voice):
            piper_model = Path(voice)          # existence checked by TtsSettings
        else:
            bundled = piper_voice_name(piper_model)
            if voice and voice not in (bundled, bundled.removeprefix("piper:")):
                raise VoiceConfigError(
                    f"TTS_VOICE={voice!r}: unknown Piper voice; give the path of a .onnx "
                    f"voice or {bundled!r} (espeak-ng voices need TTS_ENGINE=espeak-ng)"
                )
        default = piper_voice_name(piper_model)
    else:
        if espeak is None:
            raise VoiceConfigError(
                f"TTS_ENGINE=espeak-ng: {settings.espeak_binary!r} is not installed"
            )
        if voice and looks_like_path(voice):
            raise VoiceConfigError(
                f"TTS_VOICE={voice!r} is a Piper voice file but TTS_ENGINE=espeak-ng"
            )
        language = voice.removeprefix("espeak-ng:") or ESPEAK_VOICES[0]
        if language not in _espeak_languages(espeak):
            raise VoiceConfigError(
                f"TTS_VOICE={voice!r}: espeak-ng has no voice {language!r} "
                f"(see `espeak-ng --voices`)"
            )
        if language not in espeak_voices:
            espeak_voices.insert(0, language)
        default = f"espeak-ng:{language}"
    if espeak is None:
        log.warning("%s not found: only Piper voices are offered", settings.espeak_binary)
    return VoicePlan(piper_model, espeak, tuple(espeak_voices) if espeak else (), default,
                     settings.onnx_threads)


@dataclass
class VoiceCatalog:
    """The loaded engines by voice name; empty until `load` finished."""

    plan: VoicePlan
    engines: dict[str, Engine] = field(default_factory=dict)
    ready: bool = False
    # The default Piper voice, loaded and warmed already (the dev warm parent's spare).
    loaded_piper: PiperEngine | None = None

    @property
    def default_voice(self) -> str:
        return self.plan.default_voice

    def voices(self) -> list[VoiceInfo]:
        return [engine.voice for engine in self.engines.values()]

    def get(self, name: str) -> Engine | None:
        return self.engines.get(name or self.plan.default_voice)

    async def load(self) -> None:
        started = time.perf_counter()
        piper, self.loaded_piper = self.loaded_piper, None
        if piper is None:
            piper = await asyncio.to_thread(PiperEngine, self.plan.piper_model,
                                            self.plan.onnx_threads)
            # One short synthesis: onnxruntime's first run allocates and optimizes, so the
            # first real request would otherwise pay for it.
            await piper.synthesize(WARMUP_TEXT)
        self.engines[piper.voice.name] = piper
        log.info("piper voice %s loaded from %s (%d Hz) in %.0f ms", piper.voice.name,
                 self.plan.piper_model, piper.voice.native_rate,
                 (time.perf_counter() - started) * 1000)
        if self.plan.espeak_binary is not None:
            for language in self.plan.espeak_voices:
                engine = EspeakEngine(self.plan.espeak_binary, language)
                await engine.probe()
                self.engines[engine.voice.name] = engine
            log.info("espeak-ng voices: %s", ", ".join(self.plan.espeak_voices))
        if self.plan.default_voice not in self.engines:
            raise RuntimeError(f"default voice {self.plan.default_voice} did not load")
        self.ready = True
