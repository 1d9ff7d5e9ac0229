# Over 400 lines: the parent's loop and the child's start belong together (fork safety).
"""The warm parent: hot reload that keeps the supervised process (its PID) and its imports.

With hot reload on (DEVELOPMENT_MODE=1, `<PREFIX>_HOT_RELOAD=1`), `voice_common.launch`
becomes a parent that never serves: it imports the third-party modules the service uses
(torch, transformers, numpy, grpc, vosk...) and, where the service's package has a
`warm` module, calls its `preload()` (the LLM's model); then it forks a child that
imports the project's own code afresh and runs the service. A save makes the child drain
and exit; the parent forks a new one (same PID for the supervisor, so process-compose's
1 s restart floor never applies, and nothing heavy is imported twice).

Fork safety: the parent never creates a gRPC channel or server, an event loop thread or
any other thread; `import grpc` alone starts no thread and initialises no core state
that a child would share. Before each fork the parent checks that it is single-threaded
(/proc/self/task). Libraries with fork handlers (OpenBLAS under numpy stops its pool in
a fork's prepare step) pass after a probe fork; a library that leaves a thread (the
onnxruntime module starts one at import) is excluded from the warm imports from then on
and the parent execs itself anew (same PID) without it. A preload that leaves a thread
makes it exec itself with VOICE_WARM=imports (no preload); if it still cannot fork
safely, with VOICE_WARM=0: no warm imports, no preload.

The spare (voice_common.warm_spare): where the service's `warm` module has a `stage()`,
the parent forks, once the running child says SERVING, a spare that loads what the
parent may not hold (engines that start threads) and becomes the next save's child.

Fresh code: the child removes from `sys.modules` every module from the checkout or a
watched folder (not from site-packages) except those the parent imported itself, which
are byte-identical to their files: a save of one of those (voice_common.launch, a `warm`
module and what it imports) makes the parent exec itself anew instead. Nothing is
`importlib.reload`ed.

What a batch of saves needs (voice_common.hotreload.needed):
- a source file: a fresh child (the warm imports learned from the old child are added
  to the parent first, and cached for the next cold start);
- a file the parent imported: the parent execs itself (same PID, imports paid again);
- a dependency file (pyproject.toml, constraints.txt, requirements*.txt, a lock file):
  the parent exits 0 after the child drained and the supervisor (restart: always) starts
  the process again, with whatever the new dependencies are.

A syntax error (any import-time error) in the child: it is logged with its file and line
and the child waits for the next save. A child that crashes (exits non-zero or dies by a
signal without a reload being asked for) ends the parent with the same status (128+N for
signal N), after `<PREFIX>_CRASH_BACKOFF_S` when it ran less than CRASH_WINDOW_S: the
supervisor sees the crash and restarts the process as before.

Garbage collection (the recipe of the `gc` module's documentation for a parent that
forks without exec): the launcher disables the collector before the warm imports, the
parent calls `gc.freeze()` before each fork and each child re-enables it first thing.
Importing torch and transformers with the collector on cost a fifth more CPU (its
passes over an ever larger heap found almost nothing to free: some 11 000 objects of
392 000, no memory), and a child's collections skip the frozen objects, so they
neither scan nor write to the pages it shares with the parent.

Signals: SIGTERM and SIGINT are forwarded to the child (which is in the parent's process
group, so a group signal reaches it directly too); the parent exits once the child has
drained, with the child's status (0 after a clean drain). The child dies with the parent
(PR_SET_PDEATHSIG), so a SIGKILLed parent leaves no child holding the ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import importlib.util
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path

from voice_common import hotreload, warm_spare
from voice_common.launch import (
    crash_backoff_s,
    crash_delay,
    exit_code,
    report_import_error,
    resolve_main,
    run_main,
    watch_dirs,
)
from voice_common.paths import dependency_files, repo_root
from voice_common.warm_imports import (
    forkable,
    project_files,
    project_modules,
    read_warm_list,
    source_roots,
    third_party_modules,
    warm_import,
    write_warm_list,
)
from voice_common.warm_notify import SERVING, tell_parent_at_serving

log = logging.getLogger("voice_common.warm_parent")

# "0": no warm imports and no preload in the parent; "imports": no preload.
WARM_ENV = "VOICE_WARM"
PRELOAD_MODULE = "warm"  # <package>.warm: preload() runs in the parent
PR_SET_PDEATHSIG = 1
# Across an exec of the parent: the moment after which saves have not been seen yet.
SINCE_ENV = "VOICE_WARM_SINCE"


# -- the parent ------------------------------------------------------------------------------
class WarmParent:
    def __init__(self, module: str, args: list[str], prefix: str) -> None:
        self.module = module
        self.args = args
        self.prefix = prefix
        self.child = 0
        self.stopping = ""
        self.parent_files: dict[str, str] = {}
        self.excluded: set[str] = set()
        # Saves after this moment are not in any batch yet: the next child looks for them.
        self.since = float(os.environ.pop(SINCE_ENV, "") or time.time())
        self.watched = watch_dirs(module, prefix)
        self.roots = source_roots(self.watched)
        mode = os.environ.get(WARM_ENV, "1")
        self.warm = mode != "0"
        self.preloading = mode not in ("0", "imports")
        # <package>.warm with a stage(): a spare child loads ahead of the next save.
        self.stage_module = ""
        self.spare: warm_spare.Spare | None = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = signal.Signals(signum).name
        if self.child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signum)

    def _reexec(self, why: str, *, warm: str = "") -> None:
        log.warning("Hot-reload: %s; the warm parent starts anew (same PID)%s", why,
                    f" with {WARM_ENV}={warm}" if warm else "")
        self._drop_spare()
        if warm:
            os.environ[WARM_ENV] = warm
        os.environ[SINCE_ENV] = repr(self.since)
        _flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])

    def _learn(self) -> None:
        """Import what the children imported (cached from the last child), excluding a
        package that leaves a thread behind; exec anew once one did."""
        if not self.warm:
            return
        names, self.excluded = read_warm_list(self.module)
        started = time.perf_counter()
        before = len(sys.modules)
        culprit = warm_import(names, self.excluded)
        if culprit is not None:
            write_warm_list(self.module, names, {*self.excluded, culprit})
            self._reexec(f"importing {culprit} leaves a thread that a fork would not "
                         f"carry; it stays out of the warm imports")
        if len(sys.modules) > before:
            log.info("Hot-reload: warm parent imported %d modules in %.0f ms",
                     len(sys.modules) - before, (time.perf_counter() - started) * 1000)

    def _preload(self) -> None:
        """`<package>.warm.preload()`: what the parent may hold (loaded model weights)."""
        if not self.preloading:
            return
        top = self.module.split(".", 1)[0]
        name = f"{top}.{PRELOAD_MODULE}"
        try:
            # Looked up without importing anything: a service without one stays unimported.
            spec = importlib.util.find_spec(top)
            folders = (spec.submodule_search_locations or []) if spec else []
            if not any((Path(folder) / f"{PRELOAD_MODULE}.py").exists() for folder in folders):
                return
            started = time.perf_counter()
            module = importlib.import_module(name)
            if hasattr(module, warm_spare.STAGE_FUNCTION):
                self.stage_module = name
            if not hasattr(module, "preload"):
                return
            module.preload()
        except Exception as err:
            log.warning("Hot-reload: %s.preload() failed (%s: %s); the service loads its "
                        "own", name, type(err).__name__, err)
            return
        if not forkable():
            self._reexec(f"{name}.preload() left threads running", warm="imports")
        log.info("Hot-reload: warm parent preloaded %s in %.0f ms", name,
                 (time.perf_counter() - started) * 1000)

    def run(self) -> int:
        try:
            return self._serve()
        finally:
            self._drop_spare()

    def _serve(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._learn()
        self._preload()
        self.parent_files = project_files(self.roots)
        while not self.stopping:
            changed = [path for path, digest in self.parent_files.items()
                       if hotreload.file_digest(path) != digest]
            if changed:
                self._reexec(f"{hotreload.describe_changes(_as_changes(changed))} changed "
                             f"(the warm parent imported it)")
            if not forkable():
                self._reexec("the warm parent is not single-threaded", warm="0")
            kind, code, ran_s = self._run_child()
            if self.stopping:
                return code if code > 0 else 0
            if kind == hotreload.RELOAD:
                self._learn()
                continue
            if kind == warm_spare.STALE:
                continue  # a plain child is forked instead
            if kind == hotreload.REEXEC:
                self._reexec("a file the warm parent imported changed")
            if kind == hotreload.RESTART:
                log.warning("Hot-reload: a dependency file changed: exiting for a full "
                            "restart by the supervisor (installed packages may differ)")
                return 0
            return self._crashed(code, ran_s)
        return 0

    def _drop_spare(self) -> None:
        if self.spare is not None:
            warm_spare.discard(self.spare)
            self.spare = None

    def _fork_spare(self) -> None:
        """A spare for the next save, if the service stages one and the parent may fork."""
        if self.stage_module and self.spare is None and not self.stopping and forkable():
            self.spare = warm_spare.fork_spare(self, self.stage_module)

    def _start_child(self) -> tuple[int, int]:
        """The staged spare as the new child, else a freshly forked one: (pid, the read
        end of its pipe)."""
        spare, self.spare = self.spare, None
        if spare is not None and warm_spare.start(spare, self.since):
            log.debug("Hot-reload: spare %d started as the child", spare.pid)
            return spare.pid, spare.report
        read_end, write_end = os.pipe()
        parent = os.getpid()
        _flush()  # buffered output would be written twice, once by the child
        freeze_for_fork()
        pid = os.fork()
        if pid == 0:
            collect_in_child()
            os.close(read_end)
            child_main(self, pipe=write_end, parent=parent)
        os.close(write_end)
        log.debug("Hot-reload: child %d started", pid)
        return pid, read_end

    def _wait(self, pid: int, read_end: int) -> tuple[int, bytes]:
        """Wait for the child to end (its exit status, what it wrote); fork the spare once
        it says it serves."""
        data = b""
        try:
            pidfd = os.pidfd_open(pid)
        except (OSError, AttributeError):  # no pidfd: wait without a spare
            pidfd = -1
        reading = pidfd >= 0 and bool(self.stage_module)
        try:
            while pidfd >= 0:
                ready, _, _ = select.select([pidfd, *([read_end] if reading else [])], [], [])
                if read_end in ready:
                    chunk = os.read(read_end, 4096)
                    reading = bool(chunk)
                    data += chunk
                    if f"{SERVING}\n".encode() in data:
                        reading = False  # nothing else comes before the child ends
                        self._fork_spare()
                if pidfd in ready:
                    break
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        _, status = os.waitpid(pid, 0)  # retried across signals (PEP 475)
        return status, data + _read_all(read_end)

    def _run_child(self) -> tuple[str, int, float]:
        """Start and wait for a child; (what it asked for, its exit status, seconds run)."""
        started = time.monotonic()
        pid, read_end = self._start_child()
        self.child = pid
        if self.stopping:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        status, data = self._wait(pid, read_end)
        self.child = 0
        said = [word for word in data.decode(errors="replace").split() if word != SERVING]
        code = os.waitstatus_to_exitcode(status)
        ran_s = time.monotonic() - started
        kind = said[0] if said else ""
        if len(said) > 1:
            self.since = float(said[1])
        if kind:
            log.info("Hot-reload: child %d ended (%s) after %.1f s: %s", pid, _status(code),
                     ran_s, kind)
        return kind, code, ran_s

    def _crashed(self, code: int, ran_s: float) -> int:
        status = 128 - code if code < 0 else code
        if status == 0:
            return 0
        delay = crash_delay(status, ran_s, crash_backoff_s(self.prefix))
        log.error("Hot-reload: %s %s after %.1f s; the warm parent exits with %d%s",
                  self.module, _status(code), ran_s, status,
                  f" in {delay:g} s ({self.prefix}_CRASH_BACKOFF_S)" if delay else "")
        deadline = time.monotonic() + delay
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.05)
        return status


def _read_all(fd: int) -> bytes:
    """What the child wrote, without waiting for an end of file: a process the child
    forked could still hold the pipe's write end."""
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 4096):
            data += chunk
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return data


