"""Run the TTS service: ``python -m tts_service`` (port 50053 unless TTS_PORT says otherwise)."""

from __future__ import annotations

import logging
import sys

import grpc

from tts_service import SERVICE_NAME
from tts_service.servicer import SynthesizerServicer
from tts_service.settings import TtsSettings
from tts_service.voices import VoiceCatalog, VoiceConfigError, plan_voices
from voice_common.config import CONFIG_ERROR_EXIT, load_settings
from voice_common.devlogger import get_development_logger
from voice_common.paths import watch_paths
from voice_common.runtime import ServiceDefinition, run_service
from voiceai.tts.v1 import tts_pb2_grpc

PROGRAM = "tts-service"


def main() -> int:
    settings = load_settings(TtsSettings, PROGRAM)
    try:
        plan = plan_voices(settings)
    except VoiceConfigError as err:
        print(f"{PROGRAM}: configuration error: {err}", file=sys.stderr)
        return CONFIG_ERROR_EXIT

    # Piper logs every sentence's phonemes at DEBUG: too much even in development.
    logging.getLogger("piper").setLevel(logging.INFO)
    catalog = VoiceCatalog(plan)
    timings = get_development_logger("tts_service.timing")
    if settings.enable_debug:
        # TTS_ENABLE_DEBUG: synthesis timings whatever DEVELOPMENT_MODE and LOG_LEVEL say.
        timings.development = True
        timings.logger.setLevel(logging.DEBUG)
    servicer = SynthesizerServicer(catalog, settings.max_text_chars, timings)

    def register(server: grpc.aio.Server) -> list[str]:
        tts_pb2_grpc.add_SynthesizerServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    definition = ServiceDefinition(
        PROGRAM, settings, register, warmup=catalog.load,
        watch_paths=watch_paths("services/tts-service"),
    )
    return run_service(definition)


if __name__ == "__main__":
    sys.exit(main())
