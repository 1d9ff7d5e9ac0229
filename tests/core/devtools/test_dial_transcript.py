"""dev-call against a real core and the real services: it prints what the core's
recognizer heard and what the bot spoke (the core's transcript), and the call leaves
its stereo WAV and JSON transcript in CORE_RECORDINGS_DIR.

The services are the session's (`ai`: pocketsphinx, the demo LLM, Piper, with the dev
stack's settings); the core is a subprocess on free loopback ports; dev-call runs as
scripts/dev-call.sh runs it, and dials the core's direct SIP port.
"""

from __future__ import annotations

import json
import re
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import AiServices
from voice_testkit.procs import LOOPBACK, base_env, python_module, wait_until
from voice_testkit.stack import core

pytestmark = [pytest.mark.timeout(400)]

RATE = 8000
WINDOW = 160  # 20 ms


def loud(channel: np.ndarray, threshold: float = 300.0) -> np.ndarray:
    """Per 20 ms window: whether it carries speech."""
    frames = channel[: len(channel) // WINDOW * WINDOW].astype(np.float64).reshape(-1, WINDOW)
    return np.sqrt((frames ** 2).mean(axis=1)) >= threshold


def test_dev_call_prints_the_cores_transcript_and_the_call_is_recorded(
        ai: AiServices, tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    with core(tmp_path, ai.asr.target, ai.llm.target, ai.tts.target,
              BOT_RECORD_AUDIO="1", BOT_SAVE_TRANSCRIPT="1",
              CORE_RECORDINGS_DIR=str(recordings)) as running:
        result = subprocess.run(
            python_module("opensips_ai_core.devtools.dial", "--sip",
                          f"{LOOPBACK}:{running.sip_port}", "--http",
                          f"{LOOPBACK}:{running.http_port}", "--asr", ai.asr.target,
                          "--tts", ai.tts.target, "what is my balance"),
            env=base_env(), capture_output=True, text=True, timeout=300, check=False)
        out = result.stdout
        assert result.returncode == 0, out + result.stderr
        call_id = re.search(r"Call-ID (\S+)\)", out).group(1)
        wait_until((recordings / f"{call_id}.json").exists, 30, 0.1,
                   "the transcript file")
        wait_until((recordings / f"{call_id}.wav").exists, 30, 0.1, "the WAV file")

    transcript = json.loads((recordings / f"{call_id}.json").read_text())
    greeting, reply = transcript["turns"][:2]
    # dev-call shows the core's own record: the greeting's text, what was heard, the reply.
    assert f"bot (greeting): {greeting['said']}\n" in out
    assert greeting["said"] == "Hello, this is Example Bank. How can I help you?"
    assert f"  recognizer heard: {reply['heard']}\n" in out
    assert "balance" in reply["heard"]
    assert f"bot: {reply['said']}\n" in out and "account number" in reply["said"].lower()
    assert f"  core latency: {reply['latency_ms']} ms" in out
    assert "  turn latency: " in out and "call ended: " in out
    assert "the caller heard, by ASR" not in out  # --check-audio was not asked for
    assert transcript["sip_call_id"] == call_id and transcript["ended"]

    with wave.open(str(recordings / f"{call_id}.wav")) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, RATE)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    caller, bot = loud(stereo[:, 0]), loud(stereo[:, 1])
    window_s = WINDOW / RATE
    # The bot's audio starts where the transcript says each turn's first packet went.
    for turn in (greeting, reply):
        start = round(turn["first_audio_s"] / window_s)
        assert bot[start:start + 10].any(), turn
        assert not bot[max(0, start - 10):start - 2].any(), turn
    # The caller spoke between the greeting and the reply, on the left channel only;
    # the right channel is silent then, the left one while the greeting played.
    spoke = np.flatnonzero(caller)
    assert spoke.size, "no caller audio on the left channel"
    first_word, last_word = spoke[0] * window_s, spoke[-1] * window_s
    reply_at = reply["first_audio_s"]
    assert greeting["first_audio_s"] < first_word < last_word < reply_at
    assert not bot[spoke[0]:spoke[-1]].any()
    assert not caller[round(greeting["first_audio_s"] / window_s):spoke[0]].any()
    # The recognizer's end of speech is where the caller's audio ends (VAD endpointing).
    assert abs(reply["speech_end_s"] - last_word) < 1.0
