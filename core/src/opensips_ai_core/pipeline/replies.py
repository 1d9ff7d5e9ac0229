"""The bot's side of the dialogue: which turn plays, which waits prepared, what each leaves.

One turn plays at a time (`current`). A new one interrupts it (barge-in): the pacer's
queue is cleared and the turn's LLM and TTS RPCs are cancelled; its reply stays in the
history marked as cut off. Replies are prepared ahead: at the recognizer's PAUSE the
turn for the hypothesis so far starts held (`prepared`); if the final transcript says
the same words it is committed and plays at once, otherwise it is discarded without a
trace in the history. (LiveKit Agents calls this preemptive generation.)

A reply that ended asks, in this order, for a blind transfer (`transfer.py`: the
conversation starts it once the reply has played) or for the end of the call (goodbye).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.generation import Generation
from opensips_ai_core.pipeline.history import TRUNCATED, History
from opensips_ai_core.pipeline.protocols import MediaPort
from opensips_ai_core.pipeline.timing import TurnTimer
from opensips_ai_core.pipeline.transcript import Transcript
from opensips_ai_core.pipeline.transfer import transfer_target
from opensips_ai_core.pipeline.turn import Turn, TurnState
from voice_common import get_development_logger

log = get_development_logger("core.replies")


class Replies:
    def __init__(self, call_id: str, media: MediaPort, history: History,
                 generation: Generation, bot: BotConfig, *,
                 on_goodbye: Callable[[], None],
                 on_transfer: Callable[[str], bool] | None = None,
                 transcript: Transcript | None = None) -> None:
        self.call_id = call_id
        self.media = media
        self.history = history
        self.generation = generation
        self.bot = bot
        self._on_goodbye = on_goodbye
        # Starts a transfer to the SIP URI; False when the call cannot transfer.
        self._on_transfer = on_transfer
        self.transcript = transcript  # what each turn said and how it ended
        self.current: Turn | None = None
        self.prepared: Turn | None = None  # held, waiting for the final transcript
        self.turns_done: list[TurnTimer] = []
        self.ending = False  # the bot hangs up: the caller no longer interrupts it
        self.closed = False  # the call is over: no new turns

    def bot_is_talking(self) -> bool:
        turn = self.current
        return (turn is not None and turn.working) or self.media.is_speaking

    # ---------------------------------------------------------------- starting turns
    def start(self, timer: TurnTimer, *, user_text: str | None = None,
              fixed_text: str | None = None) -> Turn | None:
        """A new current turn: the reply to `user_text` (added to the history), or
        `fixed_text` spoken as it is."""
        if self.closed:
            return None
        if user_text is not None:
            self.history.add_user(user_text)
        turn = Turn(self.call_id, self.media, timer, messages=self.history.for_llm(),
                    user_text=user_text or "")
        self.current = turn
        if fixed_text is not None:
            turn.start(functools.partial(self.generation.say, text=fixed_text), self._ended)
        else:
            turn.start(self.generation.reply, self._ended)
        return turn

    def prepare(self, text: str) -> None:
        """The caller paused: start the reply to what was heard so far, held."""
        text = text.strip()
        if not text or not self.bot.prepare_on_pause or self.closed or self.ending:
            return
        if self.prepared is not None and same_utterance(self.prepared.user_text, text):
            return
        self.discard_prepared("new hypothesis")
        turn = Turn(self.call_id, self.media, TurnTimer(), held=True, user_text=text,
                    messages=self.history.for_llm(extra_user=text))
        self.prepared = turn
        log.debug("Call %s preparing a reply to %r", self.call_id, text)
        turn.start(self.generation.reply, self._ended)

    def heard_more(self, text: str) -> None:
        """A partial transcript: the prepared reply goes if the caller spoke on."""
        prepared = self.prepared
        if prepared is not None and not same_utterance(prepared.user_text, text):
            self.discard_prepared("the caller spoke on")

    def discard_prepared(self, why: str) -> None:
        turn, self.prepared = self.prepared, None
        if turn is None:
            return
        turn.discard()
        metrics.PREPARED_REPLIES.labels("discarded").inc()
        log.debug("Call %s prepared reply to %r dropped (%s)", self.call_id, turn.user_text,
                  why)

    def commit_prepared(self, text: str, heard: TurnTimer) -> bool:
        """The final transcript matches the prepared reply: make it the turn, play it.
        False when there is none that matches (one that differs is discarded)."""
        turn = self.prepared
        if turn is None:
            return False
        if not same_utterance(turn.user_text, text):
            self.discard_prepared("the final transcript differs")
            return False
        self.prepared = None
        log.info("Call %s caller: %r (reply prepared at the pause)", self.call_id, text)
        self.barge_in("new utterance")
        self.history.add_user(text)
        turn.user_text = text  # as the final said it
        turn.timer.mark("asr_final", heard.asr_final)
        turn.timer.speech_end = heard.speech_end
        self.current = turn
        metrics.PREPARED_REPLIES.labels("used").inc()
        turn.commit()
        return True

    def commit_held(self) -> bool:
        """The ASR stream broke before the final: the reply held for the PAUSE answers
        what the PAUSE heard. False when none is held."""
        turn = self.prepared
        if turn is None or self.closed:
            return False
        heard = TurnTimer()
        heard.mark("asr_final")
        if not self.commit_prepared(turn.user_text, heard):
            return False
        if self.transcript is not None:
            self.transcript.heard(turn.user_text, heard)
        return True

    # ---------------------------------------------------------------- barge-in
    def barge_in(self, why: str) -> None:
        """The caller talks over the bot: silence it, cancel what it still generates."""
        if not self.bot_is_talking() or self.ending:
            return
        turn = self.current
        still_playing = self.media.is_speaking
        self.media.clear()
        cancelled: list[str] = []
        if turn is not None and turn.working:
            cancelled = turn.interrupt()
        elif turn is not None and still_playing and turn.history_index is not None:
            # Fully generated but not fully heard: the history says it was cut off.
            self.history.mark_cut_off(turn.history_index)
            if self.transcript is not None:
                self.transcript.cut_off(turn)
        if self.transcript is not None:
            self.transcript.barge_in(why)
        metrics.BARGE_INS.inc()
        log.info("Call %s barge-in (%s): playback cleared; cancelled streams: %s", self.call_id,
                 why, ", ".join(cancelled) or "none")

    # ---------------------------------------------------------------- endings
    def _ended(self, turn: Turn) -> None:
        """A committed turn ended: metrics, its reply into the history, transfer or
        goodbye."""
        outcome = turn.state
        metrics.TURNS.labels(turn.timer.kind, outcome.value).inc()
        if turn.timer.kind == "reply" or turn.spoken:
            done = outcome is TurnState.DONE
            text = turn.reply if done else " ".join(turn.spoken)
            if not done and text:
                text += TRUNCATED
            if text:
                turn.history_index = self.history.add_assistant(text)
        self.turns_done.append(turn.timer)
        if self.transcript is not None:
            self.transcript.turn_ended(turn)
        if outcome is not TurnState.DONE:
            return
        if self._transfers(turn):
            return
        if turn.hang_up or self._is_goodbye(turn.reply) or self._caller_said_goodbye(turn):
            self._on_goodbye()

    def _transfers(self, turn: Turn) -> bool:
        """Whether the reply (or its `transfer` tool call) asks for a transfer that the
        call has started."""
        if self._on_transfer is None:
            return False
        target = turn.transfer_to or transfer_target(self.bot, turn.reply)
        return target is not None and self._on_transfer(target)

    def _caller_said_goodbye(self, turn: Turn) -> bool:
        """The caller's words of a reply turn held a goodbye phrase (not the marker: that
        is the bot's)."""
        if not self.bot.caller_goodbye_ends_call or turn.timer.kind != "reply":
            return False
        heard = turn.user_text.lower()
        return any(phrase.lower() in heard for phrase in self.bot.goodbye_phrases)

    def _is_goodbye(self, text: str) -> bool:
        lowered = text.lower()
        if self.bot.goodbye_marker and self.bot.goodbye_marker.lower() in lowered:
            return True
        return any(phrase.lower() in lowered for phrase in self.bot.goodbye_phrases)

    def on_first_packet(self) -> None:
        """The pacer sent the first packet of a talkspurt: the turn's audio is on the wire."""
        turn = self.current
        if turn is None or turn.timer.first_rtp is not None:
            return
        turn.timer.mark("first_rtp")
        turn.timer.report(self.call_id)

    async def close(self) -> None:
        """No more turns; the current one is cancelled (unless it is the caller's own
        task: the bot's hang-up runs in one) and the prepared one dropped."""
        self.closed = True
        current = asyncio.current_task()
        task = self.current.task if self.current is not None else None
        if task is not None and task is not current:
            task.cancel()
        self.discard_prepared("call closed")
        if task is not None and task is not current:
            await asyncio.gather(task, return_exceptions=True)


def same_utterance(a: str, b: str) -> bool:
    """Whether two transcripts say the same words (case and spacing aside)."""
    return a.lower().split() == b.lower().split()
