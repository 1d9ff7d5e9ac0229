"""Start a service so that a broken source file never ends the development loop.

    python -m voice_common.launch MODULE [ARGS...]

runs MODULE's `main()` (or, failing that, `MODULE.__main__`'s, or the module as
`python -m MODULE` would) and exits with its return value. When importing the
service fails (a SyntaxError, an ImportError, any error at import time) while
DEVELOPMENT_MODE and the service's hot-reload flag (`<PREFIX>_HOT_RELOAD`) are
on, the error is logged with its file and line, the launcher waits for the next
source change and exits 0, and process-compose (restart: always) starts it again.
Outside development the error propagates as usual (traceback, exit 1).

PREFIX is the service's environment prefix: ASR for asr_service, CORE for
opensips_ai_core, otherwise the module's last name up to its first "_" (ECHO for
echo_service), or --prefix. The watched directories are `<PREFIX>_WATCH_PATHS`
(os.pathsep-separated) when set, else the service's package, services/common,
shared/proto_generated and the broken file's directory.

Crash loops are throttled here, not by the supervisor: the stack restarts a
process at once (`backoff_seconds: 0`, so a hot reload costs no second), and
when the service exits non-zero or raises within CRASH_WINDOW_S (5 s) of
starting (bad settings: exit 2; its port taken: exit 1) the launcher waits
`<PREFIX>_CRASH_BACKOFF_S` seconds (default 1) before exiting with the same
code. An exit 0 (hot reload, SIGTERM) or a failure after a longer run returns
at once. (A service on voice_common.runtime never returns 0 here in development:
the runtime ends the process itself with os._exit after a clean shutdown.)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import runpy
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from watchfiles import Change

from voice_common.paths import repo_root

log = logging.getLogger("voice_common.launch")

PREFIXES = {"opensips_ai_core": "CORE"}
TRUE = {"1", "true", "yes", "on"}
# A failure sooner than this after start (settings, a taken port) would repeat at once.
CRASH_WINDOW_S = 5.0
DEFAULT_CRASH_BACKOFF_S = 1.0


def env_prefix(module: str) -> str:
    top = module.split(".", maxsplit=1)[0]
    if top in PREFIXES:
        return PREFIXES[top]
    return module.rsplit(".", 1)[-1].split("_", 1)[0].upper()


def reload_enabled(prefix: str) -> bool:
    def flag(name: str) -> bool:
        return os.environ.get(name, "").strip().lower() in TRUE

    return flag("DEVELOPMENT_MODE") and flag(f"{prefix}_HOT_RELOAD")


def error_location(err: BaseException) -> tuple[str, int | None]:
    """The file and line to fix: a SyntaxError's own, else the innermost frame."""
    if isinstance(err, SyntaxError) and err.filename:
        return err.filename, err.lineno
    frames = traceback.extract_tb(err.__traceback__)
    for frame in reversed(frames):
        if "importlib" not in frame.filename:
            return frame.filename, frame.lineno
    return "?", None


def watch_dirs(module: str, prefix: str, broken_file: str) -> list[str]:
    configured = os.environ.get(f"{prefix}_WATCH_PATHS", "").strip()
    if configured:
        return [p for p in configured.split(os.pathsep) if p]
    root = repo_root()
    dirs = [root / "services" / "common", root / "shared" / "proto_generated"]
    try:
        spec = importlib.util.find_spec(module.split(".", maxsplit=1)[0])
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        dirs.insert(0, Path(spec.origin).parent)
    if broken_file and Path(broken_file).exists():
        dirs.append(Path(broken_file).parent)
    unique = dict.fromkeys(str(d) for d in dirs if d.exists())
    return list(unique)


def resolve_main(module: str) -> Callable[[], object] | None:
    """Import MODULE (this is where a broken file raises) and find its entry point."""
    imported: ModuleType = importlib.import_module(module)
    main = getattr(imported, "main", None)
    if callable(main):
        return main
    is_package = hasattr(imported, "__path__")
    if is_package and importlib.util.find_spec(f"{module}.__main__") is not None:
        entry = importlib.import_module(f"{module}.__main__")
        main = getattr(entry, "main", None)
        if callable(main):
            return main
    return None


