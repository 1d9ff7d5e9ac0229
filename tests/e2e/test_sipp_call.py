"""A real SIP call from SIPp to the core's direct SIP port, through the real services.

SIPp (Debian's sip-tester) dials, plays the caller's words as headerless PCMU made by
the TTS service at test time (SIPp sends such files raw), and waits for the bot's BYE.
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
    is_balance_answer,
    is_goodbye_answer,
    pcmu_frames,
    speech_of,
    speech_segments,
)
from voice_testkit import sniffer
from voice_testkit.procs import running

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


def test_sipp_call_is_answered_and_the_bot_answers_then_hangs_up(ai, start_core, tmp_path):
    question = speech_of(ai.tts.target, "what is my balance")
    goodbye = speech_of(ai.tts.target, "thank you goodbye")
    question_file, goodbye_file = tmp_path / "question.pcmu", tmp_path / "goodbye.pcmu"
    question_s = write_pcmu(question_file, question)
    write_pcmu(goodbye_file, goodbye)
    scenario = tmp_path / "call.xml"
    scenario.write_text(SCENARIO.read_text().format(
        greeting_ms=5000, question_file=question_file, goodbye_file=goodbye_file,
        answer_ms=int(question_s * 1000) + 7000, bye_timeout_ms=20000))

    with start_core() as core:
        with sniffer.UdpSniffer(*core.rtp_range) as capture:
            cmd = ["sipp", f"127.0.0.1:{core.sip_port}", "-sf", str(scenario), "-m", "1",
                   "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", "0", "-timeout", "60",
                   "-timeout_error", "-trace_err", "-error_file", str(tmp_path / "sipp.err"),
                   "-nostdin"]
            with running(cmd, {"PATH": "/usr/bin:/bin"}, tmp_path / "sipp.log",
                         cwd=tmp_path) as sipp:
                code = sipp.wait(90)
                output = sipp.output()
            errors = tmp_path / "sipp.err"
            log = errors.read_text(errors="replace") if errors.exists() else ""
            assert code == 0, f"SIPp failed ({code}): {log[-3000:]}\n{output[-2000:]}\n" \
                              f"{core.proc.output()[-3000:]}"
            datagrams = capture.snapshot()
        metrics = core.metrics()

    frames = pcmu_frames(datagrams)
    assert frames, "the core sent no PCMU RTP"
    segments = speech_segments(frames)
    # Greeting, the answer to the question, the goodbye.
    assert len(segments) >= 3, [len(s) for s in segments]
    heard = [hear(ai.asr.target, s) for s in segments]
    answer = " ".join(heard[1:-1])
    assert is_balance_answer(answer), heard
    assert is_goodbye_answer(heard[-1]), heard
    assert 'voice_calls_total{backend="sip",result="answered"} 1.0' in metrics
    assert "voice_turn_latency_seconds_count" in metrics
