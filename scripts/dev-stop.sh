#!/usr/bin/env bash
# Stop the development stack gracefully: dependents first, each process group gets its
# shutdown signal (SIGTERM: services drain), then SIGKILL after its timeout, so no
# process and no bound port is left.
#
# Usage: scripts/dev-stop.sh
#
# With process-compose on PATH this is `process-compose down`; otherwise the devstack
# runner's `down`. Environment: DEV_STACK_FILE, RUNTIME_DIR, DEV_RUNNER (see dev-start.sh).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/devstack/stack.sh"

case "${1:-}" in
  -h|--help) usage_from_header "$0"; exit 0 ;;
  "") ;;
  *) die "unknown option: $1 (see --help)" ;;
esac

case "$DEV_RUNNER" in
  process-compose)
    if stack_running; then pc down; else info "process-compose is not running"; fi ;;
  devstack) devstack down ;;
esac
