"""tts_service: streaming speech synthesis over gRPC (Piper, espeak-ng)."""

SERVICE_NAME = "voiceai.tts.v1.Synthesizer"
