"""Honest when no knowledge applies: an off-topic turn gets the bot's own refusal line.

SmolLM2-135M answers whatever it is asked ("What's the weather like today?" ->
"mostly sunny"), facts or not. After the tool router and the fact answers
(tool_router.py, fact_answer.py) have passed a caller's last turn on, this gate
decides whether the model may answer it: small talk the model handles well
(greetings, thanks, goodbyes, "sorry, say that again", hesitations, yes or no, an
account number said after the bot asked for one) and turns like an offered tool's
phrasings go to the model; a turn that is none of these, and that no fact line
answers (under LLM_FACT_ANSWER_MIN_SCORE), gets the bot's "cannot help" knowledge
line instead, as is. Which line that is, is found by meaning too: the fact line most
like REFUSAL_PROBE, so the words spoken are always the bot author's (core/bot.toml).

"Small talk" is decided by meaning, as the router decides a tool: the turn's cosine
(all-MiniLM-L6-v2, the encoder and one-turn cache the router and fact answers share)
to the example phrasings below reaches LLM_SMALL_TALK_MIN_SCORE.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from llm_service.engine import Message, ToolSpec
from llm_service.knowledge import (
    FactList,
    SentenceEncoder,
    asked_with_facts,
    knowledge_settings,
    line_scores,
    question_handicap,
)
from llm_service.tool_router import tool_phrases

log = logging.getLogger(__name__)

FINISH_REASON = "off_topic"

# Asking the bot to say its last line again: it does, word for word (OffTopicGate.repeat).
REPEAT_REQUESTS: tuple[str, ...] = (
    "can you repeat that?", "pardon?", "sorry?", "what was that?", "what did you say?",
    "sorry, I didn't catch that", "say it again please", "could you say that again?",
)
REPEAT_FINISH_REASON = "repeat"
# Turns a small model answers well without knowledge, by kind. Not the bank's
# questions: those are the knowledge lines' and the tools' business.
SMALL_TALK: tuple[str, ...] = (
    # greetings
    "hello", "hi there", "good morning", "good evening", "hello, is anyone there?",
    "hi, how are you?", "hello, I need some help",
    # thanks
    "thank you", "thanks a lot", "great, thanks", "that's very helpful, thank you",
    "thanks for your help",
    # goodbyes
    "goodbye", "bye for now", "that's all, thanks, bye", "have a nice day",
    "that's everything, I'm done",
    *REPEAT_REQUESTS,
    # asking the bot to repeat (REPEAT_REQUESTS), not having understood
    "I don't understand",
    # hesitations, asking for time
    "um", "er", "hmm", "hang on a second", "let me think", "hold on", "one moment please",
    # yes, no, okay
    "yes please", "yeah", "no thank you", "nope", "okay", "alright", "sure", "that's right",
    # an account number, said after the bot asked for it
    "one two three four five six", "my account number is four five six seven eight",
    "it's nine eight seven six five four", "the number is two two three three",
)
# A turn at least this like the line the caller's previous turn asked for follows it up.
FOLLOW_UP_MIN_SCORE = 0.3
# What a refusal means: the knowledge line most like this is the bot's own refusal.
REFUSAL_PROBE = "I'm sorry, I can't help with that here."
# ... when one of its clauses is at least this like it and clearly more than any other
# line's; a knowledge without such a line has none (core/bot.toml's: 0.97, the next 0.31).
REFUSAL_LINE_MIN_SCORE = 0.3
REFUSAL_LINE_MARGIN = 0.1


@dataclass(frozen=True)
class Refusal:
    text: str  # the bot's refusal line, spoken as is
    small_talk: float  # the turn's best similarity to small talk or an offered tool
    fact: float  # ... and to a knowledge line


class OffTopicGate:
    """Says the bot's refusal line for a turn that is neither knowledge nor small talk."""

    def __init__(self, encoder: SentenceEncoder, min_score: float,
                 fact_min_score: float) -> None:
        self.encoder = encoder
        self.min_score = min_score  # small talk at least this like: the model answers
        self.fact_min_score = fact_min_score  # a fact line at least this like: likewise
        # ... or one of its example questions LLM_FACT_QUESTION_MIN_SCORE like (knowledge.py)
        self.question_handicap = question_handicap(fact_min_score)

    def _best(self, turn: str, phrases: tuple[str, ...]) -> float:
        if not phrases:
            return -1.0
        return float((self.encoder.encode_turn(turn) @ self.encoder.encode_fixed(phrases).T).max())

    def _fact(self, facts: FactList, query: object) -> tuple[int, float]:
        """The fact most like `query` (its line or its questions) and how like it is."""
        scores = line_scores(self.encoder, facts, query, self.question_handicap)
        best = max(range(len(scores)), key=lambda i: scores[i])
        return best, scores[best]

    def _follows_up(self, messages: Sequence[Message], facts: FactList) -> bool:
        """Is the last turn about the line the caller's turn before it clearly asked for
        ("When are you open?" ... "And on Saturday?")? The model, with that line among its
        facts (knowledge.py narrows with the turn before too), answers such a follow-up."""
        turns = [m.content for m in messages if m.role == "user" and m.content.strip()]
        if len(turns) < 2:
            return False
        line, before = self._fact(facts, self.encoder.encode_earlier_turn(turns[-2]))
        if before < self.fact_min_score:
            return False
        vectors = self.encoder.encode_fixed(facts.facts)
        now = float((self.encoder.encode_turn(turns[-1]) @ vectors[line:line + 1].T)[0, 0])
        return now >= FOLLOW_UP_MIN_SCORE

    def refusal_line(self, facts: tuple[str, ...]) -> str | None:
        """The knowledge line that says the bot cannot help, or None. A line is compared
        clause by clause: a long line's meaning is diluted ("I'm sorry, I can't help with
        that here: I can only help with ...": 0.35 whole, against 0.35 for "I'm very well,
        thank you for asking. How can I help you today?")."""
        clauses = tuple(tuple(c.strip() for c in re.split(r"[:;.!?]", fact) if c.strip())
                        or (fact,) for fact in facts)
        flat = tuple(c for parts in clauses for c in parts)
        similar = (self.encoder.encode_fixed((REFUSAL_PROBE,))
                   @ self.encoder.encode_fixed(flat).T)[0].tolist()
        scores, at = [], 0
        for parts in clauses:
            scores.append(max(similar[at:at + len(parts)]))
            at += len(parts)
        ranked = sorted(range(len(facts)), key=lambda i: scores[i], reverse=True)
        best = scores[ranked[0]]
        runner_up = scores[ranked[1]] if len(ranked) > 1 else -1.0
        if best < REFUSAL_LINE_MIN_SCORE or best - runner_up < REFUSAL_LINE_MARGIN:
            return None
        return facts[ranked[0]]

    def repeat(self, messages: Sequence[Message]) -> str | None:
        """The bot's last line again when the caller's last turn asks for it (at least
        LLM_REPEAT_MIN_SCORE like a REPEAT_REQUESTS phrasing), else None. Calibrated on
        the calibration and first held-out sets: nothing there scores over 0.39 ("Hours?",
        "Um."); "What did you just say?" 0.80, "Say again?" 0.71, "Sorry, what?" 0.59."""
        min_score = knowledge_settings().repeat_min_score
        last = messages[-1] if messages else None
        if min_score <= 0 or last is None or last.role != "user" or not last.content.strip():
            return None
        said = next((m.content for m in reversed(messages[:-1])
                     if m.role == "assistant" and m.content.strip()), None)
        if said is None or self._best(last.content, REPEAT_REQUESTS) < min_score:
            return None
        return said

    def check(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *,
              every_step: bool = False) -> Refusal | None:
        """The refusal for the caller's last turn, or None: the model answers it.
        `every_step`: go on past a turn a fact answers, for a prime (prime.py), whose
        only purpose is to encode what each step compares with."""
        asked = asked_with_facts(messages)
        if asked is None:
            return None  # no caller's turn, or no knowledge to be off the topic of
        turn, parsed = asked
        # Being like the refusal line itself (or its questions) is no knowledge.
        refusal = self.refusal_line(parsed.facts)
        known = parsed if refusal is None else parsed.without(refusal)
        _, fact = self._fact(known, self.encoder.encode_turn(turn)) if known.facts else (0, -1.0)
        if (fact >= self.fact_min_score or self._follows_up(messages, known)) and not every_step:
            return None
        phrases = SMALL_TALK + tuple(p for tool in tools for p in tool_phrases(tool))
        small_talk = self._best(turn, phrases)
        log.debug("off-topic check for %r: small talk %.3f, fact %.3f", turn, small_talk, fact)
        if small_talk >= self.min_score:
            return None
        if refusal is None:
            log.debug("off-topic, but the knowledge has no line like %r", REFUSAL_PROBE)
            return None
        return Refusal(refusal, small_talk, fact)
