"""Models the service builds itself (the demo model, the converted SmolLM2), cached as
plain transformers folders: built once, beside their final place, then renamed there."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def is_built(target: Path) -> bool:
    return (target / "config.json").exists() and (target / "model.safetensors").exists()


def build_once(target: Path, build: Callable[[Path], object]) -> Path:
    """`target`, made by `build(scratch)` first if it is not there yet.

    The build writes into a scratch folder beside the target, which is then renamed into
    place: a concurrent build or a crash never leaves a half-written model where the
    service would load it (a rename that loses the race to another build is fine).
    """
    if is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(scratch)
        try:
            os.rename(scratch, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
