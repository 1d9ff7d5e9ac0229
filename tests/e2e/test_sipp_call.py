"""A real SIP call from SIPp to the core's direct SIP port, through the real services.

SIPp (Debian's sip-tester) dials, plays the caller's words as headerless PCMU made by
the TTS service at test time (SIPp sends such files raw), keys in the account number
the bot asks for with its own RFC 2833 DTMF (`play_dtmf`), and waits for the bot's BYE.
The balance comes from the mock bank over HTTP (BOT_TOOLS_BASE_URL).
SIPp keeps nothing it receives, so the core's reply RTP is read off the loopback
interface (dev/testkit/src/voice_testkit/sniffer.py) and handed to the ASR service.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from opensips_ai_core.media.g711 import ulaw_encode
from tests.e2e.audio import (
    hear,
    is_account_question,
    is_bank_balance,
    is_goodbye_answer,
    pcmu_frames,
    speech_of,
    speech_segments,
)
from tests.e2e.test_conversation import ACCOUNT
from voice_testkit import sniffer
from voice_testkit.bank import mock_bank
from voice_testkit.procs import running
from voice_testkit.stack import free_rtp_range

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (sip-tester) not installed"),
    pytest.mark.skipif(not sniffer.available(), reason="needs CAP_NET_RAW to read lo"),
]

SCENARIO = Path(__file__).with_name("sipp_ai_call.xml.in")


def write_pcmu(path: Path, pcm: np.ndarray) -> float:
    path.write_bytes(ulaw_encode(pcm))
    return len(pcm) / 8000


def test_sipp_call_gets_the_balance_of_a_keyed_in_account_then_the_bot_hangs_up(
        ai, start_core, tmp_path):
    question = speech_of(ai.tts.target, "what is my balance")
    goodbye = speech_of(ai.tts.target, "thank you goodbye")
    question_file, goodbye_file = tmp_path / "question.pcmu", tmp_path / "goodbye.pcmu"
    question_s = write_pcmu(question_file, question)
    write_pcmu(goodbye_file, goodbye)
    scenario = tmp_path / "call.xml"
    # SIPp cannot listen to the bot, so its scenario waits fixed times: long enough for a
    # loaded machine (the ASR's endpointing, the LLM and the TTS before a 4 s question for
    # the account number; the bot prompts only after 30 s of silence).
    scenario.write_text(SCENARIO.read_text().format(
        greeting_ms=7000, question_file=question_file, goodbye_file=goodbye_file,
        answer_ms=int(question_s * 1000) + 12000, account=ACCOUNT, balance_ms=16000,
        bye_timeout_ms=20000))
    # SIPp's audio and its DTMF both come from this port (the SDP's m= line).
    media_port = free_rtp_range(4)[0]

    with mock_bank(tmp_path) as base, start_core(BOT_TOOLS_BASE_URL=base) as core:
        with sniffer.UdpSniffer(*core.rtp_range) as capture:
            cmd = ["sipp", f"127.0.0.1:{core.sip_port}", "-sf", str(scenario), "-m", "1",
                   "-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", str(media_port), "-p", "0",
                   "-timeout", "90", "-timeout_error", "-trace_err",
                   "-error_file", str(tmp_path / "sipp.err"), "-nostdin"]
            with running(cmd, {"PATH": "/usr/bin:/bin"}, tmp_path / "sipp.log",
                         cwd=tmp_path) as sipp:
                code = sipp.wait(120)
                output = sipp.output()
            errors = tmp_path / "sipp.err"
            log = errors.read_text(errors="replace") if errors.exists() else ""
            assert code == 0, f"SIPp failed ({code}): {log[-3000:]}\n{output[-2000:]}\n" \
                              f"{core.proc.output()[-3000:]}"
            datagrams = capture.snapshot()
        metrics = core.metrics()
        core_log = core.proc.output()

    frames = pcmu_frames(datagrams)
    assert frames, "the core sent no PCMU RTP"
    segments = speech_segments(frames)
    # Greeting, the question for the account number, the filler and the balance, the goodbye.
    assert len(segments) >= 4, [len(s) for s in segments]
    heard = [hear(ai.asr.target, s) for s in segments]
    asked = next((i for i, text in enumerate(heard) if is_account_question(text)), None)
    assert asked is not None, heard
    assert any(is_bank_balance(text) for text in heard[asked + 1:-1]), heard
    assert is_goodbye_answer(heard[-1]), heard
    # SIPp's keys reached the dialogue, and the bank was asked for that account.
    assert f'tool get_balance({{"account":"{ACCOUNT}"}})' in core_log
    assert f"get_balance {ACCOUNT}" in (tmp_path / "bank.log").read_text()
    assert 'voice_calls_total{backend="sip",result="answered"} 1.0' in metrics
    assert "voice_turn_latency_seconds_count" in metrics
