"""llm_service."""
