"""Logging for every process: detailed in development (coloured on a terminal), JSON in production.

Development (DEVELOPMENT_MODE=1) writes this format with colorlog::

    2024-01-15 10:30:45,123 | DEBUG    | grpc_clients.asr   | connect_to_service:42   | message

and exception tracebacks that show each frame's local variables (long values
truncated, secrets masked). Production writes one JSON object per line with
timestamp, level, logger, message and the service/call fields where known.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import traceback
from typing import Any, TextIO

import colorlog
from pythonjsonlogger.json import JsonFormatter

DEV_FORMAT = (
    "%(log_color)s%(asctime)s | %(levelname)-8s | %(name)-18s | "
    "%(funcName)s:%(lineno)-4d | %(message)s%(reset)s"
)
LOG_COLORS = {
    "DEBUG": "cyan",
    "INFO": "green",
    "WARNING": "yellow",
    "ERROR": "red",
    "CRITICAL": "bold_red",
}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# The call a log line belongs to; set by the core around each call's tasks.
call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)

_SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|api_?key|auth|credential|private", re.I)
MAX_LOCAL_REPR = 200
MASK = "'********'"


def _truncate(text: str, limit: int = MAX_LOCAL_REPR) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


def _scrub(te: traceback.TracebackException, seen: set[int] | None = None) -> None:
    """Mask secret-looking locals and truncate long ones, through chained exceptions."""
    seen = seen if seen is not None else set()
    if id(te) in seen:
        return
    seen.add(id(te))
    for frame in te.stack:
        if not frame.locals:
            continue
        frame.locals = {
            name: MASK if _SECRET_NAME.search(name) else _truncate(value)
            for name, value in frame.locals.items()
        }
    for chained in (te.__cause__, te.__context__):
        if chained is not None:
            _scrub(chained, seen)


def format_exception_with_locals(exc: BaseException) -> str:
    te = traceback.TracebackException.from_exception(exc, capture_locals=True)
    _scrub(te)
    return "".join(te.format()).rstrip("\n")


class DevelopmentFormatter(colorlog.ColoredFormatter):
    """The development format above, colored; tracebacks carry local variables."""

    def __init__(self, *, color: bool = True) -> None:
        super().__init__(DEV_FORMAT, log_colors=LOG_COLORS, no_color=not color, reset=True)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's API name
        exc = ei[1]
        if exc is None:
            return super().formatException(ei)
        return format_exception_with_locals(exc)


class ProductionFormatter(JsonFormatter):
    """One JSON object per line: timestamp, level, logger, message, service, call_id."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
            timestamp=False,
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        for key in ("service", "call_id"):
            if log_data.get(key) is None:
                log_data.pop(key, None)


class ContextFilter(logging.Filter):
    """Adds `service` and the current `call_id` to every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "service"):
            record.service = self.service
        if getattr(record, "call_id", None) is None:
            record.call_id = call_id_var.get()
        return True


def resolve_level(development: bool, log_level: str | None, service_level: str | None) -> str:
    """`<SVC>_LOG_LEVEL` beats `LOG_LEVEL`, which beats the mode's default."""
    for value in (service_level, log_level):
        if value:
            return value.upper()
    return "DEBUG" if development else "INFO"


def _is_terminal(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def configure_logging(
    service: str,
    *,
    development: bool,
    level: str,
    stream: TextIO | None = None,
    color: bool | None = None,
) -> None:
    """Install the one root handler for this process (idempotent)."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    if development:
        # Colour only on a terminal: a log file (the dev stack's) gets plain text.
        use_color = color if color is not None else _is_terminal(stream)
        handler.setFormatter(DevelopmentFormatter(color=use_color))
    else:
        handler.setFormatter(ProductionFormatter())
    handler.addFilter(ContextFilter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter stays at INFO even when we debug.
    for noisy in ("asyncio", "grpc", "urllib3", "filelock", "watchfiles", "numba"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
