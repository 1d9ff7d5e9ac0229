"""Shared runtime of the OpenSIPS AI Voice Connector's processes."""

from voice_common.devlogger import get_development_logger

__all__ = ["get_development_logger"]
