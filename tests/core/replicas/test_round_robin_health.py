"""The core's channels over several replicas: round_robin, and grpc.health.v1 taking a
NOT_SERVING replica out of rotation (and putting it back once SERVING again).

Each replica is a real gRPC server on 127.0.0.1 with the standard health service and the
ASR contract, answering with its own name so the test sees which replica took a stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from opensips_ai_core.grpc_clients.channel import HEALTH_SERVICE, open_channel
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

pytestmark = [pytest.mark.timeout(60)]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class NamedRecognizer(asr_pb2_grpc.RecognizerServicer):
    """Answers a stream's first audio with the replica's name as the engine."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[asr_pb2.RecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[asr_pb2.RecognizeResponse]:
        async for request in request_iterator:
            if request.HasField("audio"):
                yield asr_pb2.RecognizeResponse(engine=self.name)
                return


class Replica:
    def __init__(self, name: str) -> None:
        self.name = name
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server()
        asr_pb2_grpc.add_RecognizerServicer_to_server(NamedRecognizer(name), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def set(self, status: int) -> None:
        await self.health.set(HEALTH_SERVICE, status)


async def which_replica(stub: asr_pb2_grpc.RecognizerStub) -> str:
    async def requests() -> AsyncIterator[asr_pb2.RecognizeRequest]:
        yield asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(sample_rate_hz=8000))
        yield asr_pb2.RecognizeRequest(audio=b"\0" * 320)

    async for response in stub.StreamingRecognize(requests(), wait_for_ready=True, timeout=10):
        return response.engine
    raise AssertionError("the stream ended without an answer")


async def which_replica_or_lost(stub: asr_pb2_grpc.RecognizerStub) -> str:
    """Like which_replica, but a stream placed on a replica the channel has not yet seen go
    ends UNAVAILABLE ("Stream removed"); the core retries such a stream, so it counts here as
    neither replica rather than as a failure."""
    try:
        return await which_replica(stub)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return "unavailable"


async def streams_until(
    stub: asr_pb2_grpc.RecognizerStub, wanted: set[str], timeout: float = 20.0
) -> list[str]:
    """Open streams until the last 6 went to exactly `wanted` (a health change or a lost
    replica reaches the channel asynchronously); return those 6."""
    deadline = time.monotonic() + timeout
    while True:
        names = [await which_replica_or_lost(stub) for _ in range(6)]
        if set(names) == wanted:
            return names
        if time.monotonic() > deadline:
            raise AssertionError(f"streams went to {names}, wanted {sorted(wanted)}")
        await asyncio.sleep(0.05)


async def test_round_robin_skips_a_not_serving_replica_and_takes_it_back() -> None:
    a, b = Replica("a"), Replica("b")
    for replica in (a, b):
        await replica.server.start()
    await a.set(SERVING)
    await b.set(NOT_SERVING)  # listening but warming up, or draining
    channel = open_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}")
    stub = asr_pb2_grpc.RecognizerStub(channel)
    try:
        # b's health is known before any stream is placed: none may go to it.
        assert [await which_replica(stub) for _ in range(6)] == ["a"] * 6
        await b.set(SERVING)
        await streams_until(stub, {"a", "b"})
        names = [await which_replica(stub) for _ in range(6)]
        assert names.count("a") == names.count("b") == 3, names  # round_robin alternates
        await a.set(NOT_SERVING)
        await streams_until(stub, {"b"})
    finally:
        await channel.close()
        for replica in (a, b):
            await replica.server.stop(0)


async def test_a_stream_stays_on_its_replica_and_a_lost_replica_leaves_the_other() -> None:
    a, b = Replica("a"), Replica("b")
    for replica in (a, b):
        await replica.server.start()
        await replica.set(SERVING)
    channel = open_channel(f"127.0.0.1:{a.port},127.0.0.1:{b.port}")
    stub = asr_pb2_grpc.RecognizerStub(channel)
    try:
        await streams_until(stub, {"a", "b"})
        await a.server.stop(0)  # a replica lost: its port closed
        await streams_until(stub, {"b"})
    finally:
        await channel.close()
        await b.server.stop(0)
