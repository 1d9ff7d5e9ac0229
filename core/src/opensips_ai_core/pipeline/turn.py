"""One reply of the bot, from its request to its last audio: a handle with explicit states.

    HELD ──commit()──> PLAYING ──> DONE | INTERRUPTED | FAILED
      └───discard()──> DISCARDED

A turn prepared at the caller's pause starts HELD: its LLM and TTS run but its audio
is kept back; `commit()` sends what it has to the pacer and makes it PLAYING, while
`discard()` cancels it without a trace. Every other turn starts PLAYING. When its work
ends the turn is DONE (everything generated and queued), INTERRUPTED (cancelled:
barge-in or the call's end) or FAILED (an error); a held turn whose work ended keeps
that outcome until it is committed or discarded. (LiveKit Agents' SpeechHandle is the
model: `interrupt()`, `wait_for_playout()`.)
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable

import numpy as np

from opensips_ai_core.pipeline.protocols import MediaPort
from opensips_ai_core.pipeline.timing import TurnTimer
from voice_common import get_development_logger
from voice_common.logs import call_id_var

log = get_development_logger("core.turn")


class TurnState(enum.Enum):
    HELD = "held"
    PLAYING = "playing"
    DONE = "done"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    DISCARDED = "discarded"


ENDED = frozenset({TurnState.DONE, TurnState.INTERRUPTED, TurnState.FAILED,
                   TurnState.DISCARDED})

TurnWork = Callable[["Turn"], Awaitable[None]]


class Turn:
    def __init__(self, call_id: str, media: MediaPort, timer: TurnTimer, *,
                 messages: list[tuple[str, str]] | None = None, user_text: str = "",
                 held: bool = False) -> None:
        self.call_id = call_id
        self.timer = timer
        # The conversation the LLM is asked to continue, fixed when the turn starts.
        self.messages = messages or []
        self.user_text = user_text  # what a held turn answers
        self.state = TurnState.HELD if held else TurnState.PLAYING
        self.reply = ""                       # the full reply, once generated
        self.spoken: list[str] = []           # the sentences sent to TTS so far
        self.in_flight: set[str] = set()      # "LLM", "TTS", "TOOL": what runs now
        self.tool_calls: list[tuple[str, str, str]] = []  # (name, arguments, "ok"/"failed")
        self.transfer_to: str | None = None   # the LLM called the built-in `transfer`
        self.hang_up = False                  # the LLM called the built-in `hang_up`
        self.held_audio: list[np.ndarray | bytes] = []
        self.history_index: int | None = None  # where its reply went in the history
        self.task: asyncio.Task[None] | None = None
        self._media = media
        self._outcome: TurnState | None = None  # how its work ended (kept while held)
        self._ended = asyncio.Event()
        self._playing = asyncio.Event()  # set once it is (or was) PLAYING
        if not held:
            self._playing.set()
        self._on_end: Callable[[Turn], None] | None = None

    # ---------------------------------------------------------------- reading
    @property
    def held(self) -> bool:
        return self.state is TurnState.HELD

    @property
    def interrupted(self) -> bool:
        return self.state is TurnState.INTERRUPTED

    @property
    def discarded(self) -> bool:
        return self.state is TurnState.DISCARDED

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def llm_active(self) -> bool:
        return "LLM" in self.in_flight

    @property
    def tts_active(self) -> bool:
        return "TTS" in self.in_flight

    @property
    def working(self) -> bool:
        """Its LLM/TTS work still runs (the audio may play on after it ends)."""
        return self.task is not None and not self.task.done()

    # ---------------------------------------------------------------- running
    def start(self, work: TurnWork, on_end: Callable[[Turn], None]) -> None:
        """Run `work(turn)` as the turn's task; `on_end(turn)` once it is DONE,
        INTERRUPTED or FAILED and not held (never for a DISCARDED turn)."""
        self._on_end = on_end
        name = "prepared-turn" if self.held else "turn"
        self.task = asyncio.create_task(self._run(work), name=f"{name}:{self.call_id}")
        # A done callback, not a `finally`: a task cancelled before its first step never
        # runs its coroutine at all.
        self.task.add_done_callback(self._work_ended)

    async def _run(self, work: TurnWork) -> None:
        call_id_var.set(self.call_id)  # the task runs in its own copy of the context
        await work(self)

    def play(self, pcm16: np.ndarray | bytes) -> None:
        """Audio of the reply: to the pacer, or kept back while the turn is held."""
        if self.state is TurnState.HELD:
            self.held_audio.append(pcm16)
        elif self.state is TurnState.PLAYING:
            self._media.enqueue(pcm16)

    def _work_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            outcome = TurnState.INTERRUPTED
        elif (error := task.exception()) is not None:
            outcome = TurnState.FAILED
            log.error("Call %s turn failed", self.call_id, exc_info=error)
        else:
            outcome = TurnState.DONE
        if self.state is TurnState.HELD:
            self._outcome = outcome  # not committed (yet): nothing is recorded now
        elif self.state is TurnState.PLAYING:
            self._end(outcome)

    def _end(self, outcome: TurnState) -> None:
        self.state = outcome
        self._ended.set()
        if outcome is not TurnState.DISCARDED and self._on_end is not None:
            self._on_end(self)

    # ---------------------------------------------------------------- control
    def commit(self) -> None:
        """HELD -> PLAYING: the held audio goes to the pacer; ends it at once if its
        work already has."""
        if self.state is not TurnState.HELD:
            raise RuntimeError(f"commit of a {self.state.value} turn")
        self.state = TurnState.PLAYING
        self._playing.set()
        for pcm in self.held_audio:
            self._media.enqueue(pcm)
        self.held_audio.clear()
        if self._outcome is not None:
            self._end(self._outcome)

    def discard(self) -> None:
        """HELD -> DISCARDED: cancel its work; it leaves nothing behind."""
        if self.state is not TurnState.HELD:
            raise RuntimeError(f"discard of a {self.state.value} turn")
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.held_audio.clear()
        self._end(TurnState.DISCARDED)

    def interrupt(self) -> list[str]:
        """Cancel the turn's work (it becomes INTERRUPTED when the task has stopped);
        returns the RPCs that were cancelled. Its queued audio is the caller's to clear."""
        if not self.working:
            return []
        cancelled = sorted(self.in_flight)
        assert self.task is not None
        self.task.cancel()
        return cancelled

    async def wait_until_committed(self) -> None:
        """Until a held turn is committed (a discarded one is cancelled meanwhile)."""
        await self._playing.wait()

    async def wait_for_work(self) -> None:
        """Until its LLM/TTS work has stopped, however it ended (its audio may still play)."""
        if self.task is not None:
            await asyncio.wait({self.task})

    async def wait_for_playout(self) -> TurnState:
        """Until the turn has ended and, when DONE, its audio has played out."""
        await self._ended.wait()
        if self.state is TurnState.DONE:
            await self._media.wait_idle()
        return self.state

    def __repr__(self) -> str:
        return f"<Turn {self.timer.kind} {self.state.value} {self.user_text!r}>"
