"""Where the repository's parts are, for hot reload and the embedded models' caches.

One owner for "what a service's hot reload watches" (`watch_paths`) and for "which
saved files are a dependency change" (`is_dependency_file`, `dependency_files`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# voice_common lives at <root>/services/common/src/voice_common in a checkout.
_CHECKOUT_DEPTH = 4
# Files whose change means "the installed packages may differ": a full restart.
DEPENDENCY_NAMES = ("pyproject.toml", "constraints.txt", "uv.lock", "poetry.lock",
                    "requirements.txt", "requirements-dev.txt", "flake.lock")


def repo_root() -> Path:
    """The checkout this code runs from (an editable install), or $VOICE_REPO_ROOT; the
    working directory when voice_common is installed outside a checkout."""
    env = os.environ.get("VOICE_REPO_ROOT")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    if len(here.parents) > _CHECKOUT_DEPTH and here.parents[_CHECKOUT_DEPTH - 1].name == "services":
        return here.parents[_CHECKOUT_DEPTH]
    return Path.cwd()


def package_dir(module: str) -> Path | None:
    """The directory of MODULE's top-level package, found without importing it."""
    top = module.split(".", maxsplit=1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def project_dir(module: str) -> Path | None:
    """The distribution MODULE belongs to: the nearest directory above its package that
    holds a pyproject.toml (its sources, its data files such as core/bot.toml, and its
    dependency list); the package's own directory when there is none."""
    package = package_dir(module)
    if package is None:
        return None
    root = repo_root().resolve()
    for parent in package.resolve().parents:
        if (parent / "pyproject.toml").exists():
            return parent if parent != root else package
        if parent == root:
            break
    return package


def watch_paths(module: str) -> list[str]:
    """The directories whose source changes reload MODULE's service: its project
    directory, services/common and the generated stubs; `<PREFIX>_WATCH_PATHS` is the
    launcher's override."""
    root = repo_root()
    dirs = [project_dir(module), root / "services" / "common", root / "shared" / "proto_generated"]
    unique = dict.fromkeys(str(d) for d in dirs if d is not None and d.exists())
    return list(unique)


def dependency_files() -> list[Path]:
    """The checkout-level dependency files (the services' own pyproject.toml files lie in
    their watched directories)."""
    root = repo_root()
    return [root / name for name in DEPENDENCY_NAMES]


def is_dependency_file(path: str) -> bool:
    name = os.path.basename(path)
    return name in DEPENDENCY_NAMES or (name.startswith("requirements") and name.endswith(".txt"))


def cache_dir() -> Path:
    """Where built artefacts (the demo LLM) go: $VOICE_CACHE_DIR or ~/.cache/opensips-ai."""
    env = os.environ.get("VOICE_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base if env else base / "opensips-ai"
