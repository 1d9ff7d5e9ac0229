"""Never lose a turn (issue #11 ask 5) with the real ASR service (pocketsphinx, the dev
stack's settings) killed with SIGKILL in the middle of a call: after a PAUSE the reply
held for it plays; before the PAUSE the restarted service recognises the utterance's
audio sent again. The LLM, TTS and media are the fakes (the ASR is what breaks)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from opensips_ai_core import metrics
from opensips_ai_core.config import BotConfig
from opensips_ai_core.grpc_clients.asr import AsrClient, AsrSession
from opensips_ai_core.pipeline.conversation import Call
from opensips_ai_core.pipeline.protocols import Services
from opensips_ai_core.signalling.base import CallInfo
from tests.asr.conftest import requires_espeak
from tests.core.pipeline.fakes import FakeLlm, FakeMedia, FakeTts
from tests.core.pipeline.harness import until
from voice_testkit.speech import speech_pcm
from voice_testkit.stack import Service, service, start

pytestmark = [requires_espeak, pytest.mark.timeout(180)]

RATE = 8000
FRAME = RATE // 50  # 20 ms
SENTENCE = "what is my balance"
BOT = BotConfig(greeting="Hi.", asr_phrases=(SENTENCE, "i want to talk to a person"))


def breaks(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("voice_asr_stream_breaks_total",
                                              {"outcome": outcome})
    return value or 0.0


@contextlib.asynccontextmanager
async def call_on(asr_target: str) -> AsyncIterator[tuple[Call, FakeMedia]]:
    media = FakeMedia()
    asr = AsrClient(asr_target)

    async def hangup(call_id: str) -> None:
        pass

    call = Call(CallInfo("asr-break-1", "sip:caller@test", "sip:ai@test", "sip"), media,
                Services(asr, FakeLlm(), FakeTts()), BOT, hangup)
    try:
        call.start()
        assert call.turn is not None
        await call.turn.wait_for_work()
        media.play_out()
        yield call, media
    finally:
        await call.close("test over")
        await asr.close()


async def speak(call: Call, pcm: np.ndarray, sent: list[int] | None = None) -> None:
    """The caller's audio as the RTP session delivers it: 20 ms frames in real time
    (`sent[0]`: the samples delivered so far)."""
    for at in range(0, len(pcm), FRAME):
        call.on_audio(pcm[at:at + FRAME])
        if sent is not None:
            sent[0] = at + len(pcm[at:at + FRAME])
        await asyncio.sleep(0.02)


def utterance(tmp_path: Path) -> np.ndarray:
    words = speech_pcm(SENTENCE, "en-us", tmp_path, RATE, words_per_minute=150)
    return np.concatenate([np.zeros(RATE // 4, np.int16), np.frombuffer(words, "<i2"),
                           np.zeros(RATE // 2, np.int16)])


def kill(svc: Service) -> None:
    svc.proc.signal(signal.SIGKILL)
    svc.proc.wait(10)


async def test_asr_killed_after_the_pause_plays_the_held_reply(tmp_path: Path) -> None:
    # A 3 s endpoint: the caller's 0.5 s of silence and the core's gap fill (at most
    # 1.5 s) cannot end the utterance, so the final never races the kill, however late
    # the PAUSE is read on a busy machine.
    with service("asr", tmp_path, timeout=120, ASR_ENGINE="pocketsphinx",
                 ASR_ENDPOINT_SILENCE_S="3.0") as svc:
        async with call_on(svc.target) as (call, media):
            before = breaks("committed")
            paused: list[str] = []
            prepare = call.paused

            def pause_then_die(text: str) -> None:
                prepare(text)  # the reply is prepared, held ...
                if text.strip() and not paused:
                    paused.append(text)
                    kill(svc)  # ... and the service dies before the final

            call.paused = pause_then_die  # type: ignore[method-assign]
            await speak(call, utterance(tmp_path))
            await until(lambda: breaks("committed") > before, "the break", timeout=30)
            assert paused and call.prepared is None
            turn = call.turn
            assert turn is not None and turn.user_text == paused[0]
            await turn.wait_for_work()
            assert media.queued  # the reply plays
            assert call.history[-2:] == [("user", paused[0]), ("assistant", turn.reply)]
            assert [t for r, t in call.history if r == "user"] == [paused[0]]


async def test_asr_killed_mid_utterance_recognises_it_again_after_restart(
        tmp_path: Path) -> None:
    with service("asr", tmp_path, timeout=120, ASR_ENGINE="pocketsphinx") as svc:
        async with call_on(svc.target) as (call, media):
            # A first utterance, answered: it is not recognised again after the break.
            first = utterance(tmp_path)
            await speak(call, first)
            await until(lambda: call.history[-1][0] == "assistant"
                        and any(r == "user" for r, _ in call.history), "the first reply",
                        timeout=60)
            media.play_out()
            before = breaks("replayed")
            restarted: list[asyncio.Task[None]] = []
            started = call.speech_started
            sent, sent_at_kill = [0], [0]

            def start_then_die() -> None:
                started()
                if not restarted:
                    sent_at_kill[0] = sent[0]
                    kill(svc)
                    restarted.append(asyncio.create_task(asyncio.to_thread(start, svc, 120)))

            call.speech_started = start_then_die  # type: ignore[method-assign]
            await speak(call, utterance(tmp_path), sent)
            await until(lambda: bool(restarted), "SPEECH_START", timeout=30)
            await restarted[0]
            await until(lambda: call.history[-1][0] == "assistant"
                        and [r for r, _ in call.history].count("user") == 2, "the reply",
                        timeout=60)
            assert breaks("replayed") == before + 1
            stream = call.recognition.stream
            assert isinstance(stream, AsrSession) and stream.replayed_bytes > 0
            # What followed the first final only (its trailing silence, up to 1.5 s of gap
            # fill, the second utterance until the break): not the first utterance.
            before_second = stream.replayed_bytes - 2 * sent_at_kill[0]
            assert before_second < 2 * len(first)
            users = [t for r, t in call.history if r == "user"]
            assert len(users) == 2 and users[1].split()
            assert media.queued or media.played
