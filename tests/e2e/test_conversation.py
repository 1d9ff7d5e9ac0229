"""Calls through the real services with the project's scripted caller (SIP UAC + RTP).

Each test dials a fresh core on 127.0.0.1 and talks to it with audio made by the TTS
service; what the bot says back is recognized by the ASR service.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection

import numpy as np
import pytest

from opensips_ai_core.devtools.sip_uac import SipCaller, make_sdp, parse_media_address
from opensips_ai_core.devtools.softphone import (
    SPEECH_RMS,
    RtpPeer,
    rms,
    speak_and_listen,
)
from tests.e2e.audio import (
    is_account_question,
    is_bank_balance,
    is_goodbye_answer,
    is_greeting,
    speech_of,
    transcribe_reply,
)
from voice_testkit.bank import mock_bank
from voice_testkit.opensips_peer import SIPP_OFFER, OpenSipsPeer
from voice_testkit.procs import wait_until
from voice_testkit.stack import restart, start, stop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# The demo bot's balance (core/bot.toml's get_balance tool) from the mock bank
# (dev/testkit/src/voice_testkit/bank.py) for the account the caller keys in.
ASK_ACCOUNT = "Please tell me your account number, or key it in and press hash."
ACCOUNT = "12345678"
BANK_BALANCE = "One moment, please. Your balance is 1,250.40 dollars."


async def enter(cm):
    """Enter a blocking context manager (starting a core waits) off the event loop."""
    return await asyncio.to_thread(cm.__enter__)


async def leave(cm) -> None:
    await asyncio.to_thread(cm.__exit__, None, None, None)


@contextlib.asynccontextmanager
async def direct_call(core):
    """Dial the core's SIP port; yield (sip, rtp) once the greeting has finished."""
    rtp = await RtpPeer().open()
    sip = await SipCaller(("127.0.0.1", core.sip_port)).open()
    try:
        answer = await sip.invite(make_sdp("127.0.0.1", rtp.local_port))
        assert answer.status == 200, answer
        ip, port, _ = parse_media_address(answer.body)
        rtp.start((ip, port))
        yield sip, rtp
    finally:
        with contextlib.suppress(Exception):
            await sip.bye()
        await rtp.close()
        sip.close()


async def greeting_over(rtp: RtpPeer, core, exclude: Collection[str] = ()) -> float:
    """When (time.monotonic()) the core said a call's greeting was over (voice_testkit's
    Core.greeted_call: however far apart its sentences came), once every RTP frame that
    arrived before then has been read."""
    await asyncio.to_thread(wait_until, lambda: core.greeted_call(exclude), 60, 0.1,
                            "the greeting played out")
    over = time.monotonic()
    # The core sends silence after the greeting: once a frame that arrived later has been
    # read, so has every frame before it (frames carry the kernel's arrival time).
    await asyncio.to_thread(wait_until, lambda: rtp.frames and rtp.frames[-1].at > over,
                            10, 0.02, "RTP after the greeting")
    return over


async def wait_greeting(rtp: RtpPeer, core, since: float) -> np.ndarray:
    first = await rtp.wait_for_speech(since, 30)
    assert first is not None, "no greeting"
    return rtp.audio_between(first, await greeting_over(rtp, core))


async def ask(rtp: RtpPeer, ai, text: str) -> str:
    utterance = await asyncio.to_thread(speech_of, ai.tts.target, text)
    # A reply may pause between its parts when the machine is busy: 1.5 s of quiet ends it.
    turn = await speak_and_listen(rtp, utterance, quiet_s=1.5)
    assert turn.first_reply_at is not None, f"no reply to {text!r}"
    return await transcribe_reply(ai.asr.target, turn.reply)


