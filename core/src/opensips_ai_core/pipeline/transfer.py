"""When a bot reply asks for a blind transfer, and to whom.

A reply transfers when it carries the bot's `transfer_marker` (`[transfer]`, or
`[transfer:NAME]` for a named target) or one of its `transfer_phrases` (the demo
model's "... while I transfer you to one of our advisers"). The target is the one
named in the marker, else the first configured target whose name the reply mentions,
else the first one. Without configured targets nothing transfers.
"""

from __future__ import annotations

import re

from opensips_ai_core.config import BotConfig


def _marker_pattern(marker: str) -> re.Pattern[str]:
    if marker.endswith("]"):
        # "[transfer]" also matches "[transfer:advisers]"
        return re.compile(re.escape(marker[:-1]) + r"(?::\s*([\w.-]+))?\s*\]", re.IGNORECASE)
    return re.compile(re.escape(marker) + r"()", re.IGNORECASE)


def transfer_target(bot: BotConfig, reply: str) -> str | None:
    """The SIP URI the caller is to be transferred to after `reply`, or None."""
    if not bot.transfer_to or not reply:
        return None
    named: str | None = None
    if bot.transfer_marker and (match := _marker_pattern(bot.transfer_marker).search(reply)):
        named = match.group(1) or None
    elif not any(phrase.lower() in reply.lower() for phrase in bot.transfer_phrases):
        return None
    if named is not None:
        for name, uri in bot.transfer_to.items():
            if name.lower() == named.lower():
                return uri
    lowered = reply.lower()
    for name, uri in bot.transfer_to.items():
        if name.lower() in lowered:
            return uri
    return next(iter(bot.transfer_to.values()))


def strip_transfer_marker(bot: BotConfig, text: str) -> str:
    """The text without its transfer marker (it is not to be spoken)."""
    if not bot.transfer_marker:
        return text
    return _marker_pattern(bot.transfer_marker).sub("", text).strip()
