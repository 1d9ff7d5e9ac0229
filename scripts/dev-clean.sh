#!/usr/bin/env bash
# Stop the development stack and remove what running it left: the runtime directory
# (.dev: state, logs, sockets), Python caches (__pycache__, .pytest_cache, .ruff_cache,
# .mypy_cache).
# Never touches sources.
#
# Usage: scripts/dev-clean.sh [--all]
#   --all   also remove .venv (VENV) and the built demo models
#           (voice_common.paths.cache_dir(): $VOICE_CACHE_DIR or ~/.cache/opensips-ai)
#
# Environment: DEV_STACK_FILE, RUNTIME_DIR, VENV, VOICE_CACHE_DIR.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/devstack/stack.sh"

all=0
case "${1:-}" in
  -h|--help) usage_from_header "$0"; exit 0 ;;
  --all) all=1 ;;
  "") ;;
  *) die "unknown option: $1 (see --help)" ;;
esac

# Without a working Python (a broken .venv, say) dev-stop cannot run: stop what the
# devstack state file names from here, so that no process outlives its state.
kill_from_state() {
  local file="$RUNTIME_DIR/devstack.json" sup pid
  [ -f "$file" ] || return 0
  sup="$(grep -o '"supervisor_pid": [0-9]*' "$file" | grep -o '[0-9]*$' || true)"
  if [ -n "$sup" ] && kill -TERM "$sup" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$sup" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$sup" 2>/dev/null || true
  fi
  for pid in $(grep -o '"pid": [0-9]*' "$file" | grep -o '[0-9]*$' || true); do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}

cd "$ROOT"
if [ -d "$RUNTIME_DIR" ] || [ -S "$PC_SOCKET" ]; then
  if ! "$ROOT/scripts/dev-stop.sh"; then
    case "$DEV_RUNNER" in
      devstack)
        warn "dev-stop.sh failed: stopping what $RUNTIME_DIR/devstack.json names directly"
        kill_from_state ;;
      process-compose)
        # Its server holds the socket under $RUNTIME_DIR: removing that would orphan the stack.
        die "dev-stop.sh failed: process-compose may still run ($PC_SOCKET); stop it, then clean" ;;
    esac
  fi
fi

# Ask Python where the model cache is before .venv goes.
cache=""
if [ "$all" = 1 ]; then
  # From the source tree, so that it works whatever state .venv is in.
  cache="$(PYTHONPATH="$ROOT/services/common/src" "$ROOT/scripts/devstack/pyrun" -c \
    'from voice_common.paths import cache_dir; print(cache_dir())' 2>/dev/null)" || cache=""
  [ -n "$cache" ] || warn "cannot tell where the built models are: left in place"
fi

info "removing $RUNTIME_DIR and Python caches"
rm -rf -- "$RUNTIME_DIR"
# Only ignored, generated directories; virtual environments are left to --all (the
# checkout's .venv too when VENV names another: its libraries' byte-code is set-up's
# work, and without it every start recompiles torch and transformers).
find "$ROOT" -path "$VENV" -prune -o -path "$ROOT/.venv" -prune -o -path "$ROOT/.git" -prune \
  -o -type d \( -name __pycache__ -o -name .pytest_cache -o -name .ruff_cache \
  -o -name .mypy_cache \) -print0 |
  xargs -0 rm -rf --

if [ "$all" = 1 ]; then
  info "removing $VENV"
  rm -rf -- "$VENV"
  if [ -n "$cache" ] && [ -d "$cache" ]; then
    info "removing built models in $cache"
    rm -rf -- "$cache"
  fi
fi
info "clean"
