"""Simultaneous calls on the default stack's real models, as the dev stack runs them.

`voice_testkit.stack.ai_stack("default")`: Whisper tiny.en (ASR_ENABLE_DEBUG=1,
VOSK_SHOW_WORDS=1), SmolLM2-135M-Instruct with core/bot.toml's knowledge, Piper; the
core with core/bot.toml, its tools on a mock bank of their own. Two callers dial at
once and ask, in words that are not the demo's phrase list, questions of the
evaluation set (tests/data/eval/conversation.toml) spoken by the TTS service; each
gets its reply. Every wait is for an outcome the core reports (GET /calls, the call's
transcript), bounded; nothing is timed (scripts/bench/core.py measures).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from opensips_ai_core.devtools.sip_uac import SipCaller, make_sdp, parse_media_address
from opensips_ai_core.devtools.softphone import RtpPeer, synthesize
from voice_testkit.bank import mock_bank
from voice_testkit.eval_set import carries
from voice_testkit.procs import ROOT, wait_until
from voice_testkit.stack import AiStack, Core, ai_stack, core, default_stack_missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

missing = default_stack_missing()
if missing is not None:
    pytest.skip(missing, allow_module_level=True)

WAIT_S = 30.0
# (what the caller says, the fact its reply carries: None where only a reply is due)
QUESTIONS: list[tuple[str, tuple[tuple[str, ...], ...] | None]] = [
    ("What are your opening hours?", (("9", "nine"), ("5", "five"))),
    ("My debit card was stolen yesterday.", None),
]


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AiStack, Core]]:
    logdir = tmp_path_factory.mktemp("default-stack")
    with (ai_stack("default", logdir) as ai, mock_bank(logdir) as bank,
          core(logdir, ai.asr.target, ai.llm.target, ai.tts.target,
               CORE_BOT_CONFIG=str(ROOT / "core" / "bot.toml"),
               BOT_TOOLS_BASE_URL=bank) as running):
        yield ai, running


def turn_over(running: Core, sip_call_id: str, turns: int) -> dict | None:
    """The call's transcript once `turns` of its turns ended, the last not cut off by the
    rest of the caller's utterance, and its audio played out (None before, or while the
    busy core's HTTP API does not answer)."""
    try:
        transcript = running.transcript(sip_call_id)
        if transcript is None:
            return None
        call = next((c for c in running.calls() if c["call_id"] == transcript["call_id"]),
                    None)
        if call is None or not Core.turn_over(call, turns):
            return None
        transcript = running.transcript(sip_call_id)
        return transcript if transcript and Core.reply_settled(transcript, turns - 1) else None
    except OSError:
        return None


async def one_call(running: Core, utterance: np.ndarray) -> tuple[dict, bool]:
    """Greeted, then the utterance; the transcript after the reply, and whether the
    caller heard reply audio after it spoke."""
    rtp = await RtpPeer().open()
    sip = await SipCaller(("127.0.0.1", running.sip_port)).open()
    try:
        answer = await sip.invite(make_sdp("127.0.0.1", rtp.local_port))
        assert answer.status == 200, answer
        ip, port, _ = parse_media_address(answer.body)
        rtp.start((ip, port))
        await asyncio.to_thread(wait_until, lambda: turn_over(running, sip.call_id, 1),
                                WAIT_S, 0.2, "the greeting played out")
        rtp.play(utterance)
        spoken = await rtp.wait_played()
        transcript = await asyncio.to_thread(
            wait_until, lambda: turn_over(running, sip.call_id, 2), WAIT_S, 0.2,
            "the reply played out")
        # Frames carry the kernel's arrival time: the reply's are after the utterance.
        return transcript, bool(rtp.speech_frames_after(spoken))
    finally:
        await sip.bye()
        await rtp.close()
        sip.close()


def test_two_simultaneous_calls_each_get_their_reply(
        default_stack: tuple[AiStack, Core]) -> None:
    ai, running = default_stack
    silence = np.zeros(4000, np.int16)  # half a second after the words

    async def both() -> list[tuple[dict, bool]]:
        audio = [np.concatenate([await synthesize(ai.tts.target, text), silence])
                 for text, _ in QUESTIONS]
        return list(await asyncio.gather(*(one_call(running, pcm) for pcm in audio)))

    results = asyncio.run(both())
    log = running.proc.output()[-4000:]
    for (text, expect), (transcript, heard_reply) in zip(QUESTIONS, results, strict=True):
        replies = [t for t in transcript["turns"] if t["kind"] == "reply"]
        assert replies, (text, transcript, log)
        reply = replies[-1]
        assert reply["outcome"] == "done" and reply["heard"] and reply["said"], (text, reply)
        assert heard_reply, (text, reply)
        if expect is not None:
            assert carries(reply["said"], expect), (text, reply)
