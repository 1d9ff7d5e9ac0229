"""asr_service: streaming speech recognition over gRPC (Vosk or pocketsphinx).

Run with ``python -m asr_service``; configuration in `asr_service.settings`.
"""

SERVICE_NAME = "voiceai.asr.v1.Recognizer"