async def history_until(core, content: str, timeout: float = 90.0,
                        role: str = "assistant") -> list[dict]:
    """The call's history once it holds `content` said by `role` (the core's /calls)."""
    deadline = time.monotonic() + timeout
    while True:
        calls = await asyncio.to_thread(core.calls)
        history = calls[0]["history"] if calls else []
        if {"role": role, "content": content} in history:
            return history
        if time.monotonic() > deadline:
            raise AssertionError(f"no {content!r} in the history: {history}")
        await asyncio.sleep(0.2)


async def reply_said(rtp: RtpPeer, core, since: float, content: str) -> np.ndarray:
    """The bot's audio from its first sound after `since` until it went quiet once the
    history holds `content` (the filler and the answer may have a pause between them)."""
    first = await rtp.wait_for_speech(since, 60)
    assert first is not None, f"no spoken reply ({content!r})"
    await history_until(core, content)
    last = await rtp.wait_for_silence(first, 1.5, 30)
    return rtp.audio_between(first - 0.05, last + 0.05)


async def key_in(rtp: RtpPeer, core, ai, digits: str, content: str) -> str:
    """Key `digits` in (RFC 4733 events), then what the recognizer hears of the reply."""
    keyed = time.monotonic()
    for digit in digits:
        rtp.send_dtmf(digit)
    reply = await reply_said(rtp, core, keyed, content)
    return await transcribe_reply(ai.asr.target, reply)


async def test_opensips_b2b_call_answers_and_the_bot_terminates(ai, start_core, tmp_path):
    """The OpenSIPS backend against a peer speaking OpenSIPS 3.6.8's wire format.

    OpenSIPS cannot be installed here, so dev/testkit/src/voice_testkit/opensips_peer.py plays its
    part exactly as docs/opensips.md documents it (E_UA_SESSION events over
    UDP, MI JSON-RPC over UDP), with SIPp's SDP offer pointing at our RTP peer.
    The balance comes from the mock bank over HTTP, for the account keyed in by DTMF.
    """
    with mock_bank(tmp_path) as base:
        await b2b_balance_call(ai, start_core, base)


async def b2b_balance_call(ai, start_core, base: str) -> None:
    peer = await OpenSipsPeer().start()
    cm = start_core(CORE_SIGNALLING="opensips", OPENSIPS_MI_PORT=str(peer.mi_port),
                    BOT_TOOLS_BASE_URL=base)
    core = await enter(cm)
    rtp = await RtpPeer().open()
    try:
        await peer.wait_for(peer.live_subscriptions, 30, "event_subscribe")
        offer = SIPP_OFFER.replace("m=audio 6000", f"m=audio {rtp.local_port}")
        started = time.monotonic()
        key = peer.new_call(offer)
        reply = await peer.wait_reply(key, timeout=30)
        assert reply["method"] == "INVITE" and int(reply["code"]) == 200
        assert reply["reason"] == "OK"
        ip, port, payload_type = parse_media_address(reply["body"])
        assert payload_type == 0  # PCMU, the first offered
        rtp.start((ip, port))
        greeting = await wait_greeting(rtp, core, started)
        assert is_greeting(await transcribe_reply(ai.asr.target, greeting))

        question = await ask(rtp, ai, "what is my balance")
        assert is_account_question(question), question
        answer = await key_in(rtp, core, ai, f"{ACCOUNT}#", BANK_BALANCE)
        assert is_bank_balance(answer), answer
        goodbye = await ask(rtp, ai, "thank you goodbye")
        assert is_goodbye_answer(goodbye), goodbye
        # The bot ends the call itself once its goodbye has played.
        await peer.wait_for(lambda: key in peer.terminated, 30, "ua_session_terminate")
        terminate = [p for m, p, _ in peer.mi_log if m == "ua_session_terminate"]
        assert terminate == [{"key": key}]
        assert core.calls() == []
    finally:
        await rtp.close()
        await leave(cm)
        await peer.stop()


