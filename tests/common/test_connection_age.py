"""The services' maximum connection age: GOAWAY, the client reconnects, open streams go on.

The shared runtime (`voice_common.runtime`) serves the real ASR contract on 127.0.0.1
with a 1 s connection age; the client is the core's own channel (`open_channel`:
round_robin, health-checked, `wait_for_ready`), kept open for the whole test as the core
keeps its channels. Each answer names the connection it came on (the client's address
as the server sees it), so the test sees the reconnection itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from pydantic_settings import SettingsConfigDict

from opensips_ai_core.grpc_clients.channel import open_channel
from voice_common.config import ServiceSettings
from voice_common.runtime import GrpcServiceRuntime, ServiceDefinition
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

pytestmark = [pytest.mark.timeout(90)]

AGE_S = 1.0
# Bounds, not timings: how many short RPCs (0.1 s apart) may pass before a reconnection.
MAX_ROUNDS = 300


class AgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AGE_TEST_", extra="ignore", frozen=True)


class PeerRecognizer(asr_pb2_grpc.RecognizerServicer):
    """Answers each audio chunk with the client connection's address as the engine."""

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[asr_pb2.RecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[asr_pb2.RecognizeResponse]:
        async for request in request_iterator:
            if request.HasField("audio"):
                yield asr_pb2.RecognizeResponse(engine=context.peer())


async def serve(**settings: float) -> GrpcServiceRuntime:
    def register(server: grpc.aio.Server) -> list[str]:
        asr_pb2_grpc.add_RecognizerServicer_to_server(PeerRecognizer(), server)
        return ["voiceai.asr.v1.Recognizer"]

    runtime = GrpcServiceRuntime(ServiceDefinition(
        "age-test", AgeSettings(max_connection_age_s=AGE_S, **settings), register))
    await runtime.start()
    await runtime.warm_up()
    return runtime


class Stream:
    """One StreamingRecognize call: send a chunk, read the connection it answered on."""

    def __init__(self, stub: asr_pb2_grpc.RecognizerStub) -> None:
        self.requests: asyncio.Queue[asr_pb2.RecognizeRequest | None] = asyncio.Queue()
        self.requests.put_nowait(asr_pb2.RecognizeRequest(
            config=asr_pb2.StreamingConfig(sample_rate_hz=8000)))
        self.call = stub.StreamingRecognize(self._requests(), wait_for_ready=True, timeout=60)

    async def _requests(self) -> AsyncIterator[asr_pb2.RecognizeRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    async def peer(self) -> str:
        await self.requests.put(asr_pb2.RecognizeRequest(audio=b"\0" * 320))
        response = await self.call.read()
        assert isinstance(response, asr_pb2.RecognizeResponse), response
        return response.engine

    async def end(self) -> None:
        await self.requests.put(None)
        assert await self.call.read() is grpc.aio.EOF
        assert await self.call.code() is grpc.StatusCode.OK


async def one_rpc(stub: asr_pb2_grpc.RecognizerStub) -> str:
    stream = Stream(stub)
    peer = await stream.peer()
    await stream.end()
    return peer


async def test_a_long_lived_channel_reconnects_and_an_open_stream_outlives_the_age() -> None:
    runtime = await serve()
    channel = open_channel(f"127.0.0.1:{runtime.port}")
    try:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        # A call's ASR stream, open from the start.
        long = Stream(stub)
        first = await long.peer()
        # Short RPCs keep coming on the same channel, every one of them answered, until
        # one comes on a new connection: the first was told to go (GOAWAY) past its age.
        peers = [await one_rpc(stub)]
        for _ in range(MAX_ROUNDS):
            if peers[-1] != first:
                break
            await asyncio.sleep(0.1)
            peers.append(await one_rpc(stub))
        assert peers[-1] != first, f"no new connection after {len(peers)} RPCs"
        # ... and once more, past the new connection's own age.
        second = peers[-1]
        for _ in range(MAX_ROUNDS):
            if peers[-1] not in (first, second):
                break
            await asyncio.sleep(0.1)
            peers.append(await one_rpc(stub))
        assert peers[-1] not in (first, second)
        # The stream opened first is still on the first connection and still answers:
        # the age asks the client to go, it does not cut what is open (no grace bound).
        assert await long.peer() == first
        await long.end()
    finally:
        await channel.close()
        await runtime.stop()


async def test_a_grace_bound_cuts_a_stream_still_open_after_it() -> None:
    # Why the grace is unset by default: with one, a call's ASR stream on an old
    # connection is broken once age + grace have passed.
    runtime = await serve(max_connection_age_grace_s=0.5)
    channel = open_channel(f"127.0.0.1:{runtime.port}")
    try:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        long = Stream(stub)
        first = await long.peer()
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            for _ in range(MAX_ROUNDS):
                await asyncio.sleep(0.1)
                assert await long.peer() == first
        assert cut.value.code() is grpc.StatusCode.UNAVAILABLE, cut.value
        # The channel itself goes on, on a new connection.
        assert await one_rpc(stub) != first
    finally:
        await channel.close()
        await runtime.stop()
