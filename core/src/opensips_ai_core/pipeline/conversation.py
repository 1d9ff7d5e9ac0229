"""One call's conversation: caller audio -> ASR -> LLM -> sentences -> TTS -> RTP.

`Call` wires the parts and owns the call's lifecycle; each job is a part of its own:

- `recognition.Recognition`: audio to the ASR stream, its events to caller events;
- `replies.Replies`: the current and the prepared turn, barge-in, the history entries;
- `turn.Turn`: one reply as a handle with explicit states;
- `generation.Generation`: LLM -> sentences -> TTS with retries;
- `dtmf.DtmfCollector`: keypad digits joined into one entry;
- `limits.CallLimits`: maximum duration and the caller's silence;
- `history.History`: the dialogue, fitted to the LLM's limits;
- `transfer`: which reply asks for a blind transfer, and to whom.

An outbound call's bot waits for the callee's first words (its greeting answers
them) or `outbound_greeting_wait_s` of silence before it greets. A reply that asks for
a transfer hands the caller on once it has played (`transfer`, set by the call
manager); when that fails the bot says `transfer_failed` and the conversation goes on.

The services and the media come in as `protocols` (tests use in-process fakes).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.dtmf import DtmfCollector
from opensips_ai_core.pipeline.generation import Generation
from opensips_ai_core.pipeline.history import History
from opensips_ai_core.pipeline.limits import CallLimits
from opensips_ai_core.pipeline.protocols import MediaPort, Services
from opensips_ai_core.pipeline.recognition import Recognition
from opensips_ai_core.pipeline.replies import Replies
from opensips_ai_core.pipeline.timing import TurnTimer
from opensips_ai_core.pipeline.transcript import Transcript
from opensips_ai_core.pipeline.turn import Turn
from opensips_ai_core.signalling.base import CallInfo, TransferResult
from opensips_ai_core.tasks import TaskSet
from voice_common import get_development_logger
from voice_common.logs import call_id_var

__all__ = ["Call", "CallState", "Services"]

log = get_development_logger("core.call")


class CallState(enum.StrEnum):
    NEW = "new"
    ACTIVE = "active"
    CLOSED = "closed"


class Call:
    def __init__(self, info: CallInfo, media: MediaPort, services: Services, bot: BotConfig,
                 hangup: Callable[[str], Awaitable[None]]) -> None:
        self.info = info
        self.media = media
        self.services = services
        self.bot = bot
        self._hangup = hangup
        self.state = CallState.NEW
        self._tasks = TaskSet(log, "call")
        self.dialogue = History(bot.llm_system_prompt(), bot.max_history_turns)
        self.transcript = Transcript(info)
        self.generation = Generation(info.call_id, services.llm, services.tts, bot)
        self.replies = Replies(info.call_id, media, self.dialogue, self.generation, bot,
                               on_goodbye=self._goodbye, on_transfer=self._transfer_requested,
                               transcript=self.transcript)
        self.recognition = Recognition(info.call_id, services.asr, bot, self)
        self.dtmf = DtmfCollector(info.call_id, bot.dtmf_flush_s, self._dtmf_entry)
        self.limits = CallLimits(info.call_id, bot, bot_is_talking=self.bot_is_talking,
                                 prompt=self._prompt, say_and_hang_up=self._say_and_hang_up)
        # Blind transfer to a SIP URI (set by the call manager where the backend can).
        self.transfer: Callable[[str], Awaitable[TransferResult]] | None = None
        self.awaiting_hello = False  # an outbound call: greet once the callee spoke
        # Set by the caller's events (speech, words, keys, an utterance): wakes the
        # outbound greeting's wait, which then looks at the clock again.
        self._caller_stirred = asyncio.Event()

    @property
    def call_id(self) -> str:
        return self.info.call_id

    @property
    def history(self) -> list[tuple[str, str]]:
        return self.dialogue.entries

    @property
    def turn(self) -> Turn | None:
        return self.replies.current

    @property
    def prepared(self) -> Turn | None:
        return self.replies.prepared

    @property
    def turns_done(self) -> list[TurnTimer]:
        return self.replies.turns_done

    @property
    def ending(self) -> bool:
        return self.replies.ending

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Answered: open the ASR stream, greet, watch the limits."""
        token = call_id_var.set(self.call_id)
        try:
            self.state = CallState.ACTIVE
            self.recognition.start()
            self._spawn(self.limits.watch(self._watching), "limits")
            if self.info.direction == "outbound":
                self.awaiting_hello = True
                self._spawn(self._greet_after_hello(), "greet")
            else:
                self.replies.start(TurnTimer(kind="greeting"), fixed_text=self.bot.greeting)
        finally:
            call_id_var.reset(token)

    async def _greet_after_hello(self) -> None:
        """Outbound: greet after the callee's first words, or after a short silence.

        Sleeps until the silence would be long enough, or until the caller's next event
        (`_caller_stirred`) moves that point on; the hello itself (`caller_said`)
        greets and ends the wait."""
        wait_s = self.bot.outbound_greeting_wait_s
        limits = self.limits
        while self.state is CallState.ACTIVE and self.awaiting_hello:
            spoke = limits.last_caller_activity != limits.started
            # Nobody spoke: greet into the silence. Words began but no final transcript
            # came: greet anyway, a little later.
            quiet_enough = limits.last_caller_activity + (wait_s + 3.0 if spoke else wait_s)
            left_s = quiet_enough - time.monotonic()
            if left_s <= 0:
                break
            self._caller_stirred.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._caller_stirred.wait(), left_s)
        if self.state is CallState.ACTIVE and self.awaiting_hello:
            self.awaiting_hello = False
            self.replies.start(TurnTimer(kind="greeting"), fixed_text=self.bot.greeting)

    def _watching(self) -> bool:
        return self.state is CallState.ACTIVE and not self.ending

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._tasks.spawn(coro, name=f"{name}:{self.call_id}")

    async def close(self, reason: str) -> None:
        """The call is over (either side): stop everything, release nothing twice."""
        if self.state is CallState.CLOSED:
            return
        self.state = CallState.CLOSED
        self.transcript.end(reason)
        log.info("Call %s closed (%s) after %.1f s, %d turns", self.call_id, reason,
                 self.limits.duration_s(), len(self.turns_done))
        self.dtmf.close()
        await self.replies.close()
        await self.recognition.close()
        # Never cancel the task we run in (the bot's own hang-up comes from a call task).
        await self._tasks.cancel_all(keep=asyncio.current_task())

    def _goodbye(self) -> None:
        self._spawn(self.end_by_bot("goodbye"), "hangup")

    async def end_by_bot(self, why: str) -> None:
        """Hang up once the last queued audio has played."""
        if self.ending or self.state is not CallState.ACTIVE:
            return
        self.replies.ending = True
        await self.media.wait_idle()
        log.info("Call %s: bot hangs up (%s)", self.call_id, why)
        self.transcript.bot_hangs_up(why)
        await self._hangup(self.call_id)

    # ----------------------------------------------------------------- the caller
    def on_audio(self, pcm16: np.ndarray) -> None:
        """A decoded inbound frame (PCM16, 8 kHz) from the RTP session."""
        if self.state is CallState.ACTIVE:
            self.recognition.on_audio(pcm16)

    def on_dtmf(self, digit: str) -> None:
        metrics.DTMF_DIGITS.inc()
        self.limits.caller_active()
        self._caller_stirred.set()
        log.info("Call %s DTMF %s", self.call_id, digit)
        self.dtmf.add(digit)

    def _dtmf_entry(self, digits: str) -> None:
        token = call_id_var.set(self.call_id)
        try:
            self.caller_said(f"[DTMF {digits}]")
        finally:
            call_id_var.reset(token)

    def caller_said(self, text: str, timer: TurnTimer | None = None) -> None:
        """A finished caller utterance: interrupt the bot if it talks, then reply."""
        log.info("Call %s caller: %r", self.call_id, text)
        self.transcript.heard(text, timer)
        if self.awaiting_hello and self.state is CallState.ACTIVE:
            # The callee's "hello": it goes into the history and the greeting answers it.
            self.awaiting_hello = False
            self._caller_stirred.set()
            self.dialogue.add_user(text)
            self.replies.start(TurnTimer(kind="greeting"), fixed_text=self.bot.greeting)
            return
        self.barge_in("new utterance")
        if self.state is CallState.ACTIVE:
            self.replies.start(timer or TurnTimer(), user_text=text)

    def barge_in(self, why: str) -> None:
        self.replies.barge_in(why)

    def bot_is_talking(self) -> bool:
        return self.replies.bot_is_talking()

    # recognition.Listener
    def speech_started(self) -> None:
        self.limits.caller_active()
        self._caller_stirred.set()
        if self.bot.barge_in_min_words == 0:
            self.barge_in("speech start")

    def speech_without_partials(self) -> None:
        if self.bot.barge_in_min_words > 0:  # at 0 speech_started did
            self.barge_in("speech start (the ASR sends no partials)")

    def stream_broke(self) -> bool:
        if not self.replies.commit_held():
            return False
        self.limits.caller_spoke()
        return True

    def words_heard(self, text: str) -> None:
        self.limits.caller_active()
        self._caller_stirred.set()
        self.replies.heard_more(text)
        if len(text.split()) >= max(1, self.bot.barge_in_min_words):
            self.barge_in("caller speech")

    def paused(self, text: str) -> None:
        # No reply is prepared to the callee's hello: the greeting answers it.
        if self.state is CallState.ACTIVE and not self.awaiting_hello:
            self.replies.prepare(text)

    def utterance(self, text: str, heard: TurnTimer) -> None:
        self.limits.caller_spoke()
        self._caller_stirred.set()
        if self.replies.commit_prepared(text, heard):
            self.transcript.heard(text, heard)
        else:
            self.caller_said(text, heard)

    # ----------------------------------------------------------------- the bot
    def on_first_packet(self) -> None:
        """The pacer sent the first packet of a talkspurt: the turn's audio is on the wire."""
        self.replies.on_first_packet()

    def _prompt(self, text: str) -> None:
        if self.state is CallState.ACTIVE:
            self.replies.start(TurnTimer(kind="prompt"), fixed_text=text)

    async def end_politely(self, text: str, why: str) -> None:
        """Say `text` (cutting the bot short if it is talking), then hang up (the end of a
        drain)."""
        if self.ending or self.state is not CallState.ACTIVE:
            return
        await self._say_and_hang_up(text, why)

    async def _say_and_hang_up(self, text: str, why: str) -> None:
        self.barge_in(why)
        if self.turn is not None:
            await self.turn.wait_for_work()
        if self.state is CallState.ACTIVE:
            goodbye = self.replies.start(TurnTimer(kind="goodbye"), fixed_text=text)
            if goodbye is not None:
                await goodbye.wait_for_work()
        await self.end_by_bot(why)

    # ----------------------------------------------------------------- transfer
    def _transfer_requested(self, target: str) -> bool:
        """A reply asked for a transfer: start it, unless the call cannot transfer."""
        if self.transfer is None:
            return False
        self._spawn(self._transfer_to(target), "transfer")
        return True

    async def _transfer_to(self, target: str) -> None:
        """After the reply played: REFER the caller; on failure say so, the call goes on."""
        assert self.transfer is not None
        await self.media.wait_idle()
        if self.state is not CallState.ACTIVE or self.ending:
            return
        log.info("Call %s: transferring to %s", self.call_id, target)
        result = await self.transfer(target)
        if result.ok or self.state is not CallState.ACTIVE:
            return
        log.info("Call %s: transfer to %s failed (%s)", self.call_id, target, result.reason)
        self._prompt(self.bot.transfer_failed)

    def snapshot(self) -> dict[str, object]:
        """For the /calls endpoint and dev-status."""
        return {
            "call_id": self.call_id,
            "backend": self.info.backend,
            "caller": self.info.caller,
            "state": str(self.state),
            "duration_s": round(self.limits.duration_s(), 1),
            "bot_talking": self.bot_is_talking(),
            "turns": len(self.turns_done),
            "asr_reconnects": self.recognition.reconnects,
            "history": [{"role": r, "content": c} for r, c in self.history],
            "last_turn_ms": self.turns_done[-1].breakdown_ms() if self.turns_done else {},
        }