async def test_barge_in_stops_playback_and_cancels_the_streams(ai, start_core):
    # About a minute of speech in 20 sentences: TTS is still synthesizing it (one sentence
    # at a time, a few hundred ms each) when the caller interrupts.
    menu = ("You can ask about your balance. You can report a lost or stolen card. "
            "You can ask for our opening hours. You can ask to speak to an adviser. ")
    long_greeting = ("Hello, this is Example Bank. Please listen carefully. " + menu * 4
                     + "How can I help you today?")
    cm = start_core(BOT_GREETING=long_greeting, BOT_BARGE_IN_MIN_WORDS="0")
    core = await enter(cm)
    try:
        async with direct_call(core) as (_sip, rtp):
            started = time.monotonic()
            first = await rtp.wait_for_speech(started, 30)
            assert first is not None
            # Interrupt one second into the greeting.
            await asyncio.sleep(1.0)
            interrupt = await asyncio.to_thread(speech_of, ai.tts.target, "what is my balance")
            rtp.play(interrupt)
            spoken_until = await rtp.wait_played()
            # The ASR service hears the caller, the core cuts the greeting, and its turn
            # ends (the cut greeting enters the history then): wait for that, not a time.
            history = await asyncio.to_thread(
                wait_until, lambda: interrupted_history(core), 30, 0.2,
                "the greeting marked interrupted in the history")
            metrics = core.metrics()
            # The TTS service logs the cancelled stream once it sees it (another process).
            tts_log = await asyncio.to_thread(
                wait_until, lambda: log_with(ai.tts.proc, "stopped after"), 30, 0.2,
                "the TTS service's cancelled stream")
        log = core.proc.output()
    finally:
        await leave(cm)

    assert history[0]["role"] == "assistant"
    assert history[0]["content"].endswith("[interrupted]"), history
    assert "barge-in" in log
    assert "voice_barge_ins_total 1.0" in metrics
    # The greeting (about a minute of speech) stopped: little of it reached the caller.
    greeting_speech = [f for f in rtp.frames if first <= f.at <= spoken_until
                       and rms(f.pcm) >= SPEECH_RMS]
    assert len(greeting_speech) * 0.02 < 10.0
    # The TTS stream of the greeting was still running (Piper is faster than real time but
    # a 20 s greeting takes it seconds): the core cancelled it and the service saw it.
    barge_lines = [line for line in log.splitlines() if "barge-in" in line]
    assert "TTS" in barge_lines[0], barge_lines
    assert "stopped after" in tts_log, tts_log[-2000:]


def log_with(proc, text: str) -> str | None:
    """The process's output once it holds `text`."""
    output = proc.output()
    return output if text in output else None


def interrupted_history(core) -> list[dict] | None:
    """The call's history once an assistant entry in it is marked interrupted."""
    calls = core.calls()
    history = calls[0]["history"] if calls else []
    cut = any(m["role"] == "assistant" and m["content"].endswith("[interrupted]")
              for m in history)
    return history if cut else None


async def test_dtmf_digits_join_the_dialogue(ai, start_core):
    cm = start_core()
    core = await enter(cm)
    try:
        async with direct_call(core) as (_sip, rtp):
            await wait_greeting(rtp, core, time.monotonic() - 1)
            for digit in "42#":
                rtp.send_dtmf(digit)
            # The keys go out paced (RTP), the core collects them until "#": wait for the
            # dialogue entry (history_until fails with the history if it never comes).
            history = await history_until(core, "[DTMF 42#]", 30, role="user")
    finally:
        await leave(cm)
    assert {"role": "user", "content": "[DTMF 42#]"} in history, history


