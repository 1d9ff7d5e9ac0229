"""`get_development_logger(name)`: a logger with the development debug helpers.

    log = get_development_logger(__name__)
    log.debug_state(session, "asr-session")
    log.debug_function_call("connect_to_service", args=(host, port), kwargs={"timeout": 5})
    log.debug_performance("asr_final", start, end)       # start/end from time.perf_counter()
    log.debug_data_flow("rtp->asr", "pcm16", len(chunk))

Each helper returns at once unless the development output is on for the logger
(DEVELOPMENT_MODE, or `enable_debug_output` for its package: `<SVC>_ENABLE_DEBUG`) and
DEBUG is enabled for it, so they may sit on hot paths. Bytes are never dumped: only
their length is shown.

Logger names: the module's import path (`__name__`); a purpose logger is a child of its
package ("asr_service.results"), so that the package's switch covers it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

MAX_VALUE_CHARS = 120
_TRUE = {"1", "true", "yes", "on"}
# Packages whose development output `enable_debug_output` turned on, and every
# development logger made so far (to switch on those that already exist).
_DEBUG_PACKAGES: set[str] = set()
_LOGGERS: weakref.WeakSet[DevelopmentLogger] = weakref.WeakSet()


def development_mode() -> bool:
    return os.environ.get("DEVELOPMENT_MODE", "").strip().lower() in _TRUE


def describe(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A short, safe description of a value: bytes as their length, long text truncated."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{type(value).__name__} len={len(value)}>"
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return f"<ndarray shape={value.shape} dtype={value.dtype}>"
    except ImportError:  # pragma: no cover - numpy is everywhere we run
        pass
    text = repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} chars)"
    return text


def _state_fields(obj: Any) -> Mapping[str, Any] | None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return obj
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return None


class DevelopmentLogger(logging.LoggerAdapter):
    """A LoggerAdapter whose debug_* helpers cost one attribute check when off."""

    def __init__(self, logger: logging.Logger, enabled: bool) -> None:
        super().__init__(logger, {})
        self.development = enabled

    def debug_output(self, msg: str, *args: Any) -> None:
        """A DEBUG line that is development output: results, prompts, timings."""
        if self._on():
            self.logger.debug(msg, *args, stacklevel=2)

    def _on(self) -> bool:
        return self.development and self.logger.isEnabledFor(logging.DEBUG)

    def debug_state(self, obj: Any, label: str) -> None:
        if not self._on():
            return
        fields = _state_fields(obj)
        if fields is None:
            body = describe(obj)
        else:
            body = ", ".join(f"{k}={describe(v)}" for k, v in fields.items())
        self.logger.debug("State %s (%s): %s", label, type(obj).__name__, body, stacklevel=2)

    def debug_function_call(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not self._on():
            return
        parts = [describe(a) for a in args]
        parts += [f"{k}={describe(v)}" for k, v in (kwargs or {}).items()]
        self.logger.debug("Call %s(%s)", name, ", ".join(parts), stacklevel=2)

    def debug_performance(self, operation: str, start: float, end: float) -> None:
        if not self._on():
            return
        self.logger.debug(
            "Performance %s: %.2f ms", operation, (end - start) * 1000.0, stacklevel=2
        )

    def debug_data_flow(self, stage: str, data_type: str, size: int) -> None:
        if not self._on():
            return
        self.logger.debug("Data flow %s: %s, %d bytes", stage, data_type, size, stacklevel=2)


def _in_packages(name: str, packages: set[str]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def get_development_logger(name: str) -> DevelopmentLogger:
    logger = DevelopmentLogger(logging.getLogger(name),
                               development_mode() or _in_packages(name, _DEBUG_PACKAGES))
    _LOGGERS.add(logger)
    return logger


def enable_debug_output(package: str) -> None:
    """`<SVC>_ENABLE_DEBUG`, the one way a service switches on its debug output: the
    package's loggers at DEBUG and its development helpers on, whatever DEVELOPMENT_MODE
    and LOG_LEVEL say."""
    _DEBUG_PACKAGES.add(package)
    logging.getLogger(package).setLevel(logging.DEBUG)
    for logger in list(_LOGGERS):
        if _in_packages(logger.logger.name, {package}):
            logger.development = True
