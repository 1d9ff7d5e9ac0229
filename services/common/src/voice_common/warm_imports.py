"""What the warm parent may import, and whether it may fork (voice_common.warm_parent).

The project's modules (files in the checkout, outside any site-packages) are always
imported afresh by each child; the third-party ones the last child imported are listed
in a cache file (`$VOICE_CACHE_DIR/warm-imports/<module>-<key>.txt`, one name a line;
`!pkg` marks a package never to import in the parent) and imported by the parent,
package by package, checking after each that it may still fork: one thread, or one
after a probe fork (libraries such as OpenBLAS stop their pools in a fork handler).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from voice_common import hotreload
from voice_common.paths import cache_dir, repo_root

log = logging.getLogger("voice_common.warm_imports")

EXCLUDED_MARK = "!"  # a cached line "!numpy": never import that package in the parent


def thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc: only Python's own threads can be seen
        return threading.active_count()


def forkable() -> bool:
    """True when the process has one thread, or has one left after a probe fork (the
    fork handlers of libraries such as OpenBLAS stop their pools in the prepare step)."""
    if thread_count() == 1:
        return True
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return thread_count() == 1


# -- which modules are the project's ---------------------------------------------------------
def _module_files(module: ModuleType) -> list[str]:
    file = getattr(module, "__file__", None)
    if file:
        return [file]
    return list(getattr(module, "__path__", None) or [])


def source_roots(watched: Iterable[str]) -> tuple[str, ...]:
    """The folders whose modules are the project's: the checkout and every watched folder
    (a module that a save can change is always imported afresh, wherever it lies)."""
    roots = []
    for folder in (str(repo_root()), *watched):
        roots += [os.path.abspath(folder), os.path.realpath(folder)]
    return tuple(dict.fromkeys(roots))


def is_project_module(module: ModuleType, roots: Sequence[str]) -> bool:
    """Under one of `roots` (editable installs, generated stubs, tests, watched folders),
    not in a site-packages."""
    for file in _module_files(module):
        path = os.path.abspath(file)
        parts = path.split(os.sep)
        if "site-packages" in parts or "dist-packages" in parts:
            continue
        if any(path.startswith(root + os.sep) for root in roots):
            return True
    return False


def project_modules(roots: Sequence[str]) -> dict[str, ModuleType]:
    return {name: mod for name, mod in list(sys.modules.items())
            if mod is not None and is_project_module(mod, roots)}


def project_files(roots: Sequence[str]) -> dict[str, str]:
    """File -> digest of every project module imported so far."""
    files = {}
    for module in project_modules(roots).values():
        file = getattr(module, "__file__", None)
        if file:
            files[os.path.abspath(file)] = hotreload.file_digest(file)
    return files


# -- warm imports learned from the children --------------------------------------------------
def warm_list_path(module: str) -> Path:
    key = hashlib.sha1(f"{sys.executable}|{sys.version}|{repo_root()}".encode()).hexdigest()
    return cache_dir() / "warm-imports" / f"{module}-{key[:10]}.txt"


def read_warm_list(module: str) -> tuple[list[str], set[str]]:
    """(module names in import order, top-level packages never to import here)."""
    try:
        lines = warm_list_path(module).read_text().split()
    except OSError:
        return [], set()
    excluded = {line[1:] for line in lines if line.startswith(EXCLUDED_MARK)}
    return [line for line in lines if not line.startswith(EXCLUDED_MARK)], excluded


def write_warm_list(module: str, names: Iterable[str], excluded: Iterable[str]) -> None:
    path = warm_list_path(module)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".{os.getpid()}.tmp")
        lines = [*(EXCLUDED_MARK + top for top in sorted(excluded)), *names]
        temp.write_text("\n".join(lines) + "\n")
        temp.replace(path)
    except OSError as err:
        log.debug("cannot write %s: %s", path, err)


def third_party_modules(roots: Sequence[str]) -> list[str]:
    """The modules this process imported that are not the project's, in import order."""
    return [name for name, mod in list(sys.modules.items())
            if mod is not None and name not in ("__main__", "__mp_main__")
            and getattr(mod, "__spec__", None) is not None
            and not is_project_module(mod, roots)]


def warm_import(names: list[str], excluded: set[str]) -> str | None:
    """Import `names` package by package; the first top-level package after which the
    process cannot fork safely, or None."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    for top, members in groups.items():
        if top in excluded or all(name in sys.modules for name in members):
            continue
        for name in members:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except BaseException as err:
                log.debug("warm import of %s failed: %s", name, err)
        if not forkable():
            return top
    return None
