"""A service built on the shared runtime, for testing the runtime itself.

It serves the real ASR contract with a trivial engine (each audio chunk is
answered by a partial naming its byte count) and a warm-up that lasts
ECHO_WARMUP_S seconds and, with ECHO_WARMUP_UNTIL set, until that file exists (a
test looks at NOT_SERVING for as long as it needs, however slow the machine, then
creates the file), so tests can watch NOT_SERVING turn into SERVING and
observe graceful shutdown with a stream open; the dev-stack tests run it under
voice_common.launch (hot reload watches $ECHO_WATCH_PATHS).
Run: python -m voice_testkit.echo_service
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from voice_common.config import ServiceSettings, load_settings
from voice_common.runtime import ServiceDefinition, run_service
from voiceai.asr.v1 import asr_pb2, asr_pb2_grpc


class EchoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ECHO_", extra="ignore", frozen=True,
                                      title="echo-service")
    warmup_s: float = Field(0.0, ge=0)
    warmup_until: Path | None = None


class EchoRecognizer(asr_pb2_grpc.RecognizerServicer):
    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[asr_pb2.RecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[asr_pb2.RecognizeResponse]:
        async for request in request_iterator:
            if request.HasField("audio"):
                text = f"{len(request.audio)} bytes"
                yield asr_pb2.RecognizeResponse(partial=asr_pb2.Transcript(text=text),
                                                engine="echo")


def main() -> int:
    settings = load_settings(EchoSettings)

    def register(server: grpc.aio.Server) -> list[str]:
        asr_pb2_grpc.add_RecognizerServicer_to_server(EchoRecognizer(), server)
        return ["voiceai.asr.v1.Recognizer"]

    async def warmup() -> None:
        await asyncio.sleep(settings.warmup_s)
        # A file another process creates: nothing to await but its existence.
        while settings.warmup_until is not None and not settings.warmup_until.exists():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    return run_service(ServiceDefinition("echo-service", settings, register, warmup))


if __name__ == "__main__":
    sys.exit(main())
