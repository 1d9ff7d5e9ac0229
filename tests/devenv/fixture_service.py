"""The echo service for the dev-stack tests (run through voice_common.launch, hot reload
watches $ECHO_WATCH_PATHS).

Run: python -m tests.devenv.fixture_service (or through voice_common.launch).
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from voice_common.config import load_settings
from voice_common.runtime import ServiceDefinition, run_service
from voice_testkit.echo_service import EchoRecognizer, EchoSettings
from voiceai.asr.v1 import asr_pb2_grpc


def main() -> int:
    settings = load_settings(EchoSettings)
    def register(server: grpc.aio.Server) -> list[str]:
        asr_pb2_grpc.add_RecognizerServicer_to_server(EchoRecognizer(), server)
        return ["voiceai.asr.v1.Recognizer"]

    async def warmup() -> None:
        await asyncio.sleep(settings.warmup_s)

    return run_service(ServiceDefinition("echo-service", settings, register, warmup))


if __name__ == "__main__":
    sys.exit(main())
