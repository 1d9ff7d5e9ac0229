"""Per-turn timestamps: speech end, ASR final, LLM first token, TTS first audio, first RTP."""

from __future__ import annotations

import time
from dataclasses import dataclass

from opensips_ai_core import metrics
from voice_common import get_development_logger

log = get_development_logger("core.turn")

STAGES = ("asr_final", "llm_first_token", "tts_request", "tts_first_audio", "first_rtp")


@dataclass
class TurnTimer:
    """Monotonic times (time.perf_counter) of one turn's milestones; None until reached."""

    kind: str = "reply"
    speech_end: float | None = None
    asr_final: float | None = None
    llm_first_token: float | None = None
    tts_request: float | None = None
    tts_first_audio: float | None = None
    first_rtp: float | None = None
    llm_server_ttft_ms: float | None = None  # the LLM service's own time to first token

    def mark(self, stage: str, when: float | None = None) -> None:
        if getattr(self, stage) is None:
            setattr(self, stage, time.perf_counter() if when is None else when)

    def core_share_ms(self) -> float | None:
        """The core's own part of the latency: everything but ASR, LLM and TTS compute.

        (ASR final -> first delta, less the LLM service's own time to first token)
        + (first TTS audio, or the final if that came later -> first RTP packet).
        """
        final, first_token, audio = self.asr_final, self.llm_first_token, self.tts_first_audio
        first_rtp, server_ttft = self.first_rtp, self.llm_server_ttft_ms
        if (final is None or first_token is None or self.tts_request is None or audio is None
                or first_rtp is None or server_ttft is None):
            return None
        llm_wait = (first_token - final) * 1000 - server_ttft
        # A reply prepared at a pause has its audio before the final: it may play from then.
        playout = (first_rtp - max(audio, final)) * 1000
        return max(0.0, llm_wait) + playout

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
        share = self.core_share_ms()
        if share is not None:
            parts += f" core_share={share:.1f}ms"
            metrics.CORE_SHARE.observe(share / 1000.0)
        log.info("Turn timing %s: %s", call_id, parts)
