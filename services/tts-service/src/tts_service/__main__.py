"""Run the TTS service: ``python -m tts_service``.

Environment (a bad value: one line on stderr, exit code 2):

    TTS_PORT            50053
    TTS_HOST            127.0.0.1
    TTS_ENGINE          piper | espeak-ng: the engine of the default voice (piper)
    TTS_VOICE           empty: the engine's default (the bundled Piper voice
                        piper:en_US-joe-medium, or espeak-ng:en-us); a path to a Piper
                        .onnx voice with its .onnx.json beside it; or a voice name
                        (piper:en_US-joe-medium, en-gb / espeak-ng:en-gb, ...)
    TTS_MAX_TEXT_CHARS  2000 (the contract's ceiling)
    TTS_ENABLE_DEBUG    log each sentence's synthesis time and the time to first audio
    TTS_ONNX_THREADS    onnxruntime threads per Piper synthesis (1; 0: all cores)
    TTS_ESPEAK_BINARY   espeak-ng
    TTS_HOT_RELOAD, TTS_LOG_LEVEL, TTS_GRACE_PERIOD_S: as for every service.
"""

from __future__ import annotations

import logging
import sys

import grpc

from tts_service import SERVICE_NAME, warm
from tts_service.servicer import SynthesizerServicer
from tts_service.settings import TtsSettings
from tts_service.voices import VoiceCatalog, VoiceConfigError, plan_voices
from voice_common.config import CONFIG_ERROR_EXIT, load_settings
from voice_common.devlogger import get_development_logger
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
    # Loaded by the development warm parent's spare, if it did (tts_service/warm.py).
    catalog = VoiceCatalog(plan, loaded_piper=warm.take(plan))
    # Synthesis timings: development output (DEVELOPMENT_MODE, or TTS_ENABLE_DEBUG).
    timings = get_development_logger("tts_service.timing")
    servicer = SynthesizerServicer(catalog, settings.max_text_chars, timings)

    def register(server: grpc.aio.Server) -> list[str]:
        tts_pb2_grpc.add_SynthesizerServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    definition = ServiceDefinition(
        PROGRAM, settings, register, warmup=catalog.load,
    )
    return run_service(definition)


if __name__ == "__main__":
    sys.exit(main())
