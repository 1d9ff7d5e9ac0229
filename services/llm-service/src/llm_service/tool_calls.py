"""Tool calls in streamed text: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

The format SmolLM2's and Qwen's chat templates teach (Hermes style). Text outside
the tags streams on as deltas; text that might be the start of a tag is held back
until the next delta shows whether it is one. A call whose JSON does not parse, or
names a tool the request did not offer, is dropped and logged: reading it aloud to
a caller would help nobody.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass

log = logging.getLogger(__name__)

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
# A model that opens a tag and never closes it gets cut off here (characters).
MAX_CALL_CHARS = 8000


@dataclass(frozen=True)
class ParsedToolCall:
    id: str
    name: str
    arguments_json: str  # a JSON object, re-serialised compactly


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"


def parse_call(body: str, offered: Collection[str]) -> ParsedToolCall | None:
    """The call in one tag's body, or None (logged) when it is not a usable call."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        log.warning("tool call dropped: its JSON does not parse (%s): %.200r", err, body)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        log.warning("tool call dropped: not an object with a name: %.200r", body)
        return None
    name = data["name"]
    if name not in offered:
        log.warning("tool call dropped: %r is not one of the offered tools", name)
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some templates teach arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            arguments = None
    if not isinstance(arguments, dict):
        log.warning("tool call %s dropped: its arguments are not a JSON object", name)
        return None
    return ParsedToolCall(new_call_id(), name, json.dumps(arguments, separators=(",", ":")))


class ToolCallExtractor:
    """Splits streamed text into spoken text and tool calls."""

    def __init__(self, offered: Collection[str]) -> None:
        self.offered = frozenset(offered)
        self._pending = ""  # text not yet passed on: a possible tag start, or a tag's body
        self._inside = False
        self.calls: list[ParsedToolCall] = []

    def feed(self, text: str) -> tuple[str, list[ParsedToolCall]]:
        """Text safe to speak now, and the calls completed by `text`."""
        self._pending += text
        spoken: list[str] = []
        found: list[ParsedToolCall] = []
        while True:
            if self._inside:
                end = self._pending.find(CLOSE)
                if end < 0:
                    if len(self._pending) > MAX_CALL_CHARS:
                        log.warning("tool call dropped: no %s within %d characters",
                                    CLOSE, MAX_CALL_CHARS)
                        self._pending, self._inside = "", False
                    break
                call = parse_call(self._pending[:end].strip(), self.offered)
                if call is not None:
                    found.append(call)
                self._pending = self._pending[end + len(CLOSE):]
                self._inside = False
                continue
            start = self._pending.find(OPEN)
            if start >= 0:
                spoken.append(self._pending[:start])
                self._pending = self._pending[start + len(OPEN):]
                self._inside = True
                continue
            keep = _partial_suffix(self._pending, OPEN)
            spoken.append(self._pending[: len(self._pending) - keep])
            self._pending = self._pending[len(self._pending) - keep:]
            break
        self.calls.extend(found)
        return "".join(spoken), found

    def flush(self) -> str:
        """At the end of the stream: held-back text that never became a tag."""
        rest, self._pending = ("" if self._inside else self._pending), ""
        if self._inside:
            log.warning("tool call dropped: the reply ended before %s", CLOSE)
        self._inside = False
        return rest


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for length in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0
