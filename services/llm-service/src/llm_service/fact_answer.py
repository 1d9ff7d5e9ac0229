"""Knowledge answers by retrieval: a turn that clearly asks one fact gets that fact, as is.

SmolLM2-135M ignores a fact placed right in front of it (15 of 45 evaluation replies
right with the two most relevant lines in its prompt, docs/benchmarks.md). So, as FAQ
bots do, retrieval answers first and the model is the fallback: the bot's knowledge
lines (core/bot.toml) are written in its own spoken voice, and when the caller's last
turn is like one of them (cosine, all-MiniLM-L6-v2, at least LLM_FACT_ANSWER_MIN_SCORE)
by a margin over the next best (LLM_FACT_ANSWER_MARGIN), the service streams that line
as the reply without generating. Below either, the model generates with the narrowed
facts (knowledge.py). The reply is then the bot author's own words, never the model's.

Calibrated on tests/data/eval/conversation.toml with the bot's knowledge
(tests/llm/test_fact_answer.py prints the table): 26 utterances score 0.48-0.80 for
their best line, all but one for the right line ("How much is left in my savings
account ending ...", 0.51, gets the savings line); nothing else scores over 0.38
(off-topic questions at most 0.31), so the threshold is 0.45, nearer the answers: a
wrong fact is worse than the model's try. The smallest margin of a right answer is
0.014 (the opening hours against the advisers' hours), hence 0.01.
tests/data/eval/conversation-heldout.toml checks both on phrasings they were not tuned on.

Those figures are the lines' alone. A line's example questions ("Q:" lines, knowledge.py)
now count too, at LLM_FACT_QUESTION_MIN_SCORE: terse turns no answer's words reach
("Hours?" 0.23 for the line) reach a question; with them every fact answer of the
calibration and first held-out sets carries the expected fact (docs/architecture.md).
The turn is compared as meant (disfluency.clean_turn: no fillers, restarts or lead-ins),
and a line's words alone never pick a fact its questions point away from (line_scores).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from llm_service.engine import Message
from llm_service.knowledge import (
    FactList,
    SentenceEncoder,
    asked_with_facts,
    line_scores,
    question_handicap,
)

log = logging.getLogger(__name__)

FINISH_REASON = "knowledge"


@dataclass(frozen=True)
class FactAnswer:
    text: str  # the fact line, spoken as is
    score: float  # its cosine similarity to the caller's turn
    runner_up: float  # the next best line's


class FactAnswerer:
    """Picks the one knowledge line the caller's last turn asks for, if one clearly is."""

    def __init__(self, encoder: SentenceEncoder, min_score: float, margin: float) -> None:
        self.encoder = encoder
        self.min_score = min_score
        self.margin = margin
        # A question counts when LLM_FACT_QUESTION_MIN_SCORE like the turn (knowledge.py).
        self.question_handicap = question_handicap(min_score)

    def scores(self, facts: FactList, turn: str) -> list[float]:
        """Each fact's similarity to `turn`: the best over its line and its questions."""
        return line_scores(self.encoder, facts, self.encoder.encode_turn(turn),
                           self.question_handicap)

    def answer(self, messages: Sequence[Message]) -> FactAnswer | None:
        """The fact line that answers the caller's last turn, or None: the model answers."""
        asked = asked_with_facts(messages)
        if asked is None:
            return None
        turn, parsed = asked
        scores = self.scores(parsed, turn)
        ranked = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
        best = scores[ranked[0]]
        runner_up = scores[ranked[1]] if len(ranked) > 1 else -1.0
        log.debug("fact answer scores for %r: best %.3f, next %.3f", turn, best, runner_up)
        if best < self.min_score or best - runner_up < self.margin:
            return None
        return FactAnswer(parsed.facts[ranked[0]], best, runner_up)
