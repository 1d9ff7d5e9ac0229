"""A blocking client for the ASR service, reusable by other test suites (e.g. TTS round trips).

    responses = transcribe("127.0.0.1:50051", pcm, 16000)
    text = final_text(responses)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import grpc

from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc

CHUNK_MS = 20


def chunks(pcm: bytes, rate: int, chunk_ms: int = CHUNK_MS) -> Iterator[bytes]:
    size = rate * chunk_ms // 1000 * 2
    for offset in range(0, len(pcm), size):
        yield pcm[offset:offset + size]


def requests(pcm: bytes, rate: int, *, phrases: Sequence[str] = (), interim: bool = True,
             speed: float = 4.0, call_id: str = "test",
             sent: list[int] | None = None) -> Iterator[asr_pb2.RecognizeRequest]:
    """The config, then the audio in 20 ms chunks at `speed` times real time (0: no pacing).

    `sent`, if given, is a one-item list kept at the number of audio bytes handed to gRPC.
    """
    yield asr_pb2.RecognizeRequest(config=asr_pb2.StreamingConfig(
        sample_rate_hz=rate, language="", interim_results=interim, phrases=list(phrases),
        call_id=call_id))
    for chunk in chunks(pcm, rate):
        yield asr_pb2.RecognizeRequest(audio=chunk)
        if sent is not None:
            sent[0] += len(chunk)
        if speed > 0:
            time.sleep(len(chunk) / 2 / rate / speed)


def transcribe(target: str, pcm: bytes, rate: int, *, phrases: Sequence[str] = (),
               interim: bool = True, speed: float = 4.0,
               timeout: float = 60.0) -> list[asr_pb2.RecognizeResponse]:
    """Stream `pcm` (PCM16 mono at `rate`) to the service; every response, in order."""
    with grpc.insecure_channel(target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        call = stub.StreamingRecognize(
            requests(pcm, rate, phrases=phrases, interim=interim, speed=speed), timeout=timeout)
        return list(call)


def transcribe_with_progress(
    target: str, pcm: bytes, rate: int, *, phrases: Sequence[str] = (), speed: float = 1.0,
    timeout: float = 60.0,
) -> list[tuple[asr_pb2.RecognizeResponse, float]]:
    """Like `transcribe`, each response paired with the seconds of audio sent when it came."""
    sent = [0]
    out = []
    with grpc.insecure_channel(target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        call = stub.StreamingRecognize(
            requests(pcm, rate, phrases=phrases, speed=speed, sent=sent), timeout=timeout)
        for response in call:
            out.append((response, sent[0] / 2 / rate))
    return out


def finals(responses: Sequence[asr_pb2.RecognizeResponse]) -> list[asr_pb2.Transcript]:
    return [r.final for r in responses if r.WhichOneof("result") == "final"]


def final_text(responses: Sequence[asr_pb2.RecognizeResponse]) -> str:
    """All final transcripts joined with spaces."""
    return " ".join(t.text for t in finals(responses) if t.text).strip()


def kinds(responses: Sequence[asr_pb2.RecognizeResponse]) -> list[str]:
    """Each response as "partial", "final", "SPEECH_START", "SPEECH_END" or "PAUSE"."""
    out = []
    for response in responses:
        kind = response.WhichOneof("result")
        if kind == "speech":
            kind = asr_pb2.SpeechEvent.Kind.Name(response.speech.kind)
        out.append(kind)
    return out
