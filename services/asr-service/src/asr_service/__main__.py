"""Entry point: ``python -m asr_service`` (or the ``opensips-ai-asr`` script)."""

from __future__ import annotations

import sys

import grpc

from asr_service import SERVICE_NAME, warm
from asr_service.engines import EngineConfigError, create_engine
from asr_service.servicer import RecognizerServicer
from asr_service.settings import AsrSettings
from voice_common.config import CONFIG_ERROR_EXIT, load_settings
from voice_common.runtime import ServiceDefinition, run_service
from voiceai.asr.v1 import asr_pb2_grpc

PROGRAM = "asr-service"


def main() -> int:
    settings = load_settings(AsrSettings, PROGRAM)
    try:
        # Loaded by the development warm parent (voice_common.warm_parent), if it did.
        engine = warm.take(settings) or create_engine(settings)
    except EngineConfigError as err:
        print(f"{PROGRAM}: configuration error: {err}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    servicer = RecognizerServicer(engine, settings)

    def register(server: grpc.aio.Server) -> list[str]:
        asr_pb2_grpc.add_RecognizerServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    return run_service(ServiceDefinition(
        name=PROGRAM,
        settings=settings,
        register=register,
        warmup=servicer.warm_up,
        close=servicer.close,
    ))


if __name__ == "__main__":
    sys.exit(main())