async def test_hold_stops_outbound_rtp_and_resume_restarts_it(ai, start_core):
    cm = start_core()
    core = await enter(cm)
    try:
        async with direct_call(core) as (sip, rtp):
            await wait_greeting(rtp, core, time.monotonic() - 1)
            hold = await sip.reinvite(make_sdp("127.0.0.1", rtp.local_port, direction="sendonly"))
            assert hold.status == 200 and "a=recvonly" in hold.body
            # The core stops sending before it answers, and frames carry the kernel's
            # arrival time: what was sent before the hold arrived before this moment,
            # however late this loop reads it (but one packet: the pacer's clock thread
            # may have been sending it as the hold came).
            held_at = time.monotonic()
            await asyncio.sleep(1.3)
            during_hold = [f for f in rtp.frames if f.at > held_at]
            resume = await sip.reinvite(make_sdp("127.0.0.1", rtp.local_port))
            assert resume.status == 200 and "a=sendrecv" in resume.body
            resumed_at = time.monotonic()
            # Sending again: a second of packets (~50 a second) comes, however busy the
            # machine is.
            await asyncio.to_thread(
                wait_until, lambda: sum(f.at > resumed_at for f in rtp.frames) >= 50, 30,
                0.1, "a second of RTP after the resume")
    finally:
        await leave(cm)
    assert len(during_hold) <= 1, len(during_hold)


async def test_services_restarted_mid_call_do_not_drop_the_call(ai, start_core):
    cm = start_core()
    core = await enter(cm)
    try:
        async with direct_call(core) as (sip, rtp):
            await wait_greeting(rtp, core, time.monotonic() - 1)
            # The ASR stream is open during the restart: the core must reopen it.
            for svc in (ai.asr, ai.llm, ai.tts):
                await asyncio.to_thread(restart, svc)
            answer = await ask(rtp, ai, "what is my balance")
            assert is_account_question(answer), answer
            assert not sip.bye_received.is_set()
            calls = core.calls()
    finally:
        await leave(cm)
    assert calls[0]["asr_reconnects"] >= 1


async def test_llm_down_gets_an_apology_and_the_call_goes_on(ai, start_core):
    cm = start_core(CORE_LLM_TIMEOUT_S="3")
    core = await enter(cm)
    try:
        async with direct_call(core) as (sip, rtp):
            await wait_greeting(rtp, core, time.monotonic() - 1)
            await asyncio.to_thread(stop, ai.llm)
            try:
                apology = await ask(rtp, ai, "what is my balance")
            finally:
                await asyncio.to_thread(start, ai.llm)
            assert "sorry" in apology or "trouble" in apology, apology
            answer = await ask(rtp, ai, "what is my balance")
            assert is_account_question(answer), answer
            assert not sip.bye_received.is_set()
    finally:
        await leave(cm)


async def test_caller_silence_gets_a_prompt_then_the_bot_hangs_up(ai, start_core):
    cm = start_core(BOT_SILENCE_TIMEOUT_S="2")
    core = await enter(cm)
    try:
        async with direct_call(core) as (sip, rtp):
            first = await rtp.wait_for_speech(time.monotonic() - 1, 30)
            assert first is not None, "no greeting"
            # Say nothing: first "are you still there?", then the goodbye and a BYE. The
            # prompt comes 2 s after the greeting: it is looked for from the greeting's
            # end as the core reports it, not from when this loop noticed a quiet spell.
            greeting_end = await greeting_over(rtp, core)
            prompt_at = await rtp.wait_for_speech(greeting_end, 15)
            assert prompt_at is not None
            end = await rtp.wait_for_silence(prompt_at, 0.8, 15)
            prompt = await transcribe_reply(ai.asr.target, rtp.audio_between(prompt_at, end))
            assert "still there" in prompt, prompt
            await asyncio.wait_for(sip.bye_received.wait(), 20)
    finally:
        await leave(cm)


async def test_maximum_call_duration_ends_the_call(ai, start_core):
    cm = start_core(BOT_MAX_CALL_DURATION_S="6")
    core = await enter(cm)
    try:
        async with direct_call(core) as (sip, rtp):
            started = time.monotonic()
            await asyncio.wait_for(sip.bye_received.wait(), 30)
            assert time.monotonic() - started >= 5
            goodbye = rtp.audio_between(started + 4, time.monotonic())
            assert is_goodbye_answer(await transcribe_reply(ai.asr.target, goodbye))
            await asyncio.sleep(0.5)
            assert core.calls() == []
    finally:
        await leave(cm)
