"""Never lose a turn (issue #11 ask 5), on the fakes: an ASR stream that breaks after a
PAUSE, or in the middle of an utterance, still gets the caller an answer; one that breaks
while nobody speaks invents nothing. And barge-in on engines without partials."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig
from opensips_ai_core.pipeline.turn import TurnState
from tests.core.pipeline.fakes import rpc_error
from tests.core.pipeline.harness import GREETING, until

pytestmark = [pytest.mark.timeout(20)]

# What grpcio raised when the ASR worker crashed (the seg() TypeError of issue #11).
ENGINE_CRASH = rpc_error(grpc.StatusCode.UNKNOWN, "Exception iterating responses: "
                                                  "'NoneType' object is not iterable")


def breaks(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("voice_asr_stream_breaks_total",
                                              {"outcome": outcome})
    return value or 0.0


def speech(seconds: float, level: int = 3000) -> np.ndarray:
    return np.full(int(8000 * seconds), level, dtype=np.int16)


# ------------------------------------------------------------------------ a broken stream
async def test_break_after_pause_plays_the_held_reply_once(make_call) -> None:
    h = make_call()
    await h.greeted()
    before = breaks("committed")
    await h.asr.stream.speech_start()
    h.call.on_audio(speech(1.0))
    await h.asr.stream.pause("what is my balance")
    prepared = h.call.prepared
    assert prepared is not None
    await prepared.wait_for_work()
    h.asr.stream.fail(ENGINE_CRASH)
    assert prepared.state is TurnState.DONE and h.call.turn is prepared
    assert h.media.queued  # the reply plays
    assert h.asr.stream.replayed == []  # answered: the audio is not recognised again
    assert h.call.history[-2:] == [("user", "what is my balance"),
                                   ("assistant", prepared.reply)]
    assert [t for r, t in h.call.history if r == "user"] == ["what is my balance"]
    assert [t for r, t in h.call.history if r == "assistant"].count(prepared.reply) == 1
    assert len(h.llm.requests) == 1  # the held reply's, nothing more
    assert breaks("committed") == before + 1
    heard = [e for e in h.call.transcript.events if e["type"] == "heard"]
    assert [e["text"] for e in heard] == ["what is my balance"]


async def test_break_mid_utterance_replays_the_audio_and_the_final_answers(make_call) -> None:
    h = make_call()
    await h.greeted()
    before = breaks("replayed")
    await h.asr.stream.final("hello")  # an earlier utterance: not replayed
    await h.call.turn.wait_for_work()
    h.media.play_out()
    words = speech(0.7, level=1234)
    await h.asr.stream.speech_start()
    h.call.on_audio(words)
    await h.asr.stream.partial("what is")
    h.asr.stream.fail(ENGINE_CRASH)
    assert h.asr.stream.replayed == [words.astype("<i2").tobytes()]
    assert h.call.prepared is None and h.call.turn.user_text == "hello"
    assert breaks("replayed") == before + 1
    # The reopened stream recognises the replayed audio.
    await h.asr.stream.speech_start()
    await h.asr.stream.final("what is my balance")
    await h.call.turn.wait_for_work()
    assert h.call.history[-2:] == [("user", "what is my balance"),
                                   ("assistant", "You said what is my balance. Anything else?")]


async def test_break_while_nobody_speaks_invents_nothing(make_call) -> None:
    h = make_call()
    await h.greeted()
    before = breaks("idle")
    h.call.on_audio(speech(0.5, level=0))  # silence: no SPEECH_START
    turns = len(h.call.turns_done)
    history = list(h.call.history)
    h.asr.stream.fail(ENGINE_CRASH)
    assert h.asr.stream.replayed == []
    assert h.call.history == history and h.call.prepared is None
    assert len(h.call.turns_done) == turns and not h.call.bot_is_talking()
    assert breaks("idle") == before + 1


async def test_break_after_a_discarded_pause_replays_instead(make_call) -> None:
    """The caller spoke on after the PAUSE: the held reply was dropped, so the audio is
    recognised again rather than the stale reply played."""
    h = make_call()
    await h.greeted()
    await h.asr.stream.speech_start()
    h.call.on_audio(speech(0.5))
    await h.asr.stream.pause("what is")
    await h.asr.stream.partial("what is my balance")
    assert h.call.prepared is None
    h.asr.stream.fail(ENGINE_CRASH)
    assert len(h.asr.stream.replayed) == 1 and h.asr.stream.replayed[0]


# ------------------------------------------------------------------------ barge-in
async def test_speech_start_interrupts_when_the_asr_sends_no_partials(make_call) -> None:
    """Whisper: SPEECH_START, then the final; no partials. min words 1 (core/bot.toml)."""
    h = make_call(BotConfig(greeting=GREETING, barge_in_min_words=1))
    await h.greeted()
    await h.reply_to("hello")
    assert h.call.bot_is_talking()
    await h.asr.stream.speech_start()
    # Not known yet: a partial may still come within the grace period; none does.
    await until(lambda: not h.call.bot_is_talking(), "barge-in after the grace period")
    assert h.media.clears == 1
    await h.asr.stream.final("stop")
    await h.call.turn.wait_for_work()
    assert h.call.recognition.streams_partials is False
    # Known now: the next SPEECH_START interrupts at once.
    assert h.call.bot_is_talking()
    await h.asr.stream.speech_start()
    assert not h.call.bot_is_talking() and h.media.clears == 2


async def test_partials_still_need_min_words(make_call) -> None:
    """Vosk/pocketsphinx: a partial follows SPEECH_START; barge_in_min_words decides."""
    h = make_call(BotConfig(greeting=GREETING, barge_in_min_words=2))
    await h.greeted()
    await h.reply_to("hello")
    await h.asr.stream.speech_start()
    await h.asr.stream.partial("um")
    assert h.call.recognition.streams_partials is True
    await h.asr.stream.final("um")  # too short to interrupt; a new turn answers it
    await h.call.turn.wait_for_work()
    assert h.call.bot_is_talking()
    clears = h.media.clears
    await h.asr.stream.speech_start()
    # Partials are known to come: speech start alone does not interrupt.
    await h.asr.stream.partial("uh")
    assert h.call.bot_is_talking() and h.media.clears == clears
    await h.asr.stream.partial("wait a")
    assert not h.call.bot_is_talking() and h.media.clears == clears + 1
