"""Streams opened and left idle are ended (ASR_IDLE_TIMEOUT_S), so that they do not hold
the concurrent-stream limit; a stream that keeps sending is untouched."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.asr.conftest import asr_service, requires_espeak
from voice_testkit.asr_client import final_text, transcribe
from voice_testkit.speech import speech_pcm
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

pytestmark = [requires_espeak, pytest.mark.timeout(120)]

IDLE_S = "1"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("asr-idle")
    # One stream slot: an idle stream that were never ended would lock everyone out.
    with asr_service(logs / "asr.log", ASR_ENGINE="pocketsphinx", ASR_IDLE_TIMEOUT_S=IDLE_S,
                     ASR_MAX_CONCURRENT_STREAMS="1") as (address, _proc):
        yield address


def config() -> asr_pb2.RecognizeRequest:
    return asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(sample_rate_hz=16000))


def idle_stream(target: str, first: list[asr_pb2.RecognizeRequest]) -> grpc.RpcError:
    """Send `first`, then nothing (the stream stays open); the error that ends it."""
    release: queue.Queue[None] = queue.Queue()

    def requests() -> Iterator[asr_pb2.RecognizeRequest]:
        yield from first
        release.get()  # until the test is done with the stream

    with grpc.insecure_channel(target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        try:
            with pytest.raises(grpc.RpcError) as info:
                list(stub.StreamingRecognize(requests(), timeout=60))
        finally:
            release.put(None)
    return info.value


@pytest.mark.parametrize("first", [[config()], [config(), asr_pb2.RecognizeRequest(
    audio=bytes(640))], []], ids=["config only", "config and 20 ms", "nothing"])
def test_an_idle_stream_is_ended_and_frees_its_slot(target: str, speech_dir: Path,
                                                    first: list[asr_pb2.RecognizeRequest]
                                                    ) -> None:
    err = idle_stream(target, first)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert f"nothing received for {IDLE_S} s (ASR_IDLE_TIMEOUT_S)" in err.details()
    # The one slot is free again: the next caller is heard.
    pcm = speech_pcm("hello world", "en-us", speech_dir, 16000, "idle", words_per_minute=150)
    assert "world" in final_text(transcribe(target, pcm, 16000, speed=0))
