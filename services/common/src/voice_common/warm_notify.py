"""A child of the development warm parent says when it serves (voice_common.warm_spare).

The warm parent's child hands `tell_parent_at_serving` the write end of its pipe to the
parent; voice_common.runtime calls `notify_serving()` at SERVING, and the parent then
forks the spare for the next save (so the spare's loading never competes with a start).
The warm parent imports this module, so the child keeps that copy (the one the runtime
then imports). Outside the warm parent nothing is set and this does nothing. Kept free
of imports: the production runtime imports it.
"""

from __future__ import annotations

import contextlib
import os

SERVING = "serving"

_pipe: int | None = None


def tell_parent_at_serving(pipe: int) -> None:
    global _pipe
    _pipe = pipe


def notify_serving() -> None:
    """Once: write SERVING to the warm parent's pipe, if this is its child."""
    global _pipe
    pipe, _pipe = _pipe, None
    if pipe is not None:
        with contextlib.suppress(OSError):
            os.write(pipe, f"{SERVING}\n".encode())
