"""The core sees the services' own status codes, not grpcio's `INTERNAL: Internal error
from Core`, against the real ASR service on loopback.

grpcio's asyncio client replaced the status of a stream the server ended while the client
was still writing (grpc/grpc issue 36066): before the fix about a third of these streams
reported INTERNAL and the core's log never named the real cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from opensips_ai_core.grpc_clients.channel import open_channel
from tests.asr.conftest import asr_service
from voice_testkit.procs import Proc, wait_until
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

pytestmark = pytest.mark.timeout(180)

STREAMS = 20  # bounded; before the fix 6 of 20 came back INTERNAL
FRAME = bytes(1600)  # 100 ms of 8 kHz silence


@pytest.fixture(scope="module")
def asr_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc]]:
    logs = tmp_path_factory.mktemp("asr-status")
    # DEBUG: the service logs each stream it took ("stream opened"), which a test waits for.
    with asr_service(logs / "asr.log", ASR_ENGINE="pocketsphinx",
                     ASR_MAX_CONCURRENT_STREAMS="2", ASR_LOG_LEVEL="DEBUG") as running:
        yield running


@pytest.fixture
def asr(asr_proc: tuple[str, Proc]) -> str:
    return asr_proc[0]


def streams_opened(proc: Proc) -> int:
    """How many streams the service has taken (counted against its limit) so far."""
    return proc.output().count("stream opened")


def config() -> asr_pb2.RecognizeRequest:
    return asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(sample_rate_hz=8000,
                                                                   call_id="status-test"))


async def stream_status(stub: asr_pb2_grpc.RecognizerStub, *, oversized_at: int | None,
                        frames: int = 400) -> tuple[grpc.StatusCode, str]:
    """Write audio without pause (an oversized chunk at `oversized_at`); the final status."""
    async def requests() -> object:
        yield config()
        for index in range(frames):
            size = 32002 if index == oversized_at else len(FRAME)
            yield asr_pb2.RecognizeRequest(audio=bytes(size))
            await asyncio.sleep(0)

    call = stub.StreamingRecognize(requests())
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def test_invalid_argument_arrives_as_itself(asr: str) -> None:
    async def run() -> list[tuple[grpc.StatusCode, str]]:
        channel = open_channel(asr)
        try:
            stub = asr_pb2_grpc.RecognizerStub(channel)
            return [await stream_status(stub, oversized_at=3) for _ in range(STREAMS)]
        finally:
            await channel.close()

    results = asyncio.run(run())
    assert all(code == grpc.StatusCode.INVALID_ARGUMENT for code, _ in results), results
    assert all("32002 bytes exceeds the limit" in details for _, details in results), results


def test_resource_exhausted_arrives_as_itself(asr_proc: tuple[str, Proc]) -> None:
    asr, proc = asr_proc
    opened = streams_opened(proc)

    async def run() -> list[tuple[grpc.StatusCode, str]]:
        channel = open_channel(asr)
        stub = asr_pb2_grpc.RecognizerStub(channel)
        hold = asyncio.Event()

        async def held() -> object:
            yield config()
            await hold.wait()

        # Fill the service's two streams, then open more while writing audio.
        holders = [stub.StreamingRecognize(held()) for _ in range(2)]
        try:
            for holder in holders:
                await asyncio.wait_for(holder.wait_for_connection(), 30)
            # wait_for_connection is the client's side only: wait until the service
            # has taken both streams, however long its loop takes to get to them.
            await asyncio.to_thread(wait_until, lambda: streams_opened(proc) >= opened + 2,
                                    30, 0.05, "the service to take both streams")
            return [await stream_status(stub, oversized_at=None, frames=200)
                    for _ in range(STREAMS)]
        finally:
            hold.set()
            for holder in holders:
                holder.cancel()
            await channel.close()

    results = asyncio.run(run())
    assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED for code, _ in results), results
    assert all("limit 2" in details for _, details in results), results
