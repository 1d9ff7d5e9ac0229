"""asr_service."""
