"""What the caller meant, for matching: a turn without its fillers, restarts and lead-ins.

People do not speak in FAQ questions: "Er, what's, um, what's in my account at the
moment?" and a recognizer's lead-in ("Or hang on a second.", Whisper's guess at a breath)
carry words no knowledge line or example phrasing has, and a sentence encoder averages
them in: the meaning is diluted under the gates' thresholds. `clean_turn` takes them out
before the tool router, the fact answers, the off-topic gate and the repeat detection
compare the turn (knowledge.SentenceEncoder.encode_turn, which they all use); the model
is still sent the words as heard.

Written here rather than taken from a library: the disfluency packages on PyPI either
need audio (erm) or a trained tagger and its weights (deep-disfluency, a 2018 research
release; disfluency-constituency-parser, a neural parser), far more than these few rules
on a transcript that a recognizer has already tidied.

What it does, and what it never does:

- drops filler words (um, uh, er, erm, hmm, ...) and set-off "you know" / "I mean"
  (between commas or at an edge: "do you know my balance" keeps its words);
- drops a word cut off by a restart ("wh- what's") and collapses a repeated run of one to
  three words ("what's, what's in", "could I, could I speak", "I need to, I need to");
- strips discourse words a turn starts with (or, so, well, okay, right, ...) while at
  least two words remain ("ok. then." stays as it is);
- never touches a number: digits, and number words ("two two three three" is an account
  number, not a stammer), are never dropped or collapsed;
- never empties a turn: one that is all filler ("Um.", "Hmm, er...") is returned as it was.
"""

from __future__ import annotations

import re

# Sounds that carry no meaning. Not "ah"/"oh" before a word ("oh no") nor "like": too
# often meant.
FILLERS = frozenset({
    "um", "umm", "ummm", "uh", "uhh", "uhm", "uhmm", "er", "err", "erm", "errm",
    "hmm", "hmmm", "hm", "mm", "mmm", "eh", "ehm",
})
# Fillers of two words, dropped only where they are set off (see _drop_set_off).
SET_OFF_FILLERS: tuple[tuple[str, ...], ...] = (("you", "know"), ("i", "mean"))
# Words a spoken turn (or a recognizer's guess at a breath) starts with, adding nothing.
# Not "oh": it may start a number ("oh seven seven ...").
LEAD_INS = frozenset({"or", "so", "well", "okay", "ok", "right", "alright", "anyway"})
# Number words: an account number said digit by digit repeats them on purpose.
NUMBER_WORDS = frozenset({
    "zero", "oh", "nought", "one", "two", "three", "four", "five", "six", "seven", "eight",
    "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
    "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty", "sixty",
    "seventy", "eighty", "ninety", "hundred", "thousand", "million", "double", "triple",
})
# The longest run of words a restart repeats.
MAX_REPEAT = 3
# A number (with its thousands or decimal separators), a word (with its apostrophes and
# hyphens, "twenty-five", and a hyphen where it was cut off: "wh- what's"), or one
# punctuation mark.
TOKEN = re.compile(r"\d+(?:[.,:]\d+)*\w*|\w+(?:['\u2019-]\w+)*(?:-(?=\s|$))?|[^\w\s]")
PAUSE_MARKS = frozenset({",", ".", "!", "?", ";", ":", "-", "\u2026"})
# Marks that set a filler off inside a sentence (not its end).
SOFT_MARKS = frozenset({",", "-", "\u2026"})
# Marks that go before their word: a space before, none after.
OPENING_MARKS = frozenset({"(", "[", "$", "\u00a3", "\u20ac", "#"})


def _is_word(token: str) -> bool:
    return token[0].isalnum()


def _key(token: str) -> str:
    return token.lower().replace("\u2019", "'")


def _is_number(token: str) -> bool:
    return token[0].isdigit() or any(part in NUMBER_WORDS for part in _key(token).split("-"))


def _drop_fillers(tokens: list[str]) -> list[str]:
    """Fillers, with the commas that set them off ("the, um, branch" -> "the branch")."""
    out: list[str] = []
    skip_comma = False
    for token in tokens:
        if _is_word(token) and _key(token) in FILLERS:
            if out and out[-1] in SOFT_MARKS:
                out.pop()
            skip_comma = True
            continue
        if skip_comma and token in SOFT_MARKS:
            continue
        skip_comma = False
        out.append(token)
    return out


