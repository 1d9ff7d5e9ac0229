"""Start a service: in development with hot reload, under a warm parent; otherwise as is.

    python -m voice_common.launch [--prefix PREFIX] MODULE [ARGS...]

runs MODULE's `main()` (or, failing that, `MODULE.__main__`'s, or the module as
`python -m MODULE` would) and exits with its return value.

PREFIX is the service's environment prefix: --prefix, else the module's last name up
to its first "_" (ASR for asr_service, ECHO for echo_service). With DEVELOPMENT_MODE
and `<PREFIX>_HOT_RELOAD` on, the process becomes a warm parent
(voice_common.warm_parent): it keeps the heavy imports and forks a fresh child for
each save, so the supervised process (its PID) stays the same across reloads. The
watched directories are `<PREFIX>_WATCH_PATHS` (os.pathsep-separated) when set, else
voice_common.paths.watch_paths(MODULE). Outside development an import error propagates
as usual (traceback, exit 1).

Priority: the process starts at nice `<PREFIX>_START_NICE`, else `<PREFIX>_NICE`
(voice_common.niceness); the service raises it to `<PREFIX>_NICE` as it starts (the
runtime, before it binds: under the warm parent, in the child).

Crash loops are throttled here, not by the supervisor: when the service exits
non-zero or raises within CRASH_WINDOW_S (5 s) of starting (bad settings: exit 2;
its port taken: exit 1) the launcher waits `<PREFIX>_CRASH_BACKOFF_S` seconds
(default 1) before exiting with the same code. An exit 0 (SIGTERM, a dependency
change) or a failure after a longer run returns at once.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import logging
import os
import runpy
import sys
import time
import traceback
from collections.abc import Callable
from types import ModuleType

from voice_common.niceness import raise_nice_to, start_level
from voice_common.paths import watch_paths

log = logging.getLogger("voice_common.launch")

TRUE = {"1", "true", "yes", "on"}
FALSE = {"", "0", "false", "no", "off"}
# A failure sooner than this after start (settings, a taken port) would repeat at once.
CRASH_WINDOW_S = 5.0
DEFAULT_CRASH_BACKOFF_S = 1.0


def env_prefix(module: str) -> str:
    """The prefix derived from MODULE's name; a service named otherwise passes --prefix."""
    return module.rsplit(".", 1)[-1].split("_", 1)[0].upper()


def flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE


def reload_enabled(prefix: str) -> bool:
    """DEVELOPMENT_MODE and `<PREFIX>_HOT_RELOAD` on. This is the one reader of
    `<PREFIX>_HOT_RELOAD`: a value that is neither on nor off is reported and means off
    (the service still starts, as with a bad crash backoff)."""
    name = f"{prefix}_HOT_RELOAD"
    raw = os.environ.get(name, "").strip().lower()
    if raw not in TRUE | FALSE:
        print(f"voice_common.launch: {name}={raw!r}: expected 1/true/yes/on or "
              f"0/false/no/off; hot reload off", file=sys.stderr, flush=True)
        return False
    return flag("DEVELOPMENT_MODE") and raw in TRUE


def error_location(err: BaseException) -> tuple[str, int | None]:
    """The file and line to fix: a SyntaxError's own, else the innermost frame."""
    if isinstance(err, SyntaxError) and err.filename:
        return err.filename, err.lineno
    frames = traceback.extract_tb(err.__traceback__)
    for frame in reversed(frames):
        if "importlib" not in frame.filename:
            return frame.filename, frame.lineno
    return "?", None


def watch_dirs(module: str, prefix: str) -> list[str]:
    configured = os.environ.get(f"{prefix}_WATCH_PATHS", "").strip()
    if configured:
        return [p for p in configured.split(os.pathsep) if p]
    return watch_paths(module)


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


def report_import_error(module: str, prefix: str, err: BaseException) -> None:
    """Log an import-time error where a developer sees it, with the file and line to fix."""
    filename, line = error_location(err)
    where = f"{filename}:{line}" if line else filename
    detail = err.msg if isinstance(err, SyntaxError) else str(err)
    log.error("Hot-reload: %s cannot start: %s at %s: %s", module, type(err).__name__, where,
              detail)
    log.debug("import traceback:\n%s", "".join(traceback.format_exception(err)))
    log.warning("Hot-reload: waiting for a change under %s to try again",
                ", ".join(watch_dirs(module, prefix)))


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


def run_main(module: str, main: Callable[[], object] | None) -> int:
    if main is None:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    result = main()
    return result if isinstance(result, int) else 0


def run_module(module: str, args: list[str]) -> int:
    """Import and run the service in this process (no hot reload)."""
    sys.argv = [module, *args]
    return run_main(module, resolve_main(module))


def run_warm(module: str, args: list[str], prefix: str) -> int:
    """Hot reload: this process becomes the warm parent of the service's children."""
    # Off for good in the warm parent, from before its imports (a fifth of their CPU);
    # it freezes its objects before each fork and the children turn it back on.
    gc.disable()
    from voice_common.logs import configure_logging
    from voice_common.warm_parent import WarmParent

    level = os.environ.get(f"{prefix}_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO"
    configure_logging(module, development=True, level=level.upper())
    code = WarmParent(module, args, prefix).run()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    # No interpreter teardown: torch's takes seconds, and the children are gone.
    os._exit(code)


def _warn_if_prefix_looks_wrong(module: str, prefix: str) -> None:
    """Hot reload asked for under another prefix (a command without --prefix): say so."""
    if f"{prefix}_HOT_RELOAD" in os.environ or not flag("DEVELOPMENT_MODE"):
        return
    others = sorted(name for name in os.environ if name.endswith("_HOT_RELOAD") and flag(name))
    if others:
        print(f"voice_common.launch: {module} runs without hot reload: {prefix}_HOT_RELOAD is "
              f"not set ({', '.join(others)} is); pass --prefix if {prefix} is not its "
              f"prefix", file=sys.stderr, flush=True)


def run(module: str, args: list[str], prefix: str | None = None) -> int:
    """Run the service; return its exit status, after the crash backoff when it failed
    soon after start."""
    prefix = prefix or env_prefix(module)
    level = start_level(prefix)
    if level is not None:
        raise_nice_to(level)  # before any import, thread or child: all inherit it
    if reload_enabled(prefix):
        return run_warm(module, args, prefix)
    _warn_if_prefix_looks_wrong(module, prefix)
    started = time.monotonic()
    try:
        code = run_module(module, args)
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
