"""Where the repository's parts are, for hot reload and the embedded models' caches."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout this code runs from (editable installs), or $VOICE_REPO_ROOT."""
    env = os.environ.get("VOICE_REPO_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "process-compose.yaml").exists() or (parent / ".git").exists():
            return parent
    return Path.cwd()


def watch_paths(service_dir: str) -> list[str]:
    """The directories that hold one service's code: its own source, common, stubs."""
    root = repo_root()
    return [
        str(root / service_dir),
        str(root / "services" / "common"),
        str(root / "shared" / "proto_generated"),
    ]


def cache_dir() -> Path:
    """Where built artefacts (the demo LLM) go: $VOICE_CACHE_DIR or ~/.cache/opensips-ai."""
    env = os.environ.get("VOICE_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base if env else base / "opensips-ai"