def wait_for_fix(module: str, prefix: str, err: BaseException) -> int:
    """Log the error where a developer sees it, block until a source change, return 0."""
    from voice_common.logs import configure_logging

    if not logging.getLogger().handlers:
        configure_logging(module, development=True, level=os.environ.get("LOG_LEVEL", "INFO"))
    filename, line = error_location(err)
    where = f"{filename}:{line}" if line else filename
    detail = err.msg if isinstance(err, SyntaxError) else str(err)
    log.error("Hot-reload: %s cannot start: %s at %s: %s", module, type(err).__name__, where,
              detail)
    log.debug("import traceback:\n%s", "".join(traceback.format_exception(err)))
    wanted = watch_dirs(module, prefix, filename)
    dirs = [d for d in wanted if Path(d).exists()]
    while not dirs:
        # Nothing to watch would end the wait at once and crash-loop after all.
        log.warning("Hot-reload: none of %s exists; checking again in 2 s", ", ".join(wanted))
        time.sleep(2)
        dirs = [d for d in wanted if Path(d).exists()]
    log.warning("Hot-reload: waiting for a change under %s to try again", ", ".join(dirs))
    changes = asyncio.run(_wait_for_fix(dirs, filename))
    log.info("Hot-reload: %s changed; restarting %s", changes, module)
    return 0


async def _wait_for_fix(dirs: list[str], broken_file: str) -> str:
    """The watcher's next batch, or the broken file changing before the watcher was set up
    (a save right after the failure would otherwise be missed)."""
    from voice_common.hotreload import describe_changes, wait_for_change

    def snapshot() -> bytes | None:
        try:
            return Path(broken_file).read_bytes()
        except OSError:
            return None

    before = snapshot()
    watcher = asyncio.create_task(wait_for_change(dirs))
    try:
        while not watcher.done():
            done, _ = await asyncio.wait({watcher}, timeout=0.5)
            if not done and snapshot() != before:
                return describe_changes({(Change.modified, broken_file)}, str(repo_root()))
        return describe_changes(watcher.result(), str(repo_root()))
    finally:
        watcher.cancel()


def crash_backoff_s(prefix: str) -> float:
    """`<PREFIX>_CRASH_BACKOFF_S` in seconds; a bad value is reported and the default used
    (refusing to start over it would be one more crash to throttle)."""
    name = f"{prefix}_CRASH_BACKOFF_S"
    raw = os.environ.get(name, "").strip()
    if not raw:
        return DEFAULT_CRASH_BACKOFF_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        print(f"voice_common.launch: {name}={raw!r}: expected seconds >= 0; using "
              f"{DEFAULT_CRASH_BACKOFF_S:g}", file=sys.stderr, flush=True)
        return DEFAULT_CRASH_BACKOFF_S
    return value


def crash_delay(code: int, ran_s: float, backoff_s: float,
                window_s: float = CRASH_WINDOW_S) -> float:
    """Seconds to wait before exiting with `code` after running `ran_s` seconds."""
    return backoff_s if code != 0 and ran_s < window_s else 0.0


def exit_code(exc: SystemExit) -> int:
    """The status `sys.exit(exc.code)` would give, printing a message code as Python does."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr, flush=True)
    return 1


def run_module(module: str, args: list[str], prefix: str) -> int:
    """Import and run the service; an import error in development waits for a fix."""
    sys.argv = [module, *args]
    try:
        main = resolve_main(module)
    except Exception as err:  # any import-time error is a source error to wait out
        if not reload_enabled(prefix):
            raise
        return wait_for_fix(module, prefix, err)
    try:
        if main is None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            return 0
        result = main()
    except (SyntaxError, ImportError) as err:
        # A module imported lazily (during warm-up, say) is broken: same treatment.
        if not reload_enabled(prefix):
            raise
        return wait_for_fix(module, prefix, err)
    return result if isinstance(result, int) else 0


def run(module: str, args: list[str], prefix: str | None = None) -> int:
    """Run the service; return its exit status, after the crash backoff when it failed
    soon after start."""
    prefix = prefix or env_prefix(module)
    started = time.monotonic()
    try:
        code = run_module(module, args, prefix)
    except SystemExit as exc:  # load_settings' exit 2 on bad settings, sys.exit(N)
        code = exit_code(exc)
    except Exception:
        traceback.print_exc()  # what Python prints for an uncaught exception
        sys.stderr.flush()
        code = 1
    ran_s = time.monotonic() - started
    delay = crash_delay(code, ran_s, crash_backoff_s(prefix))
    if delay > 0:
        print(f"voice_common.launch: {module} exited with {code} {ran_s:.1f} s after start; "
              f"waiting {delay:g} s before exiting ({prefix}_CRASH_BACKOFF_S)",
              file=sys.stderr, flush=True)
        time.sleep(delay)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voice_common.launch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", help="environment prefix of the service (default: derived)")
    parser.add_argument("module", help="the service's module, e.g. asr_service")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed to the service")
    ns = parser.parse_args(argv)
    return run(ns.module, ns.args, ns.prefix)


if __name__ == "__main__":
    sys.exit(main())
