"""The conversation evaluation set (tests/data/eval/conversation.toml) and how replies score.

Shared by scripts/bench/conversation.py and the LLM tests. conversation.toml (45
utterances) calibrated the LLM service's thresholds; conversation-heldout.toml was
written afterwards, before anything was scored on it, to check them;
conversation-heldout2.toml likewise for the off-topic refusal, and
conversation-heldout3.toml for the example questions and small-talk replies,
conversation-heldout4.toml for the disfluency normaliser and the wrong-fact guard. Scoring: a reply
"carries" the expected fact when every group of alternatives has one in it, as whole
words; a refusal is the bot declining ("I can't help with that here") instead of
making something up.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from voice_testkit.procs import ROOT

EVAL_SET = ROOT / "tests" / "data" / "eval" / "conversation.toml"
# New utterances, written before any score on them was seen; nothing is calibrated on them.
HELDOUT_SET = ROOT / "tests" / "data" / "eval" / "conversation-heldout.toml"
# A second one, written before the off-topic refusal was calibrated (on the two above).
HELDOUT2_SET = ROOT / "tests" / "data" / "eval" / "conversation-heldout2.toml"
# A third, written before the example questions and small-talk replies: the honest check.
HELDOUT3_SET = ROOT / "tests" / "data" / "eval" / "conversation-heldout3.toml"
# A fourth, written before the disfluency normaliser and the wrong-fact guard.
HELDOUT4_SET = ROOT / "tests" / "data" / "eval" / "conversation-heldout4.toml"
EVAL_SETS = {"calibration": EVAL_SET, "heldout": HELDOUT_SET, "heldout2": HELDOUT2_SET,
             "heldout3": HELDOUT3_SET, "heldout4": HELDOUT4_SET}
# "I can't help with that here", "I'm unable to assist with tax returns", "I'm not able to
# book a table", "sorry, I didn't catch that": the bot declines rather than makes it up.
REFUSAL = re.compile(
    r"\b(can't|cannot|can not|unable to|not able to|don't have|do not have)"
    r"( \w+){0,2}? (help|assist|provide|book|change|do|give|answer|access|see)\b"
    r"|\bdid(n't| not) catch\b")


@dataclass(frozen=True)
class Utterance:
    text: str
    kind: str
    expect: tuple[tuple[str, ...], ...]
    style: str


def load_eval_set(path: Path = EVAL_SET) -> list[Utterance]:
    items = tomllib.loads(path.read_text(encoding="utf-8"))["utterance"]
    return [Utterance(item["text"], item["kind"],
                      tuple(tuple(group) for group in item.get("expect", ())), item["style"])
            for item in items]


def normalise(text: str) -> str:
    text = text.lower().replace("\u2019", "'")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9', ]+", " ", text)).strip()


def is_refusal(reply: str) -> bool:
    return REFUSAL.search(normalise(reply)) is not None


def carries(reply: str, expect: tuple[tuple[str, ...], ...]) -> bool:
    """Every group has an alternative in the reply, as whole words (a plural or -ed allowed)."""
    text = normalise(reply)
    return bool(expect) and all(
        any(re.search(rf"(?<![a-z0-9]){re.escape(alt.lower())}(?:s|es|ed|d)?(?![a-z0-9])", text)
            for alt in group)
        for group in expect)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words): Levenshtein over words, apostrophes dropped."""
    ref = normalise(reference).replace("'", "").replace(",", "").split()
    hyp = normalise(hypothesis).replace("'", "").replace(",", "").split()
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1,
                                           previous + (word != other))
    return row[-1], len(ref)
