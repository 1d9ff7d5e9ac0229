"""One call's conversation: caller audio -> ASR -> LLM -> sentences -> TTS -> RTP.

Frames of the caller's audio go to the call's ASR stream. A final transcript
starts a turn: the LLM streams the reply, each finished sentence goes to TTS at
once, and TTS audio is queued for the RTP pacer. Caller speech while the bot
talks is a barge-in: the outbound queue is cleared and the turn's LLM and TTS
RPCs are cancelled; the reply is kept in the history, marked as cut off.

Replies are prepared ahead: when the recognizer reports a PAUSE (a short silence,
before it has decided that the utterance ended) the turn for the hypothesis so far
starts at once, held: its LLM and TTS run but its audio waits. If the final
transcript has the same text the held turn is committed and its audio plays at
once; if it differs, or the caller speaks on, it is dropped without a trace in the
history. (LiveKit Agents calls this preemptive generation.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import numpy as np

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig
from opensips_ai_core.grpc_clients.asr import AsrClient, AsrSession
from opensips_ai_core.grpc_clients.channel import is_retryable
from opensips_ai_core.grpc_clients.llm import GenerationResult, LlmClient
from opensips_ai_core.grpc_clients.tts import TtsClient
from opensips_ai_core.pipeline.sentences import SentenceChunker
from opensips_ai_core.pipeline.timing import TurnTimer
from opensips_ai_core.signalling.base import CallInfo
from opensips_ai_core.tasks import TaskSet
from voice_common import get_development_logger
from voice_common.logs import call_id_var
from voiceai.asr.v1 import asr_pb2

log = get_development_logger("core.call")

SAMPLE_RATE = 8000
TRUNCATED = " [interrupted]"
# Phones with silence suppression send no RTP while the caller is quiet; the recognizer
# needs to hear that silence to end the utterance. After GAP_S without audio, up to
# GAP_FILL_S of silence is fed to ASR in GAP_STEP_S steps.
GAP_S = 0.2
GAP_STEP_S = 0.1
GAP_FILL_S = 1.5


class MediaPort(Protocol):
    """What the conversation needs of the call's RTP session."""

    is_speaking: bool

    def enqueue(self, pcm16: np.ndarray | bytes) -> None: ...
    def clear(self) -> None: ...
    async def wait_idle(self) -> None: ...


@dataclass
class Services:
    asr: AsrClient
    llm: LlmClient
    tts: TtsClient


@dataclass
class Turn:
    timer: TurnTimer
    task: asyncio.Task[None] | None = None
    spoken: list[str] = field(default_factory=list)
    reply: str = ""
    interrupted: bool = False
    # RPCs in flight, so a barge-in can say what it cancelled.
    llm_active: bool = False
    tts_active: bool = False
    history_index: int | None = None  # where its reply went in the call's history
    # The conversation the LLM is asked to continue, fixed when the turn starts.
    messages: list[tuple[str, str]] = field(default_factory=list)
    # A turn prepared on a pause: audio is held and nothing is recorded until committed.
    held: bool = False
    user_text: str = ""
    held_audio: list[np.ndarray | bytes] = field(default_factory=list)
    finished: str | None = None  # the outcome of a held turn that ended before its commit
    discarded: bool = False


