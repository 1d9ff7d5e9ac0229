"""Per-turn timestamps: speech end, ASR final, LLM first token, TTS first audio, first RTP."""

from __future__ import annotations

import time
from dataclasses import dataclass

from opensips_ai_core import metrics
from voice_common import get_development_logger

log = get_development_logger("core.turn")

STAGES = ("asr_final", "llm_first_token", "tts_first_audio", "first_rtp")


@dataclass
class TurnTimer:
    """Monotonic times (time.perf_counter) of one turn's milestones; None until reached."""

    kind: str = "reply"
    speech_end: float | None = None
    asr_final: float | None = None
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    first_rtp: float | None = None

    def mark(self, stage: str, when: float | None = None) -> None:
        if getattr(self, stage) is None:
            setattr(self, stage, time.perf_counter() if when is None else when)

    def breakdown_ms(self) -> dict[str, float]:
        """Milliseconds from the end of speech to each reached stage."""
        base = self.speech_end if self.speech_end is not None else self.asr_final
        if base is None:
            return {}
        return {stage: (getattr(self, stage) - base) * 1000.0
                for stage in STAGES if getattr(self, stage) is not None}

    def report(self, call_id: str) -> None:
        """Log with the development logger's performance line and export to Prometheus."""
        base = self.speech_end if self.speech_end is not None else self.asr_final
        if base is None or self.first_rtp is None:
            return
        log.debug_performance(f"turn {call_id} speech_end->first_rtp", base, self.first_rtp)
        for stage, ms in self.breakdown_ms().items():
            metrics.STAGE_LATENCY.labels(stage).observe(ms / 1000.0)
        metrics.TURN_LATENCY.observe(self.first_rtp - base)
        parts = " ".join(f"{k}={v:.0f}ms" for k, v in self.breakdown_ms().items())
        log.info("Turn timing %s: %s", call_id, parts)
