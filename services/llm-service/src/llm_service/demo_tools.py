"""The demo model's tool step: a fixed rule around the trained model, not learned.

The demo model (demo_model.py) is a two-layer network that maps a caller's question
to one of a handful of fixed answers; it cannot copy an account number into a call.
So when a request offers tools and LLM_MODEL is the demo, the service reads the
model's reply as the intent it recognised and applies this rule:

- balance (`get_balance`) or lost card (`block_card`): with an account number in the
  caller's turn (digits, spoken digit words, or keypad digits ending in `#`), call
  the tool with `{"account": "<digits>"}`; without one, ask for it;
- the caller's turn right after that question: call the tool with its digits;
- the last message is the tool's result: speak it (an `error` field: say sorry);
- anything else: the model's own reply.

Deterministic, so tests can assert the exact tool calls and sentences. Real models
(SmolLM2, any hub model with a tool-aware chat template) call tools themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from llm_service.demo_model import load_intents
from llm_service.engine import Message
from llm_service.tool_calls import ParsedToolCall, new_call_id

# Which recognised intent needs which tool.
INTENT_TOOLS = {"balance": "get_balance", "lost_card": "block_card"}
ASK_ACCOUNT = {
    "get_balance": "Please tell me your account number, or key it in and press hash.",
    "block_card": "To block your card, please tell me your account number, "
                  "or key it in and press hash.",
}
BLOCKED = ("I have blocked your card for your safety. A new card will arrive by mail "
           "within five working days.")
SORRY = "Sorry, I could not do that right now."
MIN_ACCOUNT_DIGITS = 4
_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}


@dataclass(frozen=True)
class DemoStep:
    text: str = ""
    call: ParsedToolCall | None = None


def account_number(text: str) -> str:
    """The digits in a caller's turn ("1234#", "one two three four"), or "" when fewer than 4."""
    digits = []
    for token in re.findall(r"[a-z]+|\d", text.lower()):
        if token.isdigit():
            digits.append(token)
        elif token in _DIGIT_WORDS:
            digits.append(_DIGIT_WORDS[token])
    joined = "".join(digits)
    return joined if len(joined) >= MIN_ACCOUNT_DIGITS else ""


def _intent_of(reply: str) -> str:
    for intent in load_intents():
        if reply.strip() == intent.answer:
            return intent.name
    return ""


def _call_name(messages: Sequence[Message], call_id: str) -> str:
    for message in messages:
        for call in message.tool_calls:
            if call.id == call_id:
                return call.name
    return ""


def speak_result(name: str, content: str) -> str:
    try:
        result = json.loads(content)
    except json.JSONDecodeError:
        return SORRY
    if not isinstance(result, dict) or "error" in result:
        return SORRY
    if name == "get_balance" and "balance" in result:
        try:
            amount = f"{float(result['balance']):,.2f}"
        except (TypeError, ValueError):
            return SORRY
        return f"Your balance is {amount} {result.get('currency', 'dollars')}."
    if name == "block_card" and result.get("blocked") is True:
        return BLOCKED
    return SORRY


def _call(name: str, account: str) -> DemoStep:
    arguments = json.dumps({"account": account}, separators=(",", ":"))
    return DemoStep(call=ParsedToolCall(new_call_id(), name, arguments))


def demo_step(messages: Sequence[Message], offered: Collection[str], reply: str
              ) -> DemoStep | None:
    """What the demo says or calls instead of `reply`; None keeps the model's reply."""
    last = messages[-1]
    if last.role == "tool":
        return DemoStep(text=speak_result(_call_name(messages, last.tool_call_id), last.content))
    previous = next((m for m in reversed(messages[:-1]) if m.role == "assistant"), None)
    account = account_number(last.content)
    for tool, question in ASK_ACCOUNT.items():
        if tool in offered and previous is not None and previous.content == question and account:
            return _call(tool, account)
    tool = INTENT_TOOLS.get(_intent_of(reply), "")
    if tool in offered:
        return _call(tool, account) if account else DemoStep(text=ASK_ACCOUNT[tool])
    return None
