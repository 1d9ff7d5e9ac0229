"""opensips_ai_core."""
