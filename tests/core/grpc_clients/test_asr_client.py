"""The core's ASR client against the real ASR service (pocketsphinx) on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from opensips_ai_core.grpc_clients.asr import MAX_CHUNK_S, AsrClient
from tests.asr.conftest import asr_service, requires_espeak
from voice_testkit.speech import speech_pcm
from voiceai.asr.v1 import asr_pb2

pytestmark = [requires_espeak, pytest.mark.timeout(120)]

RATE = 8000


@pytest.fixture(scope="module")
def asr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    logs = tmp_path_factory.mktemp("asr-client")
    with asr_service(logs / "asr.log", ASR_ENGINE="pocketsphinx") as (target, proc):
        yield target, proc.log_path


async def recognize(target: str, parts: list[bytes]) -> tuple[list[asr_pb2.RecognizeResponse],
                                                              int]:
    """Send `parts` as the RTP path would; the responses until the first final, and the
    number of times the stream had to be reopened."""
    client = AsrClient(target)
    responses: list[asr_pb2.RecognizeResponse] = []
    final = asyncio.Event()

    async def on_response(response: asr_pb2.RecognizeResponse) -> None:
        responses.append(response)
        if response.WhichOneof("result") == "final":
            final.set()

    session = client.session("split-test", on_response, sample_rate=RATE)
    session.start()
    try:
        for part in parts:
            session.send(part)
        await asyncio.wait_for(final.wait(), 60)
        return responses, session.reconnects
    finally:
        await session.close()
        await client.close()


def test_a_part_over_the_chunk_limit_is_split_not_refused(asr: tuple[str, Path],
                                                          tmp_path: Path) -> None:
    # Regression: an RTP payload of 16001 bytes (G.711: 32002 bytes of PCM16) became one
    # chunk over the service's 32000-byte limit: INVALID_ARGUMENT, the stream died.
    target, log_path = asr
    pcm = speech_pcm("hello world", "en-us", tmp_path, RATE, words_per_minute=150)
    part = (pcm + bytes(32002))[:max(32002, len(pcm))]
    assert len(part) > 32000
    responses, reconnects = asyncio.run(recognize(target, [part]))
    assert reconnects == 0
    finals = [r.final.text for r in responses if r.WhichOneof("result") == "final"]
    assert finals and finals[0], [r.WhichOneof("result") for r in responses]
    assert "exceeds the limit" not in log_path.read_text(errors="replace")


def test_small_frames_are_still_joined(asr: tuple[str, Path], tmp_path: Path) -> None:
    target, _ = asr
    pcm = speech_pcm("hello world", "en-us", tmp_path, RATE, words_per_minute=150)
    frame = RATE * 2 // 50  # 20 ms
    parts = [pcm[i:i + frame] for i in range(0, len(pcm), frame)]
    responses, reconnects = asyncio.run(recognize(target, parts))
    assert reconnects == 0
    assert any(r.WhichOneof("result") == "final" and r.final.text for r in responses)
    assert MAX_CHUNK_S * RATE * 2 <= 32000
