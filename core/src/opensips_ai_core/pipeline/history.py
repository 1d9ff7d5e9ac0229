"""The call's dialogue, and the part of it the LLM is asked to continue.

Every request must fit the LLM contract's limits (shared/proto/voiceai/llm/v1/llm.proto:
1 to 64 messages, each at most 4000 characters, 16000 in all, the last from the user);
a request over them is refused, and one over-long message kept in the history would
make every later turn fail. So the prompt is fitted here: each message is cut to the
per-message limit, and the oldest turns are dropped (the system prompt always stays)
until the count and the total fit.
"""

from __future__ import annotations

from voice_common import get_development_logger

log = get_development_logger("core.history")

MAX_MESSAGES = 64
MAX_CONTENT_CHARS = 4000
MAX_TOTAL_CHARS = 16000
TRUNCATED = " [interrupted]"
CLIPPED = " [...]"

Message = tuple[str, str]  # (role, content); role: system, user or assistant


class History:
    def __init__(self, system_prompt: str, max_turns: int) -> None:
        self.system_prompt = system_prompt
        self.max_turns = max_turns  # caller + bot pairs sent to the LLM; 0: the last only
        self.entries: list[Message] = []

    def add_user(self, text: str) -> None:
        self.entries.append(("user", text))

    def add_assistant(self, text: str) -> int:
        """Record a reply; returns its index, for `mark_cut_off`."""
        self.entries.append(("assistant", text))
        return len(self.entries) - 1

    def mark_cut_off(self, index: int) -> None:
        """The reply was generated in full but the caller did not hear it to its end."""
        role, text = self.entries[index]
        if not text.endswith(TRUNCATED):
            self.entries[index] = (role, text + TRUNCATED)

    def for_llm(self, extra_user: str | None = None) -> list[Message]:
        """The system prompt and the recent dialogue (plus `extra_user`, a hypothesis not
        yet in the history), fitted to the LLM's limits."""
        history = self.entries if extra_user is None else [*self.entries, ("user", extra_user)]
        keep = self.max_turns * 2
        recent = history[-keep:] if keep else history[-1:]
        return fit([("system", self.system_prompt), *recent])


def clip(text: str, limit: int = MAX_CONTENT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(CLIPPED)] + CLIPPED


def fit(messages: list[Message]) -> list[Message]:
    """Cut each message to MAX_CONTENT_CHARS, then drop the oldest after the system
    prompt (messages[0]) until at most MAX_MESSAGES and MAX_TOTAL_CHARS remain; the
    newest message is always kept."""
    fitted = [(role, clip(content)) for role, content in messages]
    if fitted != messages:
        log.warning("LLM request: %d message(s) cut to %d characters",
                    sum(a != b for a, b in zip(fitted, messages, strict=True)),
                    MAX_CONTENT_CHARS)
    system, rest = fitted[0], fitted[1:]
    total = sum(len(content) for _, content in fitted)
    dropped = 0
    while len(rest) > 1 and (len(rest) + 1 > MAX_MESSAGES or total > MAX_TOTAL_CHARS):
        total -= len(rest.pop(0)[1])
        dropped += 1
    if dropped:
        log.debug("LLM request: the %d oldest message(s) left out to fit its limits", dropped)
    return [system, *rest]
