"""A stream the service ends with an error frees its slot before the client hears it.

gRPC sends an abort's status before the servicer's code after the abort runs, so a
slot freed only in the servicer's `finally` was still held, in about a quarter of the
rounds on this machine, when the client read the error: a client at the limit that
opened its next stream at once could be refused RESOURCE_EXHAUSTED. The real servicer
(pocketsphinx, streams on threads, as ASR_WORKERS=0 runs it) on a real gRPC server on
127.0.0.1, in this process so that the test can read its slot count at the moment the
client's call raised; the client on a thread of its own, as a remote one would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from asr_service.engines import create_engine
from asr_service.servicer import RecognizerServicer
from asr_service.settings import AsrSettings
from voice_testkit.procs import LOOPBACK
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

pytestmark = pytest.mark.timeout(120)

ROUNDS = 50


def config() -> asr_pb2.RecognizeRequest:
    return asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(
        sample_rate_hz=16000, interim_results=True))


@pytest.fixture
async def served() -> AsyncIterator[tuple[RecognizerServicer, str]]:
    settings = AsrSettings(engine="pocketsphinx", max_concurrent_streams=1, workers=0)
    servicer = RecognizerServicer(create_engine(settings), settings)
    await servicer.warm_up()
    server = grpc.aio.server()
    asr_pb2_grpc.add_RecognizerServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    await server.start()
    try:
        yield servicer, f"{LOOPBACK}:{port}"
    finally:
        await server.stop(None)
        await servicer.close()


async def test_a_stream_ended_by_an_error_has_freed_its_slot_when_the_client_hears(
        served: tuple[RecognizerServicer, str]) -> None:
    servicer, target = served

    def rounds() -> list[tuple[str, int, str]]:
        """Per round: the error, the slots held as the client read it, and the next
        stream's outcome ("served" or its status)."""
        seen = []
        with grpc.insecure_channel(target) as channel:
            stub = asr_pb2_grpc.RecognizerStub(channel)
            for _ in range(ROUNDS):
                odd_chunk = [config(), asr_pb2.RecognizeRequest(audio=b"\0" * 641)]
                try:
                    list(stub.StreamingRecognize(iter(odd_chunk), timeout=30))
                    error, held = "none", -1
                except grpc.RpcError as refused:
                    error, held = refused.code().name, servicer.active_streams
                silence = [config(), asr_pb2.RecognizeRequest(audio=b"\0" * 640)]
                try:
                    list(stub.StreamingRecognize(iter(silence), timeout=30))
                    outcome = "served"
                except grpc.RpcError as next_error:
                    outcome = next_error.code().name
                seen.append((error, held, outcome))
        return seen

    seen = await asyncio.to_thread(rounds)
    assert seen == [("INVALID_ARGUMENT", 0, "served")] * ROUNDS
    assert servicer.active_streams == 0
