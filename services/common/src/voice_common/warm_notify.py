"""A child of the development warm parent says when it serves (voice_common.warm_spare).

The warm parent puts the write end of its pipe to the child in VOICE_WARM_NOTIFY_FD;
voice_common.runtime calls `notify_serving()` at SERVING, and the parent then forks the
spare for the next save (so the spare's loading never competes with a start). Outside
the warm parent the variable is unset and this does nothing. Kept free of imports: the
production runtime imports it.
"""

from __future__ import annotations

import contextlib
import os

NOTIFY_ENV = "VOICE_WARM_NOTIFY_FD"
SERVING = "serving"


def notify_serving() -> None:
    fd = os.environ.pop(NOTIFY_ENV, "")
    if fd:
        with contextlib.suppress(OSError, ValueError):
            os.write(int(fd), f"{SERVING}\n".encode())
