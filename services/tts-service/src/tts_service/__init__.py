"""tts_service."""
