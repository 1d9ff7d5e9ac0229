# Shared by scripts/dev-*.sh (after lib/common.sh): which stack file, which runner.
# shellcheck shell=bash
#
# DEV_STACK_FILE  the stack (default: process-compose.yaml at the repository root)
# RUNTIME_DIR     state, supervisor log (default: .dev; set by lib/common.sh)
# DEV_RUNNER      "process-compose" or "devstack"; default: process-compose when on PATH
#
# With process-compose, its client talks to the server over a Unix socket under
# RUNTIME_DIR: its default TCP port 8080 is OpenSIPS's MI port in this stack.

STACK_FILE="${DEV_STACK_FILE:-$ROOT/process-compose.yaml}"
PC_SOCKET="$RUNTIME_DIR/process-compose.sock"
export DEV_STACK_FILE="$STACK_FILE" RUNTIME_DIR

runner() {
  if [ -n "${DEV_RUNNER:-}" ]; then
    echo "$DEV_RUNNER"
  elif command -v process-compose >/dev/null 2>&1; then
    echo process-compose
  else
    echo devstack
  fi
}
# Chosen once: every script and the Python side (devstack status/list/await) agree.
DEV_RUNNER="$(runner)"
case "$DEV_RUNNER" in
  process-compose|devstack) ;;
  *) die "DEV_RUNNER must be process-compose or devstack (got: $DEV_RUNNER)" ;;
esac
export DEV_RUNNER

# The project's runner: the `devstack` entry point that scripts/setup.sh installs into
# .venv (package scripts/devstack); without .venv (the nix dev shell puts its src/ on
# PYTHONPATH), the same package through the project's Python.
devstack() {
  if [ -x "$VENV/bin/devstack" ]; then
    "$VENV/bin/devstack" "$@"
  else
    "$ROOT/scripts/devstack/pyrun" -m devstack "$@"
  fi
}

# process-compose's client, pointed at this stack's server.
pc() {
  local sub="$1"; shift
  process-compose "$sub" "$@" --unix-socket "$PC_SOCKET"
}

# Whether a stack answers: process-compose's server, or the runner's supervisor.
stack_running() {
  devstack list -o json >/dev/null 2>&1
}

# Wait until the named processes (default: all) are ready, as process-compose's
# `project is-ready` means it: every readiness probe has had its first success.
await_ready() {
  local timeout="$1"; shift
  devstack await --timeout "$timeout" "$@"
}
