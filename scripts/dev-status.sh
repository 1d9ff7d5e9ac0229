#!/usr/bin/env bash
# Show the development stack: per process its state ("Waiting" while a service waits
# for a fixed source file), PID, health (its readiness probe run now), the ports it has
# bound, uptime and restart count; a note says why a process is in its state.
#
# Usage: scripts/dev-status.sh [--json]
#
# Exit status: 0 when the stack runs, 3 when it is not running.
# The same view under either runner: with process-compose it reads
# `process-compose process list -o json`. Environment: see dev-start.sh.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/devstack/stack.sh"

args=()
case "${1:-}" in
  -h|--help) usage_from_header "$0"; exit 0 ;;
  --json) args=(--json) ;;
  "") ;;
  *) die "unknown option: $1 (see --help)" ;;
esac

devstack status "${args[@]}"
