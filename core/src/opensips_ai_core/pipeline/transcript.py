"""What happened in a call, turn by turn: the transcript kept in memory for every call.

It records what the recognizer heard (every final transcript, DTMF entries), each bot
turn (what it answered, the words it actually sent to the caller, whether the caller
cut it off, its latency from the end of the caller's speech to its first RTP packet),
transfers and how the call ended. Times are seconds from the call's start on the
monotonic clock the turn timers and the media use (`time.perf_counter`), so they line
up with the call's recording (recording/audio.py).

`to_dict()` is what `GET /calls/{id}/transcript`, the JSON file and the post-call
webhook carry. Turns are rendered when asked, so a turn's first packet that is sent
after its work ended still shows.
"""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any

from opensips_ai_core.pipeline.timing import TurnTimer
from opensips_ai_core.signalling.base import CallInfo

if TYPE_CHECKING:
    from opensips_ai_core.pipeline.turn import Turn

DTMF_PREFIX = "[DTMF "
# Bounds, so that a caller who talks for hours cannot grow it without limit.
MAX_TURNS = 2000
MAX_EVENTS = 5000


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="milliseconds")


class Transcript:
    def __init__(self, info: CallInfo) -> None:
        self.info = info
        self.started_wall = time.time()
        self.started = time.perf_counter()
        self._turns: list[tuple[Turn, bool]] = []  # (turn, cut off while playing)
        self.events: list[dict[str, Any]] = []
        self.end_reason: str | None = None
        self.ended_by_bot: str | None = None
        self.ended_wall: float | None = None
        self.duration_s: float | None = None

    def offset(self, when: float | None = None) -> float:
        """Seconds from the call's start of a `time.perf_counter()` instant (now: None)."""
        return round((time.perf_counter() if when is None else when) - self.started, 3)

    def _event(self, kind: str, **fields: Any) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append({"t_s": self.offset(), "type": kind, **fields})

    # ---------------------------------------------------------------- recording
    def heard(self, text: str, timer: TurnTimer | None = None) -> None:
        """A finished caller utterance (a final transcript, or a DTMF entry)."""
        fields: dict[str, Any] = {"text": text}
        if timer is not None and timer.speech_end is not None:
            fields["speech_end_s"] = self.offset(timer.speech_end)
        if text.startswith(DTMF_PREFIX):
            self._event("dtmf", digits=text[len(DTMF_PREFIX):].rstrip("]"))
        else:
            self._event("heard", **fields)

    def turn_ended(self, turn: Turn) -> None:
        if len(self._turns) < MAX_TURNS:
            self._turns.append((turn, False))

    def cut_off(self, turn: Turn) -> None:
        """The caller talked over a turn whose reply was generated in full."""
        for index, (known, _) in enumerate(self._turns):
            if known is turn:
                self._turns[index] = (turn, True)

    def barge_in(self, why: str) -> None:
        self._event("barge_in", why=why)

    def bot_hangs_up(self, why: str) -> None:
        self.ended_by_bot = why
        self._event("bot_hangup", why=why)

    def transfer(self, target: str, ok: bool, code: int | None, reason: str) -> None:
        self._event("transfer", target=target, ok=ok, code=code, reason=reason)

    def end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
            self.ended_wall = time.time()
            self.duration_s = round(time.perf_counter() - self.started, 3)

    # ---------------------------------------------------------------- reading
    def _turn(self, index: int, turn: Turn, cut_off: bool) -> dict[str, Any]:
        from opensips_ai_core.pipeline.turn import TurnState

        timer = turn.timer
        done = turn.state is TurnState.DONE
        said = turn.reply if done else " ".join(turn.spoken)
        entry: dict[str, Any] = {
            "index": index,
            "kind": timer.kind,
            "heard": turn.user_text or None,
            "said": said,
            "outcome": turn.state.value,
            "interrupted": cut_off or turn.state is TurnState.INTERRUPTED,
            "first_audio_s": self.offset(timer.first_rtp) if timer.first_rtp else None,
        }
        if turn.tool_calls:
            entry["tool_calls"] = [{"name": name, "arguments": arguments, "outcome": outcome}
                                   for name, arguments, outcome in turn.tool_calls]
        if turn.user_text.startswith(DTMF_PREFIX):
            entry["dtmf"] = turn.user_text[len(DTMF_PREFIX):].rstrip("]")
        if timer.speech_end is not None:
            entry["speech_end_s"] = self.offset(timer.speech_end)
        base = timer.speech_end if timer.speech_end is not None else timer.asr_final
        entry["latency_ms"] = (round((timer.first_rtp - base) * 1000.0)
                               if base is not None and timer.first_rtp is not None else None)
        entry["stages_ms"] = {k: round(v) for k, v in timer.breakdown_ms().items()}
        return entry

    @property
    def turns(self) -> list[dict[str, Any]]:
        return [self._turn(i, turn, cut) for i, (turn, cut) in enumerate(self._turns)]

    def to_dict(self) -> dict[str, Any]:
        info = self.info
        turns = self.turns
        latencies = [t["latency_ms"] for t in turns if t["latency_ms"] is not None
                     and t["kind"] == "reply"]
        return {
            "call_id": info.call_id,
            "sip_call_id": info.sip_call_id or info.call_id,
            "backend": info.backend,
            "direction": info.direction,
            "caller": info.caller,
            "callee": info.callee,
            "started_at": _iso(self.started_wall),
            "ended_at": _iso(self.ended_wall) if self.ended_wall is not None else None,
            "duration_s": (self.duration_s if self.duration_s is not None
                           else self.offset()),
            "ended": self.end_reason,
            "ended_by": ("bot" if self.ended_by_bot else
                         None if self.end_reason is None else "signalling"),
            "bot_hangup_reason": self.ended_by_bot,
            "turn_latency_ms": latencies,
            "turns": turns,
            "events": list(self.events),
        }
