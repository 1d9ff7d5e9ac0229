"""Follow several log files at once, each line prefixed with its process name (colored)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

COLORS = ("\033[36m", "\033[32m", "\033[33m", "\033[35m", "\033[34m", "\033[91m")
RESET = "\033[0m"


def _tail(path: Path, lines: int) -> tuple[list[str], int]:
    """The last `lines` lines and the offset to continue from."""
    try:
        data = path.read_bytes()
    except OSError:
        return [], 0
    text = data.decode(errors="replace").splitlines()
    return (text[-lines:] if lines > 0 else []), len(data)


def follow(files: dict[str, Path], *, lines: int = 20, keep_following: bool = True,
           color: bool = False, prefix: bool = True, poll: float = 0.2) -> None:
    width = max(len(n) for n in files)
    labels = {}
    for i, name in enumerate(files):
        label = f"{name:<{width}} | " if prefix else ""
        labels[name] = f"{COLORS[i % len(COLORS)]}{label}{RESET}" if color and prefix else label
    offsets: dict[str, int] = {}
    partial: dict[str, str] = {n: "" for n in files}
    for name, path in files.items():
        last_lines, offsets[name] = _tail(path, lines)
        for line in last_lines:
            sys.stdout.write(f"{labels[name]}{line}\n")
    sys.stdout.flush()
    while keep_following:
        wrote = False
        for name, path in files.items():
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if size < offsets[name]:  # truncated or recreated (dev-clean): start over
                offsets[name] = 0
            if size == offsets[name]:
                continue
            with open(path, "rb") as handle:
                handle.seek(offsets[name])
                chunk = handle.read()
            offsets[name] += len(chunk)
            text = partial[name] + chunk.decode(errors="replace")
            *complete, partial[name] = text.split("\n")
            for line in complete:
                sys.stdout.write(f"{labels[name]}{line}\n")
                wrote = True
        if wrote:
            sys.stdout.flush()
        time.sleep(poll)
