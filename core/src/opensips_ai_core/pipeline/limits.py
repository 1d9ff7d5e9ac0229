"""How long a call may go: its maximum duration, and the caller's silence.

A caller silent for `silence_timeout_s` (while the bot is not talking) hears the
`silence_prompt` once; silent as long again, the bot says `timeout_goodbye` and hangs
up. At `max_call_duration_s` it says goodbye and hangs up whatever happens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from opensips_ai_core.config import BotConfig
from voice_common import get_development_logger

log = get_development_logger("core.limits")

TICK_S = 0.5


class CallLimits:
    def __init__(self, call_id: str, bot: BotConfig, *, bot_is_talking: Callable[[], bool],
                 prompt: Callable[[str], None],
                 say_and_hang_up: Callable[[str, str], Awaitable[None]]) -> None:
        self.call_id = call_id
        self.bot = bot
        self._bot_is_talking = bot_is_talking
        self._prompt = prompt
        self._say_and_hang_up = say_and_hang_up
        self.started = time.monotonic()
        self.last_caller_activity = self.started
        self.silence_prompted = False
        # Short limits (tests, demos) are checked often enough to be kept.
        self.tick_s = min(TICK_S, bot.silence_timeout_s / 10, bot.max_call_duration_s / 10)

    def caller_active(self) -> None:
        """Speech, words or a key from the caller."""
        self.last_caller_activity = time.monotonic()

    def caller_spoke(self) -> None:
        """A whole utterance: the caller is back, a later silence is prompted again."""
        self.caller_active()
        self.silence_prompted = False

    def duration_s(self) -> float:
        return time.monotonic() - self.started

    async def watch(self, keep_watching: Callable[[], bool]) -> None:
        """Check the limits every tick until one ends the call or `keep_watching()` is
        false (the call ends otherwise)."""
        while keep_watching():
            await asyncio.sleep(self.tick_s)
            if await self.check():
                return

    async def check(self) -> bool:
        """One look at the clock; True when the call is being ended."""
        now = time.monotonic()
        if now - self.started >= self.bot.max_call_duration_s:
            log.info("Call %s reached its maximum duration", self.call_id)
            await self._say_and_hang_up(self.bot.timeout_goodbye, "max duration")
            return True
        if self._bot_is_talking():
            # The caller listens while the bot talks: that is not silence.
            self.last_caller_activity = max(self.last_caller_activity, now - self.tick_s)
            return False
        if now - self.last_caller_activity < self.bot.silence_timeout_s:
            return False
        if not self.silence_prompted and self.bot.silence_prompt:
            self.silence_prompted = True
            self.last_caller_activity = now
            self._prompt(self.bot.silence_prompt)
            return False
        log.info("Call %s: caller silent for %.0f s", self.call_id, self.bot.silence_timeout_s)
        await self._say_and_hang_up(self.bot.timeout_goodbye, "silence")
        return True
