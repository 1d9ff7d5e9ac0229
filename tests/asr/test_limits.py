"""Bad input is refused with INVALID_ARGUMENT naming the limit; the service stays up."""

from __future__ import annotations

import queue
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from asr_service import SERVICE_NAME
from tests.asr.conftest import asr_service, requires_espeak
from voice_testkit.asr_client import final_text, transcribe
from voice_testkit.procs import (
    LOOPBACK,
    base_env,
    free_port,
    health_status,
    python_module,
    running,
    wait_serving,
    wait_until,
)
from voice_testkit.speech import speech_pcm
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

pytestmark = [requires_espeak, pytest.mark.timeout(120)]

MAX_STREAMS = 2


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("asr-limits")
    with asr_service(logs / "asr.log", ASR_ENGINE="pocketsphinx",
                     ASR_MAX_CONCURRENT_STREAMS=str(MAX_STREAMS)) as (address, _proc):
        yield address


@pytest.fixture(scope="module")
def hello(speech_dir: Path) -> bytes:
    return speech_pcm("hello world", "en-us", speech_dir, 16000, "hello",
                      words_per_minute=150)


def config(rate: int = 16000, phrases: list[str] | None = None) -> asr_pb2.RecognizeRequest:
    return asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(
        sample_rate_hz=rate, interim_results=True, phrases=phrases or []))


def audio(data: bytes) -> asr_pb2.RecognizeRequest:
    return asr_pb2.RecognizeRequest(audio=data)


def call(target: str, requests: list[asr_pb2.RecognizeRequest]) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.StreamingRecognize(iter(requests), timeout=30))
    return info.value


BAD_STREAMS = {
    "audio before config": ([audio(b"\0" * 640)], "first request must carry the StreamingConfig"),
    "second config": ([config(), audio(b"\0" * 640), config()], "second StreamingConfig"),
    "rate 44100": ([config(44100)], "sample_rate_hz=44100 is not supported: use 8000 or 16000"),
    "rate 0": ([config(0)], "sample_rate_hz=0 is not supported"),
    "oversized chunk": ([config(), audio(b"\0" * 32002)],
                        "32002 bytes exceeds the limit of 32000 bytes"),
    "odd-length chunk": ([config(), audio(b"\0" * 641)], "odd length"),
    "too many phrases": ([config(phrases=["hello"] * 501)], "too many phrases: 501 (limit 500)"),
    "too long phrase": ([config(phrases=["ok", "x" * 101])],
                        "phrase 1 is too long: 101 characters (limit 100)"),
    "empty request": ([config(), asr_pb2.RecognizeRequest()], "neither config nor audio"),
}


@pytest.mark.parametrize("case", list(BAD_STREAMS))
def test_bad_input_is_refused_and_others_still_served(target: str, hello: bytes,
                                                      case: str) -> None:
    requests, message = BAD_STREAMS[case]
    error = call(target, requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert "world" in final_text(transcribe(target, hello, 16000, speed=0))


def test_limits_at_the_edge_are_accepted(target: str, hello: bytes) -> None:
    phrases = ["hello world", "x" * 100] + ["goodbye"] * 498
    with grpc.insecure_channel(target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        responses = list(stub.StreamingRecognize(
            iter([config(phrases=phrases), audio(hello[:32000]), audio(hello[32000:64000]),
                  audio(b"")]), timeout=30))
    assert "hello" in final_text(responses)


class OpenStream:
    """A stream whose requests the test sends one by one."""

    def __init__(self, stub: asr_pb2_grpc.RecognizerStub) -> None:
        self.requests: queue.Queue[asr_pb2.RecognizeRequest | None] = queue.Queue()
        self.responses = stub.StreamingRecognize(iter(self.requests.get, None), timeout=60)

    def send(self, request: asr_pb2.RecognizeRequest) -> None:
        self.requests.put(request)

    def end(self) -> list[asr_pb2.RecognizeResponse]:
        self.requests.put(None)
        return list(self.responses)


def test_streams_beyond_the_limit_get_resource_exhausted(target: str, hello: bytes) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        streams = [OpenStream(stub) for _ in range(MAX_STREAMS)]
        for stream in streams:
            stream.send(config())
            stream.send(audio(hello[:32000]))
            # A response proves the server counts this stream as open.
            assert next(stream.responses).WhichOneof("result") is not None
        error = call(target, [config(), audio(hello[:640])])
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"limit {MAX_STREAMS}" in error.details()
        for stream in streams:
            stream.end()

    def served() -> bool:
        try:
            return "world" in final_text(transcribe(target, hello, 16000, speed=0))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return False

    wait_until(served, timeout=10, message="a stream accepted once the others ended")


def test_cancelled_stream_leaves_the_service_serving(target: str, hello: bytes) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        stream = OpenStream(stub)
        stream.send(config())
        stream.send(audio(hello[:32000]))
        next(stream.responses)
        stream.responses.cancel()
        stream.requests.put(None)
    assert health_status(target, SERVICE_NAME) == "SERVING"
    assert "world" in final_text(transcribe(target, hello, 16000, speed=0))


def test_sigterm_exits_0_and_restarts_on_the_same_port(tmp_path: Path, hello: bytes) -> None:
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    env = base_env(ASR_HOST=LOOPBACK, ASR_PORT=str(port), ASR_ENGINE="pocketsphinx")
    for attempt in range(2):
        with running(python_module("asr_service"), env, tmp_path / f"asr{attempt}.log") as proc:
            wait_serving(address, proc, timeout=60, service=SERVICE_NAME)
            assert "world" in final_text(transcribe(address, hello, 16000, speed=0))
            proc.signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
