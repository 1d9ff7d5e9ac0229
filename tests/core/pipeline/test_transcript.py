"""The call's transcript (pipeline/transcript.py) on the fakes: what was heard, what the
bot said, cut-offs, DTMF, prepared replies, latency and how the call ended.

`on_first_packet()` is called where the pacer would (the fakes send no RTP). The
transcript of calls over real SIP/RTP is checked in tests/core/test_call_recording.py,
with the real services in tests/core/devtools/test_dial_transcript.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from opensips_ai_core.config import BotConfig
from tests.core.pipeline.fakes import FakeLlm, LlmPlan
from tests.core.pipeline.harness import GREETING, until

pytestmark = [pytest.mark.timeout(20)]


async def test_turns_carry_what_was_heard_and_said_with_latency(make_call) -> None:
    h = make_call()
    await h.greeted()
    h.call.on_first_packet()  # the greeting's first packet (sent by now)
    await h.reply_to("what is my balance")
    h.call.on_first_packet()
    h.media.play_out()
    data = h.call.transcript.to_dict()
    assert data["call_id"] == "fake-1" and data["caller"] == "sip:caller@test"
    assert data["ended"] is None
    greeting, reply = data["turns"]
    assert greeting["kind"] == "greeting" and greeting["heard"] is None
    assert greeting["said"] == GREETING and not greeting["interrupted"]
    assert reply["kind"] == "reply" and reply["heard"] == "what is my balance"
    assert reply["said"] == "You said what is my balance. Anything else?"
    assert reply["outcome"] == "done" and not reply["interrupted"]
    # No speech end from the fake recognizer: the latency counts from the final.
    assert reply["latency_ms"] is not None and reply["latency_ms"] >= 0
    assert set(reply["stages_ms"]) >= {"llm_first_token", "tts_first_audio", "first_rtp"}
    assert data["turn_latency_ms"] == [reply["latency_ms"]]
    assert reply["first_audio_s"] >= greeting["first_audio_s"] >= 0
    assert [e["type"] for e in data["events"]] == ["heard"]
    assert data["events"][0]["text"] == "what is my balance"
    json.dumps(data)  # what the file and the webhook carry


async def test_barge_in_marks_the_turn_interrupted_with_the_words_it_got_out(
        make_call) -> None:
    still_writing = asyncio.Event()
    h = make_call(llm=FakeLlm(plans=[LlmPlan(reply="Your balance is ten pounds. It was",
                                             block=still_writing)]))
    await h.greeted()
    await h.asr.stream.final("what is my balance")
    turn = h.call.turn
    await until(lambda: h.tts.texts[1:] == ["Your balance is ten pounds."], "the first sentence")
    await h.asr.stream.partial("no wait")
    await turn.wait_for_work()
    await h.reply_to("no wait stop")
    turns = h.call.transcript.turns
    assert turns[1]["heard"] == "what is my balance"
    assert turns[1]["said"] == "Your balance is ten pounds."
    assert turns[1]["interrupted"] and turns[1]["outcome"] == "interrupted"
    assert turns[2]["heard"] == "no wait stop"
    assert "barge_in" in [e["type"] for e in h.call.transcript.events]


async def test_a_reply_cut_off_while_playing_is_marked_interrupted(make_call) -> None:
    h = make_call()
    await h.greeted()
    await h.reply_to("what is my balance")
    assert h.media.is_speaking
    await h.asr.stream.partial("stop")
    reply = h.call.transcript.turns[1]
    assert reply["outcome"] == "done" and reply["interrupted"]


async def test_dtmf_and_the_bots_goodbye_are_in_the_transcript(make_call) -> None:
    h = make_call(BotConfig(greeting=GREETING, dtmf_flush_s=0.05), autoplay=True)
    await h.greeted()
    for digit in "42#":
        h.call.on_dtmf(digit)
    await until(lambda: len(h.call.transcript.turns) == 2, "the reply to the digits")
    await h.reply_to("thank you goodbye")
    await until(lambda: h.hangups == ["fake-1"], "the bot's hang-up")
    await h.call.close("bot hung up")
    data = h.call.transcript.to_dict()
    assert data["turns"][1]["dtmf"] == "42#" and data["turns"][1]["heard"] == "[DTMF 42#]"
    assert {"t_s": data["events"][0]["t_s"], "type": "dtmf", "digits": "42#"} \
        == data["events"][0]
    assert data["turns"][2]["said"] == "Thank you for calling. Goodbye!"
    assert data["ended"] == "bot hung up" and data["ended_by"] == "bot"
    assert data["bot_hangup_reason"] == "goodbye"
    assert data["ended_at"] is not None and data["duration_s"] >= 0


async def test_a_prepared_reply_records_the_final_words(make_call) -> None:
    h = make_call()
    await h.greeted()
    await h.asr.stream.pause("what is my balance")
    prepared = h.call.prepared
    await prepared.wait_for_work()
    await h.asr.stream.final("What is my  balance")
    await until(lambda: len(h.call.transcript.turns) == 2, "the committed reply")
    turn = h.call.transcript.turns[1]
    assert turn["heard"] == "What is my  balance"
    assert turn["said"] == "You said what is my balance. Anything else?"
    heard = [e for e in h.call.transcript.events if e["type"] == "heard"]
    assert [e["text"] for e in heard] == ["What is my  balance"]


async def test_the_caller_hanging_up_ends_the_transcript(make_call) -> None:
    h = make_call()
    await h.greeted()
    await h.call.close("caller hung up (BYE)")
    data = h.call.transcript.to_dict()
    assert data["ended"] == "caller hung up (BYE)" and data["ended_by"] == "signalling"