def _drop_set_off(tokens: list[str]) -> list[str]:
    """ "you know" / "I mean" between pause marks or the turn's edges, not inside a clause."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for phrase in SET_OFF_FILLERS:
            end = i + len(phrase)
            if tuple(_key(t) for t in tokens[i:end]) != phrase:
                continue
            before_open = not out or out[-1] in PAUSE_MARKS
            after_open = end == len(tokens) or tokens[end] in PAUSE_MARKS
            if before_open and after_open:
                i = end
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _drop_cut_offs(tokens: list[str]) -> list[str]:
    """A word broken off by a restart ("wh-"), when a word follows it."""
    return [t for i, t in enumerate(tokens)
            if not (_is_word(t) and t.endswith("-") and len(t) > 1 and not _is_number(t)
                    and any(_is_word(u) for u in tokens[i + 1:]))]


def _collapse_repeats(tokens: list[str]) -> list[str]:
    """A run of one to MAX_REPEAT words said twice in a row (punctuation between them
    ignored) is kept once: the second saying, where the caller went on from."""
    changed = True
    while changed:
        changed = False
        words = [i for i, t in enumerate(tokens) if _is_word(t)]
        for size in range(MAX_REPEAT, 0, -1):
            for start in range(len(words) - 2 * size + 1):
                first = words[start:start + size]
                second = words[start + size:start + 2 * size]
                if any(_is_number(tokens[i]) for i in first):
                    continue
                if [_key(tokens[i]) for i in first] != [_key(tokens[i]) for i in second]:
                    continue
                # Drop the first saying and the pause marks up to the second.
                tokens = tokens[:first[0]] + tokens[second[0]:]
                changed = True
                break
            if changed:
                break
    return tokens


def _strip_lead_ins(tokens: list[str]) -> list[str]:
    while tokens:
        words = [i for i, t in enumerate(tokens) if _is_word(t)]
        first = tuple(_key(tokens[i]) for i in words[:2])
        size = 2 if first == ("all", "right") else 1  # Whisper's "All right." is "alright"
        if len(words) < size + 2 or (size == 1 and first[0] not in LEAD_INS):
            break
        tokens = tokens[words[size - 1] + 1:]
    return tokens


def _tidy(tokens: list[str]) -> list[str]:
    """No pause mark at the start, none doubled (a dropped filler's commas)."""
    out: list[str] = []
    for token in tokens:
        if token in (")", "]") and out and out[-1] in ("(", "["):
            out.pop()  # the brackets of a dropped "(um)"
            continue
        if token in PAUSE_MARKS and (not out or out[-1] in PAUSE_MARKS):
            if out and token not in (",", "-") and out[-1] in (",", "-"):
                out[-1] = token  # "balance, ?" -> "balance?"
            continue
        out.append(token)
    return out


def _join(tokens: list[str]) -> str:
    text = ""
    for at, token in enumerate(tokens):
        opened = at > 0 and tokens[at - 1] in OPENING_MARKS
        # A dash stands apart ("bye - alright"): "bye-" would read as a word cut off.
        # ... and a word cut off keeps its space after it ("wh- ?").
        if text and not opened and (_is_word(token) or token in OPENING_MARKS or token == "-"
                                    or text.endswith("-")):
            text += " "
        text += token
    return text


def clean_turn(text: str) -> str:
    """The turn with its fillers, restarts and lead-ins taken out; as it was (stripped)
    when nothing of meaning would be left."""
    cleaned = TOKEN.findall(re.sub(r"\.{2,}", "\u2026", text))
    # Each step may uncover work for another ("you, you know": the repeat, then the
    # set-off filler); every pass only removes tokens, so this ends.
    while True:
        before = len(cleaned)
        cleaned = _tidy(_strip_lead_ins(_collapse_repeats(_drop_cut_offs(
            _drop_set_off(_tidy(_drop_fillers(cleaned)))))))
        if len(cleaned) == before:
            break
    if not any(_is_word(t) for t in cleaned):
        return text.strip()
    return _join(cleaned)
