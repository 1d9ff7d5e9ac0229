"""Speaker and line conditions for evaluation audio: the standard ASR data augmentations.

One natural TTS voice is one speaker; ASR evaluations and training sets get speaker and
channel variety from it the standard way, and these are those, done by SoX (the `sox`
command, 14.4; the `sox` apt package) rather than by hand:

- speed perturbation (Kaldi's `sox speed`, factors 0.9 / 1.1 in its recipes): the audio
  played faster or slower, so the speaking rate, the pitch and the formants (the vocal
  tract's length) all move together, as in a different speaker;
- pitch shift (`sox pitch CENTS`): pitch and formants up or down at the same speaking rate;
- tempo (`sox tempo FACTOR`): a faster or slower talker with the same voice;
- a telephone line: white noise at a stated signal-to-noise ratio (over the speech, seeded,
  so a run is repeatable) and the PSTN voice band, 300-3400 Hz (`sox sinc 300-3400`),
  before the G.711 coding the caller's audio always gets (not here: the caller of
  `telephone` does it).

Audio is float32 mono in -1..1 at any rate; each function returns the same rate.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

SOX = "sox"
SOX_TIMEOUT_S = 30.0
# The PSTN voice band (ITU-T G.712's 300-3400 Hz).
VOICE_BAND_HZ = (300, 3400)


class SoxError(RuntimeError):
    """sox is missing or refused the effect."""


def sox_available() -> bool:
    return shutil.which(SOX) is not None


def sox_effect(audio: np.ndarray, rate: int, *effect: str) -> np.ndarray:
    """`audio` through `sox EFFECT...`, back at `rate` (sox resamples where the effect
    changes the rate, e.g. `speed`)."""
    if not sox_available():
        raise SoxError("sox is not installed (apt-get install sox)")
    raw = ["-t", "raw", "-r", str(rate), "-e", "floating-point", "-b", "32", "-c", "1"]
    done = subprocess.run(
        [SOX, "-q", "-D", *raw, "-", *raw, "-", *effect, "rate", "-v", str(rate)],
        input=np.asarray(audio, dtype="<f4").tobytes(), capture_output=True,
        timeout=SOX_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise SoxError(f"sox {' '.join(effect)}: {done.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)


def speed(audio: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """Kaldi's speed perturbation: `factor` 1.1 is 10% faster and higher."""
    return sox_effect(audio, rate, "speed", f"{factor:g}")


def pitch(audio: np.ndarray, rate: int, cents: int) -> np.ndarray:
    """Pitch and formants moved by `cents` (100 a semitone), the speaking rate kept."""
    return sox_effect(audio, rate, "pitch", str(cents))


def tempo(audio: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """The speaking rate times `factor`, the voice kept (SoX's WSOLA)."""
    return sox_effect(audio, rate, "tempo", "-s", f"{factor:g}")


def with_noise(audio: np.ndarray, snr_db: float, seed: int,
               speech: np.ndarray | None = None) -> np.ndarray:
    """White Gaussian noise at `snr_db` below the power of `speech` (default: the non-silent
    samples of `audio`, so silence around an utterance does not lower the speech level)."""
    reference = audio if speech is None else speech
    active = reference[np.abs(reference) > 1e-4]
    power = float(np.mean(np.square(active, dtype=np.float64))) if active.size else 0.0
    noise = np.random.default_rng(seed).standard_normal(len(audio))
    return (audio + noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def voice_band(audio: np.ndarray, rate: int) -> np.ndarray:
    """The telephone channel's 300-3400 Hz pass band (SoX's windowed-sinc filter)."""
    low, high = VOICE_BAND_HZ
    return sox_effect(audio, rate, "sinc", f"{low}-{high}")


@dataclass(frozen=True)
class Condition:
    """A speaker and line condition applied to one voice's audio; `describe` says what."""

    name: str
    speed: float = 1.0
    pitch_cents: int = 0
    tempo: float = 1.0
    snr_db: float | None = None     # None: a clean line (no noise, no band filter)

    def describe(self) -> str:
        parts = []
        if self.speed != 1.0:
            parts.append(f"Kaldi speed perturbation x{self.speed:g} (sox speed: rate, pitch "
                         "and formants together)")
        if self.pitch_cents:
            parts.append(f"pitch and formants {self.pitch_cents:+d} cents at the same rate "
                         "(sox pitch)")
        if self.tempo != 1.0:
            parts.append(f"speaking rate x{self.tempo:g}, the same voice (sox tempo)")
        if self.snr_db is not None:
            parts.append(f"white line noise at {self.snr_db:g} dB SNR, then the "
                         f"{VOICE_BAND_HZ[0]}-{VOICE_BAND_HZ[1]} Hz band (sox sinc)")
        return ", ".join(parts) or "as synthesised"

    def speaker(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """The speaker part (rate, pitch), at the voice's own rate, before the line."""
        if self.speed != 1.0:
            audio = speed(audio, rate, self.speed)
        if self.pitch_cents:
            audio = pitch(audio, rate, self.pitch_cents)
        if self.tempo != 1.0:
            audio = tempo(audio, rate, self.tempo)
        return audio

    def line(self, audio: np.ndarray, rate: int, seed: int,
             speech: np.ndarray | None = None) -> np.ndarray:
        """The line part (noise, band), on the padded audio as the line carries it."""
        if self.snr_db is None:
            return audio
        return voice_band(with_noise(audio, self.snr_db, seed, speech), rate)


# The conversation benchmark's headline speakers: the targets' TTS (Piper joe) as several
# callers on several lines. Kaldi's speed perturbation both ways (0.9 / 1.1: rate, pitch and
# formants together), a higher voice at the same rate, a faster talker with the same voice,
# and a noisy band-limited telephone line.
PIPER_CONDITIONS = (
    Condition("as is"),
    Condition("speed 0.9", speed=0.9),
    Condition("speed 1.1", speed=1.1),
    Condition("pitch +300", pitch_cents=300),
    Condition("tempo 1.2", tempo=1.2),
    Condition("line 20 dB", snr_db=20.0),
)
