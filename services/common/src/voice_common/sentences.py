"""Sentences: the one set of rules the core and the TTS service split text by.

- `SentenceChunker` (the core): LLM deltas in, each sentence out as soon as it is
  complete, so the caller hears the start of a reply while the LLM still writes it.
- `split_sentences` / `split_first_clause` (the TTS service): a request's text, whatever
  client sent it, into the sentences it synthesizes and streams one at a time.

Small and rule-based on purpose: a boundary is ``.``, ``!``, ``?``, ``;`` or an
ellipsis followed by white space (closing quotes and brackets stay with their
sentence), or a line break. A period after a known abbreviation ("Mr.", "e.g.")
or a single-letter initial ("J. Smith") is not a boundary. Fragments with
nothing to pronounce ("--", "...") join the sentence before them, and very long
sentences are cut at a clause boundary so no single synthesis step runs long.
The chunker also holds back a fragment shorter than `MIN_CHUNK_CHARS` ("Ok.") to send
it with what follows: a synthesis of its own costs more than it saves.
"""

from __future__ import annotations

import re

# Lower-case, without the final period.
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e",
    "no", "nr", "approx", "dept", "fig", "inc", "ltd", "co", "corp", "jan", "feb", "mar",
    "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "wed",
    "thu", "fri", "sat", "sun", "a.m", "p.m", "u.s", "u.k", "ave", "rd", "blvd", "gen",
    "col", "capt", "lt", "sgt", "rev", "hon", "vol", "ch", "p", "pp", "cf", "al",
})

# Terminal punctuation run, then closing quotes/brackets, then the white space after it.
_BOUNDARY = re.compile(r"([.!?;…]+[\"'”’)\]]*)(\s+)")
_WORD_BEFORE = re.compile(r"(\S+)$")
_SPEAKABLE = re.compile(r"\w")
# Where a long sentence may be cut: after a comma, colon or dash followed by a space.
CLAUSE_BOUNDARY = re.compile(r"[,:\u2013\u2014-]\s+")
# split_first_clause does not cut off a rest shorter than this.
MIN_REST_WORDS = 3

MAX_SENTENCE_CHARS = 250


def has_speakable(text: str) -> bool:
    """True when `text` has at least one letter or digit to pronounce."""
    return bool(_SPEAKABLE.search(text))


def _is_abbreviation(before: str, punctuation: str) -> bool:
    if punctuation != ".":
        return False
    match = _WORD_BEFORE.search(before)
    if match is None:
        return False
    word = match.group(1).lstrip("\"'“‘([").lower()
    if word in ABBREVIATIONS:
        return True
    # A single-letter initial: "J. Smith", "U.S. Army".
    return len(word.replace(".", "")) == 1 and word[-1:].isalpha()


def _split_line(line: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(line):
        punctuation = match.group(1).rstrip("\"'”’)]")
        if _is_abbreviation(line[start:match.start(1)], punctuation):
            continue
        pieces.append(line[start:match.end(1)])
        start = match.end()
    pieces.append(line[start:])
    return [p.strip() for p in pieces if p.strip()]


def _cut_long(sentence: str, limit: int) -> list[str]:
    """Cut `sentence` into parts of at most `limit` characters, at clauses, else at spaces."""
    parts: list[str] = []
    rest = sentence
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = max((m.end() for m in CLAUSE_BOUNDARY.finditer(window)), default=0)
        if cut < limit // 3:
            space = window.rfind(" ")
            cut = space + 1 if space > limit // 3 else limit
        parts.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        parts.append(rest)
    return parts


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """The sentences of `text`, in order, each with something to pronounce."""
    sentences: list[str] = []
    for line in text.splitlines():
        for piece in _split_line(line):
            if not has_speakable(piece) and sentences:
                sentences[-1] = f"{sentences[-1]} {piece}"
                continue
            sentences.extend(_cut_long(piece, max_chars))
    # A leading fragment with nothing to say joins the sentence after it.
    if len(sentences) > 1 and not has_speakable(sentences[0]):
        sentences[1] = f"{sentences[0]} {sentences[1]}"
        del sentences[0]
    return sentences


def split_first_clause(sentence: str, min_words: int = 2,
                       min_rest_words: int = MIN_REST_WORDS) -> list[str]:
    """Cut the first clause off a sentence so its audio can start sooner.

    Used on a request's first sentence only: the time to first audio is the
    synthesis time of what is synthesized first, which grows with its length.
    The cut is made only at a comma, colon or dash, where a pause is natural.
    """
    for match in CLAUSE_BOUNDARY.finditer(sentence):
        head, tail = sentence[: match.end()].strip(), sentence[match.end():].strip()
        if len(head.split()) >= min_words and len(tail.split()) >= min_rest_words:
            return [head, tail] if has_speakable(head) and has_speakable(tail) else [sentence]
        if len(head.split()) >= min_words:
            break
    return [sentence]


MIN_CHUNK_CHARS = 12   # the chunker never sends a fragment like "Hi." alone unless it is all
MAX_CHUNK_CHARS = 200  # a clause this long is cut at a clause boundary so TTS can start


def _breaks(text: str) -> list[tuple[int, int]]:
    """(end of a sentence, start of the next) for each complete boundary in `text`: the
    punctuation rules above (abbreviations and initials skipped), and line breaks."""
    found: list[tuple[int, int]] = []
    for match in _BOUNDARY.finditer(text):
        punctuation = match.group(1).rstrip("\"'”’)]")
        line_start = text.rfind("\n", 0, match.start(1)) + 1
        if not _is_abbreviation(text[line_start:match.start(1)], punctuation):
            found.append((match.end(1), match.end()))
    found += [(m.start(), m.end()) for m in _LINE_BREAK.finditer(text)]
    return sorted(set(found))


_LINE_BREAK = re.compile(r"\n\s*")


class SentenceChunker:
    """Streamed text in, sentences out as soon as they are complete (by the rules above)."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """Add text; return the sentences it completed (possibly none). A boundary is
        complete once the white space after it has arrived: "else?" may go on."""
        self._buffer += delta
        out: list[str] = []
        start = 0
        for end, following in _breaks(self._buffer):
            if end < start:
                continue
            candidate = self._buffer[start:end].strip()
            if len(candidate) < MIN_CHUNK_CHARS:
                continue
            out.append(candidate)
            start = following
        self._buffer = self._buffer[start:]
        if len(self._buffer) > MAX_CHUNK_CHARS:
            window = self._buffer[:MAX_CHUNK_CHARS]
            cut = max((m.end() for m in CLAUSE_BOUNDARY.finditer(window)), default=0)
            if cut > MIN_CHUNK_CHARS:
                out.append(self._buffer[:cut].strip())
                self._buffer = self._buffer[cut:]
        return out

    def flush(self) -> str:
        """The unfinished rest at the end of the stream."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest
