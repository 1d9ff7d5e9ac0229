"""Keypad digits joined into one entry: a pause of `dtmf_flush_s` or `#` ends it.

The entry is bounded: digits past MAX_DIGITS are dropped (and logged), so a caller
holding a key or a robot sending thousands of events cannot make a message that the
LLM refuses. `#` always ends the entry and is part of it, as the caller pressed it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from voice_common import get_development_logger

log = get_development_logger("core.dtmf")

# Longer than any number a caller types (E.164: 15 digits; card numbers: 19).
MAX_DIGITS = 32


class DtmfCollector:
    def __init__(self, call_id: str, flush_s: float, on_entry: Callable[[str], None]) -> None:
        self.call_id = call_id
        self.flush_s = flush_s
        self.on_entry = on_entry  # gets the digits, e.g. "123#"
        self._digits: list[str] = []
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, digit: str) -> None:
        if digit == "#" or len(self._digits) < MAX_DIGITS:
            self._digits.append(digit)
        else:
            self._dropped += 1
        if self._timer is not None:
            self._timer.cancel()
        delay = 0.0 if digit == "#" else self.flush_s
        self._timer = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        digits, self._digits = "".join(self._digits), []
        dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("Call %s DTMF: %d digits past the limit of %d dropped", self.call_id,
                        dropped, MAX_DIGITS)
        if digits:
            self.on_entry(digits)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._digits.clear()