def _status(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"


def _as_changes(paths: Iterable[str]) -> hotreload.Changes:
    from watchfiles import Change

    return {(Change.modified, path) for path in paths}


def freeze_for_fork() -> None:
    """Before a fork: what the parent holds moves to the collector's permanent
    generation (the collector itself stays off in the parent: voice_common.launch)."""
    gc.freeze()


def collect_in_child() -> None:
    """First thing in a forked child: the collector on, for the child's own objects."""
    gc.enable()


def _flush() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


# -- the child -------------------------------------------------------------------------------
def die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _fresh_project_code(kept: dict[str, str], roots: tuple[str, ...]) -> None:
    """Forget the project's modules except those the parent imported (unchanged files)."""
    for name, module in project_modules(roots).items():
        file = getattr(module, "__file__", None)
        if not (file and os.path.abspath(file) in kept):
            del sys.modules[name]
    importlib.invalidate_caches()


class _Reporter:
    """Tells the parent what a batch of saves needs, then asks the service to drain."""

    def __init__(self, plan: WarmParent, pipe: int) -> None:
        self.module = plan.module
        self.roots = plan.roots
        self.pipe = pipe
        self.parent_files = plan.parent_files

    def on_change(self, changes: hotreload.Changes) -> None:
        kind = hotreload.needed(changes, self.parent_files)
        what = {hotreload.RELOAD: "draining and reloading",
                hotreload.REEXEC: "draining; the warm parent starts anew",
                hotreload.RESTART: "dependency change: draining for a full restart"}[kind]
        log.info("Hot-reload: %s changed; %s", hotreload.describe_changes(
            changes, str(repo_root())), what)
        if kind != hotreload.RESTART:
            _, excluded = read_warm_list(self.module)
            write_warm_list(self.module, third_party_modules(self.roots), excluded)
        # The newest save of this batch: the next child looks for any later one.
        os.write(self.pipe, f"{kind} {hotreload.newest_mtime(changes)!r}\n".encode())
        os.kill(os.getpid(), signal.SIGTERM)


def child_main(plan: WarmParent, *, pipe: int, parent: int,
               kept: dict[str, str] | None = None) -> None:
    """Run the service in the forked child (`plan`: the parent's copy; `kept`: the
    project files whose modules stay, default the parent's); never returns."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        die_with_parent(parent)
        tell_parent_at_serving(pipe)
        _fresh_project_code(plan.parent_files if kept is None else kept, plan.roots)
        reporter = _Reporter(plan, pipe)
        hotreload.start_watcher(plan.watched, [str(p) for p in dependency_files()],
                                reporter.on_change, since=plan.since)
        code = run_child(plan.module, plan.args, plan.prefix)
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException:
        traceback.print_exc()
    finally:
        _flush()
        os._exit(code)


def run_child(module: str, args: list[str], prefix: str) -> int:
    """Import and run the service; an import-time error waits for the next save (the
    watcher ends this process then)."""
    sys.argv = [module, *args]
    try:
        main = resolve_main(module)
    except Exception as err:  # any import-time error is a source error to wait out
        report_import_error(module, prefix, err)
        threading.Event().wait()
    try:
        return run_main(module, main)
    except (SyntaxError, ImportError) as err:
        # A module imported lazily (during warm-up, say) is broken: same treatment.
        report_import_error(module, prefix, err)
        threading.Event().wait()
    return 1