class Call:
    def __init__(self, info: CallInfo, media: MediaPort, services: Services, bot: BotConfig,
                 hangup: Callable[[str], Awaitable[None]]) -> None:
        self.info = info
        self.media = media
        self.services = services
        self.bot = bot
        self._hangup = hangup
        self.history: list[tuple[str, str]] = []
        self.turn: Turn | None = None
        self.prepared: Turn | None = None  # held, waiting for the final transcript
        self.turns_done: list[TurnTimer] = []
        self.asr: AsrSession | None = None
        self.started = time.monotonic()
        self.last_caller_activity = self.started
        self.state = "new"
        self.ending = False
        self._tasks = TaskSet(log, "call")
        self._dtmf: list[str] = []
        self._dtmf_task: asyncio.Task[None] | None = None
        self._speech_end_hint: float | None = None
        self._last_audio: float | None = None
        self._gap_filled_s = 0.0
        self._silence_prompted = False

    @property
    def call_id(self) -> str:
        return self.info.call_id

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Answered: open the ASR stream, greet, watch the limits."""
        token = call_id_var.set(self.call_id)
        try:
            self.state = "active"
            self.asr = self.services.asr.session(
                self.call_id, self._on_asr, sample_rate=SAMPLE_RATE,
                language=self.bot.asr_language, phrases=self.bot.asr_phrases)
            self.asr.start()
            self._spawn(self._watch_limits(), "limits")
            self._spawn(self._fill_audio_gaps(), "gaps")
            self._start_turn(TurnTimer(kind="greeting"), fixed_text=self.bot.greeting)
        finally:
            call_id_var.reset(token)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._tasks.spawn(coro, name=f"{name}:{self.call_id}")

    async def close(self, reason: str) -> None:
        """The call is over (either side): stop everything, release nothing twice."""
        if self.state == "closed":
            return
        self.state = "closed"
        log.info("Call %s closed (%s) after %.1f s, %d turns", self.call_id, reason,
                 time.monotonic() - self.started, len(self.turns_done))
        # Never cancel the task we run in (the bot's own hang-up comes from a call task).
        current = asyncio.current_task()
        turn_task = self.turn.task if self.turn is not None else None
        if turn_task is not None and turn_task is not current:
            turn_task.cancel()
        self._discard_prepared("call closed")
        if self.asr is not None:
            await self.asr.close()
        await self._tasks.cancel_all(keep=current)
        if turn_task is not None and turn_task is not current:
            await asyncio.gather(turn_task, return_exceptions=True)

    # ----------------------------------------------------------------- inbound
    def on_audio(self, pcm16: np.ndarray) -> None:
        """A decoded inbound frame (PCM16, 8 kHz) from the RTP session."""
        if self.asr is None or self.state != "active":
            return
        self._last_audio = time.perf_counter()
        self._gap_filled_s = 0.0
        self.asr.send(pcm16.astype("<i2", copy=False).tobytes())

    async def _fill_audio_gaps(self) -> None:
        silence = bytes(int(SAMPLE_RATE * GAP_STEP_S) * 2)
        while self.state == "active":
            await asyncio.sleep(GAP_STEP_S)
            last = self._last_audio
            if (self.asr is None or last is None or self._gap_filled_s >= GAP_FILL_S
                    or time.perf_counter() - last < GAP_S):
                continue
            self.asr.send(silence)
            self._gap_filled_s += GAP_STEP_S

    def on_dtmf(self, digit: str) -> None:
        metrics.DTMF_DIGITS.inc()
        self.last_caller_activity = time.monotonic()
        self._dtmf.append(digit)
        log.info("Call %s DTMF %s", self.call_id, digit)
        if self._dtmf_task is not None:
            self._dtmf_task.cancel()
        delay = 0.0 if digit == "#" else self.bot.dtmf_flush_s
        self._dtmf_task = self._spawn(self._flush_dtmf(delay), "dtmf")

    async def _flush_dtmf(self, delay: float) -> None:
        await asyncio.sleep(delay)
        digits, self._dtmf = "".join(self._dtmf), []
        if digits:
            self.caller_said(f"[DTMF {digits}]")

    async def _on_asr(self, response: asr_pb2.RecognizeResponse) -> None:
        token = call_id_var.set(self.call_id)
        try:
            kind = response.WhichOneof("result")
            if kind == "speech":
                if response.speech.kind == asr_pb2.SpeechEvent.SPEECH_START:
                    self.last_caller_activity = time.monotonic()
                    if self.bot.barge_in_min_words == 0:
                        self.barge_in("speech start")
                elif response.speech.kind == asr_pb2.SpeechEvent.SPEECH_END:
                    self._speech_end_hint = time.perf_counter()
                elif response.speech.kind == asr_pb2.SpeechEvent.PAUSE:
                    self._prepare(response.speech.text)
            elif kind == "partial":
                words = response.partial.text.split()
                if words:
                    self.last_caller_activity = time.monotonic()
                    prepared = self.prepared
                    if prepared is not None and not same_utterance(prepared.user_text,
                                                                   response.partial.text):
                        self._discard_prepared("the caller spoke on")
                if words and len(words) >= max(1, self.bot.barge_in_min_words):
                    self.barge_in("caller speech")
            elif kind == "final":
                text = response.final.text.strip()
                if not text:
                    return
                self.last_caller_activity = time.monotonic()
                self._silence_prompted = False
                now = time.perf_counter()
                speech_end = self._speech_end(response.final, now)
                if self._commit_prepared(text, now, speech_end):
                    return
                timer = TurnTimer()
                timer.mark("asr_final", now)
                timer.speech_end = speech_end
                self.caller_said(text, timer)
        finally:
            call_id_var.reset(token)

    # ----------------------------------------------------------------- prepared replies
    def _prepare(self, text: str) -> None:
        """The caller paused: start the reply to what was heard so far, held."""
        text = text.strip()
        if not text or not self.bot.prepare_on_pause or self.state != "active" or self.ending:
            return
        if self.prepared is not None and same_utterance(self.prepared.user_text, text):
            return
        self._discard_prepared("new hypothesis")
        turn = Turn(timer=TurnTimer(), held=True, user_text=text,
                    messages=self._messages(extra_user=text))
        self.prepared = turn
        log.debug("Call %s preparing a reply to %r", self.call_id, text)
        turn.task = asyncio.create_task(self._run_turn(turn, None),
                                        name=f"prepared-turn:{self.call_id}")

    def _discard_prepared(self, why: str) -> None:
        turn, self.prepared = self.prepared, None
        if turn is None:
            return
        turn.discarded = True
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()
        metrics.PREPARED_REPLIES.labels("discarded").inc()
        log.debug("Call %s prepared reply to %r dropped (%s)", self.call_id, turn.user_text,
                  why)

    def _commit_prepared(self, text: str, asr_final: float, speech_end: float | None) -> bool:
        """The final transcript matches the prepared reply: make it the turn, play it."""
        turn = self.prepared
        if turn is None:
            return False
        if not same_utterance(turn.user_text, text):
            self._discard_prepared("the final transcript differs")
            return False
        self.prepared = None
        log.info("Call %s caller: %r (reply prepared at the pause)", self.call_id, text)
        self.barge_in("new utterance")
        self.history.append(("user", text))
        turn.timer.mark("asr_final", asr_final)
        turn.timer.speech_end = speech_end
        turn.held = False
        self.turn = turn
        for pcm in turn.held_audio:
            self.media.enqueue(pcm)
        turn.held_audio.clear()
        metrics.PREPARED_REPLIES.labels("used").inc()
        if turn.finished is not None:
            outcome = turn.finished
            self._finish_turn(turn, outcome)
            if outcome == "done":
                self._spawn(self._after_turn(turn), "after-turn")
        return True

    def caller_said(self, text: str, timer: TurnTimer | None = None) -> None:
        """A finished caller utterance: interrupt the bot if it talks, then reply."""
        log.info("Call %s caller: %r", self.call_id, text)
        self.barge_in("new utterance")
        self._start_turn(timer or TurnTimer(), user_text=text)

    def _speech_end(self, final: asr_pb2.Transcript, fallback: float | None) -> float | None:
        """Wall time of the end of speech: the ASR's audio offset mapped onto arrival time."""
        epoch = self.asr.epoch if self.asr is not None else None
        if epoch is not None and final.audio_end_s > 0:
            estimate = epoch + final.audio_end_s
            if fallback is None or estimate <= fallback:
                return estimate
        hint, self._speech_end_hint = self._speech_end_hint, None
        return hint if hint is not None else fallback

    # ----------------------------------------------------------------- turns
    def bot_is_talking(self) -> bool:
        running = self.turn is not None and self.turn.task is not None and not self.turn.task.done()
        return running or self.media.is_speaking

    def barge_in(self, why: str) -> None:
        if not self.bot_is_talking() or self.ending:
            return
        turn = self.turn
        still_playing = self.media.is_speaking
        self.media.clear()
        cancelled = []
        if turn is not None and turn.task is not None and not turn.task.done():
            turn.interrupted = True
            cancelled = [name for name, active in (("LLM", turn.llm_active),
                                                   ("TTS", turn.tts_active)) if active]
            turn.task.cancel()
        elif turn is not None and still_playing and turn.history_index is not None:
            # Fully generated but not fully heard: the history says it was cut off.
            role, text = self.history[turn.history_index]
            if not text.endswith(TRUNCATED):
                self.history[turn.history_index] = (role, text + TRUNCATED)
        metrics.BARGE_INS.inc()
        log.info("Call %s barge-in (%s): playback cleared; cancelled streams: %s", self.call_id,
                 why, ", ".join(cancelled) or "none")

    def _start_turn(self, timer: TurnTimer, *, user_text: str | None = None,
                    fixed_text: str | None = None) -> None:
        if self.state != "active":
            return
        if user_text is not None:
            self.history.append(("user", user_text))
        turn = Turn(timer=timer, messages=self._messages())
        self.turn = turn
        turn.task = asyncio.create_task(self._run_turn(turn, fixed_text),
                                        name=f"turn:{self.call_id}")

    def _messages(self, extra_user: str | None = None) -> list[tuple[str, str]]:
        history = self.history if extra_user is None else [*self.history, ("user", extra_user)]
        keep = self.bot.max_history_turns * 2
        recent = history[-keep:] if keep else history[-1:]
        return [("system", self.bot.llm_system_prompt()), *recent]

    async def _run_turn(self, turn: Turn, fixed_text: str | None) -> None:
        token = call_id_var.set(self.call_id)
        outcome = "done"
        try:
            if fixed_text is not None:
                await self._speak_text(turn, fixed_text)
                turn.reply = fixed_text
            else:
                await self._reply(turn)
        except asyncio.CancelledError:
            outcome = "interrupted"
            raise
        except Exception:
            outcome = "failed"
            log.exception("Call %s turn failed", self.call_id)
        finally:
            if turn.held:
                # Not committed (yet): nothing goes into the history or the metrics now.
                turn.finished = outcome
            else:
                self._finish_turn(turn, outcome)
            call_id_var.reset(token)
        if outcome == "done" and not turn.held:
            await self._after_turn(turn)

    def _finish_turn(self, turn: Turn, outcome: str) -> None:
        if turn.discarded:
            return
        metrics.TURNS.labels(turn.timer.kind, outcome).inc()
        if turn.timer.kind == "reply" or turn.spoken:
            text = turn.reply if outcome == "done" else " ".join(turn.spoken)
            if outcome != "done" and text:
                text += TRUNCATED
            if text:
                turn.history_index = len(self.history)
                self.history.append(("assistant", text))
        self.turns_done.append(turn.timer)

    async def _after_turn(self, turn: Turn) -> None:
        if self._is_goodbye(turn.reply):
            self._spawn(self.end_by_bot("goodbye"), "hangup")

    def _is_goodbye(self, text: str) -> bool:
        lowered = text.lower()
        if self.bot.goodbye_marker and self.bot.goodbye_marker.lower() in lowered:
            return True
        return any(phrase.lower() in lowered for phrase in self.bot.goodbye_phrases)

    async def end_by_bot(self, why: str) -> None:
        """Hang up once the last queued audio has played."""
        if self.ending or self.state != "active":
            return
        self.ending = True
        await self.media.wait_idle()
        log.info("Call %s: bot hangs up (%s)", self.call_id, why)
        await self._hangup(self.call_id)

    async def _reply(self, turn: Turn) -> None:
        """LLM -> sentences -> TTS, the first sentence spoken while the LLM still writes."""
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak_queue(turn, sentences))
        try:
            await self._produce_sentences(turn, sentences)
        except BaseException:
            speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaker
            raise
        await sentences.put(None)
        await speaker

    async def _produce_sentences(self, turn: Turn, out: asyncio.Queue[str | None]) -> None:
        for attempt in (1, 2):
            result = GenerationResult()
            chunker = SentenceChunker()
            turn.llm_active = True
            try:
                async for delta in self.services.llm.generate(
                        turn.messages, call_id=self.call_id,
                        max_new_tokens=self.bot.max_new_tokens,
                        temperature=self.bot.temperature, result=result):
                    turn.timer.mark("llm_first_token")
                    for sentence in chunker.feed(delta):
                        await out.put(self._strip_marker(sentence))
                rest = chunker.flush()
                if rest:
                    await out.put(self._strip_marker(rest))
                turn.reply = result.text.strip()
                if result.timings is not None:
                    turn.timer.llm_server_ttft_ms = result.timings.time_to_first_token_ms
                return
            except grpc.aio.AioRpcError as err:
                metrics.SERVICE_ERRORS.labels("llm", err.code().name).inc()
                log.warning("Call %s LLM failed (%s: %s), attempt %d", self.call_id,
                            err.code().name, err.details(), attempt)
                if result.deltas or attempt == 2 or not is_retryable(err):
                    break
            finally:
                turn.llm_active = False
        # The turn is lost: say so rather than stay silent.
        turn.reply = self.bot.apology
        await out.put(self.bot.apology)

    def _strip_marker(self, text: str) -> str:
        marker = self.bot.goodbye_marker
        return text.replace(marker, "").strip() if marker else text

    async def _speak_queue(self, turn: Turn, sentences: asyncio.Queue[str | None]) -> None:
        while (sentence := await sentences.get()) is not None:
            if sentence:
                await self._speak_text(turn, sentence)

    async def _speak_text(self, turn: Turn, text: str) -> None:
        """TTS one sentence into the outbound queue; retried once if TTS restarts."""
        turn.spoken.append(text)
        for attempt in (1, 2):
            got_audio = False
            turn.tts_active = True
            turn.timer.mark("tts_request")
            try:
                async for pcm in self.services.tts.synthesize(
                        text, sample_rate=SAMPLE_RATE, voice=self.bot.voice,
                        call_id=self.call_id):
                    turn.timer.mark("tts_first_audio")
                    got_audio = True
                    if turn.held:
                        turn.held_audio.append(pcm)
                    else:
                        self.media.enqueue(pcm)
                return
            except grpc.aio.AioRpcError as err:
                metrics.SERVICE_ERRORS.labels("tts", err.code().name).inc()
                log.warning("Call %s TTS failed (%s: %s), attempt %d", self.call_id,
                            err.code().name, err.details(), attempt)
                if got_audio or not is_retryable(err):
                    return
            finally:
                turn.tts_active = False

    def on_first_packet(self) -> None:
        """The pacer sent the first packet of a talkspurt: the turn's audio is on the wire."""
        turn = self.turn
        if turn is None or turn.timer.first_rtp is not None:
            return
        turn.timer.mark("first_rtp")
        turn.timer.report(self.call_id)

    # ----------------------------------------------------------------- limits
    async def _watch_limits(self) -> None:
        while self.state == "active" and not self.ending:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if now - self.started >= self.bot.max_call_duration_s:
                log.info("Call %s reached its maximum duration", self.call_id)
                await self._say_and_hang_up(self.bot.timeout_goodbye, "max duration")
                return
            if self.bot_is_talking():
                self.last_caller_activity = max(self.last_caller_activity, now - 0.5)
                continue
            if now - self.last_caller_activity >= self.bot.silence_timeout_s:
                if not self._silence_prompted and self.bot.silence_prompt:
                    self._silence_prompted = True
                    self.last_caller_activity = now
                    self._start_turn(TurnTimer(kind="prompt"), fixed_text=self.bot.silence_prompt)
                else:
                    log.info("Call %s: caller silent for %.0f s", self.call_id,
                             self.bot.silence_timeout_s)
                    await self._say_and_hang_up(self.bot.timeout_goodbye, "silence")
                    return

    async def _say_and_hang_up(self, text: str, why: str) -> None:
        self.barge_in(why)
        if self.turn is not None and self.turn.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.turn.task
        self._start_turn(TurnTimer(kind="goodbye"), fixed_text=text)
        if self.turn is not None and self.turn.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.turn.task
        await self.end_by_bot(why)

    def snapshot(self) -> dict[str, object]:
        """For the /calls endpoint and dev-status."""
        return {
            "call_id": self.call_id,
            "backend": self.info.backend,
            "caller": self.info.caller,
            "state": self.state,
            "duration_s": round(time.monotonic() - self.started, 1),
            "bot_talking": self.bot_is_talking(),
            "turns": len(self.turns_done),
            "asr_reconnects": self.asr.reconnects if self.asr else 0,
            "history": [{"role": r, "content": c} for r, c in self.history],
            "last_turn_ms": self.turns_done[-1].breakdown_ms() if self.turns_done else {},
        }


def same_utterance(a: str, b: str) -> bool:
    """Whether two transcripts say the same words (case and spacing aside)."""
    return a.lower().split() == b.lower().split()
