"""The warm parent's spare: a child forked ahead of the next save that has already loaded
what the parent may not hold (voice_common.warm_parent).

Some engines start threads while they load (CTranslate2's workers, onnxruntime's
sessions): the warm parent cannot load them, because it must fork with one thread. A
service whose `<package>.warm` module has a `stage()` function gets a spare instead:
once the running child serves, the parent forks a spare, which takes the service's
nice level (`<PREFIX>_NICE`), waits until a core is idle (a stack that is starting goes
first) and calls `stage()` (loading
the engine, threads and all, into the `warm` module, as `preload()` would have) and
then waits. At the next save the parent hands the spare the moment after which saves
were not seen yet, and the spare becomes the new child: it drops the project's modules
as any child does, imports the project's code afresh and takes the staged engine
(`warm.take()`), so the save does not wait for the load.

The staged engine was built by the project's code as it was when the spare was forked:
the spare keeps the modules it imported for `stage()` only while their files are
unchanged; after a save of one it says `stale` and exits, and the parent forks a plain
child (which loads the engine itself). The spare never forks (it has threads) and dies
with the parent (PR_SET_PDEATHSIG); the parent kills it before it execs itself anew or
exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import select
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voice_common import hotreload
from voice_common.niceness import raise_nice_to, serving_level
from voice_common.warm_imports import project_files

if TYPE_CHECKING:
    from voice_common.warm_parent import WarmParent

log = logging.getLogger("voice_common.warm_spare")

STAGE_FUNCTION = "stage"  # <package>.warm.stage(): runs in the spare
STALE = "stale"  # what a spare says when its staged code changed since
# The spare loads once a core has been idle for a QUIET_WINDOW_S, or after QUIET_MAX_WAIT_S.
QUIET_WINDOW_S = 0.25
QUIET_IDLE_CORES = 0.8
QUIET_MAX_WAIT_S = 10.0
PR_SET_NAME = 15
SPARE_NAME = b"warm-spare"  # /proc/PID/comm: tells a spare from the serving child


@dataclass
class Spare:
    pid: int
    go: int  # write end: the parent's go-ahead
    report: int  # read end: what the spare says once it runs as the child


def fork_spare(plan: WarmParent, stage_module: str) -> Spare:
    """Fork a spare that stages `stage_module`.stage() and waits for its go-ahead."""
    from voice_common.warm_parent import (
        _flush,
        child_main,
        collect_in_child,
        die_with_parent,
        freeze_for_fork,
    )

    report_read, report_write = os.pipe()
    go_read, go_write = os.pipe()
    parent = os.getpid()
    _flush()
    freeze_for_fork()
    pid = os.fork()
    if pid == 0:  # the spare; never returns
        code = 1
        collect_in_child()
        try:
            os.close(report_read)
            os.close(go_write)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            die_with_parent(parent)
            _set_name(SPARE_NAME)
            # Background work: at the service's own level, though its parent may have
            # started lower (<PREFIX>_START_NICE, voice_common.niceness).
            level = serving_level(plan.prefix)
            if level is not None:
                raise_nice_to(level)
            staged = _stage(plan, stage_module, go_read)
            go = _read_line(go_read)
            if not go:  # the parent closed the pipe: not wanted any more
                os._exit(0)
            _set_name(b"python")
            plan.since = float(go.split()[1])
            changed = [path for path, digest in staged.items()
                       if hotreload.file_digest(path) != digest]
            if changed:
                log.info("Hot-reload: the spare's staged code changed (%s); a fresh child "
                         "loads instead", ", ".join(os.path.basename(p) for p in changed))
                os.write(report_write, f"{STALE} {plan.since!r}\n".encode())
                code = 0
            else:
                child_main(plan, pipe=report_write, parent=parent,
                           kept={**plan.parent_files, **staged})
        except BaseException:
            log.exception("Hot-reload: the spare failed")
        finally:
            os._exit(code)
    os.close(report_write)
    os.close(go_read)
    log.debug("Hot-reload: spare %d forked", pid)
    return Spare(pid, go_write, report_read)


def _idle_cores(window_s: float, go: int) -> float | None:
    """How many cores were idle, on average, over the next `window_s` (/proc/stat); None
    as soon as `go` is readable (the spare is wanted now)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all (in ticks)

    idle, total = sample()
    if select.select([go], [], [], window_s)[0]:
        return None
    idle2, total2 = sample()
    return (os.cpu_count() or 1) * (idle2 - idle) / max(total2 - total, 1)


def wait_for_quiet(go: int, max_wait_s: float = QUIET_MAX_WAIT_S) -> None:
    """Wait (at most `max_wait_s`) until a core is idle: a stack that is starting, or
    a call in progress, goes first; the spare's load is not urgent, unless the go-ahead
    comes first (a save: then it loads at once, as a plain child would)."""
    deadline = time.monotonic() + max_wait_s
    with contextlib.suppress(OSError, ValueError, IndexError):
        while time.monotonic() < deadline:
            idle = _idle_cores(QUIET_WINDOW_S, go)
            if idle is None or idle >= QUIET_IDLE_CORES:
                return


def _stage(plan: WarmParent, stage_module: str, go: int) -> dict[str, str]:
    """Run stage(); the project files it imported (beyond the parent's), with digests."""
    wait_for_quiet(go)
    started = time.perf_counter()
    try:
        importlib.import_module(stage_module).stage()
        log.info("Hot-reload: spare %d staged %s in %.0f ms", os.getpid(), stage_module,
                 (time.perf_counter() - started) * 1000)
    except Exception as err:
        log.warning("Hot-reload: %s.stage() failed in the spare (%s: %s); the next child "
                    "loads its own", stage_module, type(err).__name__, err)
    return {path: digest for path, digest in project_files(plan.roots).items()
            if path not in plan.parent_files}


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 256)  # retried across signals (PEP 475)
        if not chunk:
            break
        data += chunk
    os.close(fd)
    return data.decode(errors="replace").strip()


def _set_name(name: bytes) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def start(spare: Spare, since: float) -> bool:
    """Tell the spare to become the child; False when it is gone (then fork one)."""
    done, _ = os.waitpid(spare.pid, os.WNOHANG)
    if done:
        os.close(spare.go)
        os.close(spare.report)
        return False
    try:
        os.write(spare.go, f"go {since!r}\n".encode())
    except BrokenPipeError:
        os.waitpid(spare.pid, 0)
        os.close(spare.report)
        return False
    finally:
        os.close(spare.go)
    return True


def discard(spare: Spare) -> None:
    """End a spare that was not started (it may be loading: no need to wait for that)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(spare.pid, signal.SIGKILL)
    os.waitpid(spare.pid, 0)
    for fd in (spare.go, spare.report):
        with contextlib.suppress(OSError):
            os.close(fd)

