"""A process's CPU priority (nice value): raised to a level, never lowered.

`<PREFIX>_NICE` is the level a service runs at from its start (voice_common.runtime,
before it binds: under the warm parent, in the child);
`<PREFIX>_START_NICE` (0 to `<PREFIX>_NICE`, default `<PREFIX>_NICE`) the level
voice_common.launch sets as the process starts. A dev stack starting on a small machine
gives the service that takes longest to start (the LLM: `LLM_START_NICE=0`) the CPU
ahead of the others, which then start at their serving level. Raising the nice value
needs no privilege, lowering it does: both steps only ever raise it. Kept free of
imports beyond `os` and `sys`: the launcher runs this before anything else.
"""

from __future__ import annotations

import os
import sys

MAX_NICE = 19


def raise_nice_to(level: int) -> int:
    """Run at nice `level` at least (threads started later inherit it); the level now."""
    current = os.nice(0)
    if level > current:
        current = os.nice(level - current)
    return current


def _level(raw: str) -> int | None:
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if 0 <= value <= MAX_NICE else None


def serving_level(prefix: str, environ: dict[str, str] | None = None) -> int | None:
    """`<PREFIX>_NICE` when it is set and valid (else the service refuses it), or None."""
    env = os.environ if environ is None else environ
    raw = env.get(f"{prefix}_NICE", "").strip()
    return _level(raw) if raw else None


def start_level(prefix: str, environ: dict[str, str] | None = None) -> int | None:
    """The nice level to start at: `<PREFIX>_START_NICE`, else `<PREFIX>_NICE`; None when
    neither is set. A bad `<PREFIX>_NICE` is left to the service's settings (which exit
    2 with one line); a bad or too high `<PREFIX>_START_NICE` is reported on stderr and
    `<PREFIX>_NICE` used instead."""
    env = os.environ if environ is None else environ
    nice_raw = env.get(f"{prefix}_NICE", "").strip()
    serving = _level(nice_raw) if nice_raw else 0
    start_raw = env.get(f"{prefix}_START_NICE", "").strip()
    if not start_raw:
        return serving if nice_raw else None
    start = _level(start_raw)
    if start is not None and serving is not None and start <= serving:
        return start
    print(f"voice_common.launch: {prefix}_START_NICE={start_raw!r}: expected 0 to "
          f"{prefix}_NICE ({serving if serving is not None else nice_raw!r}); starting at "
          f"{prefix}_NICE", file=sys.stderr, flush=True)
    return serving
