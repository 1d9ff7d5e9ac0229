"""Files of the recordings directory: named by call id, written atomically.

A file appears whole or not at all: it is written to a hidden temporary file in the
same directory, flushed to disk, then renamed over its name (`os.replace`). A failure
(a full disk, an unwritable directory) leaves no partial file behind and raises
`OSError` to the caller, who counts and logs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
MAX_NAME = 200


def file_stem(call_id: str) -> str:
    """The call id as a file name: other characters become "_", no leading dot."""
    name = _UNSAFE.sub("_", call_id)[:MAX_NAME] or "call"
    return "_" + name[1:] if name.startswith(".") else name


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` as `path`: all of it, or nothing (the old file, if any, stays)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
