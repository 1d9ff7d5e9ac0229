#!/usr/bin/env bash
# Show the development stack: per process its state, PID, health (SERVING or not, from
# its readiness probe run now), port(s), uptime and restart count.
#
# Usage: scripts/dev-status.sh [--json]
#
# Exit status: 0 when the stack runs, 3 when it is not running.
# With process-compose on PATH this is `process-compose process list -o wide`;
# otherwise the devstack runner's `status`. Environment: see dev-start.sh.
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

case "$(runner)" in
  process-compose)
    [ -S "$PC_SOCKET" ] || { info "process-compose is not running"; exit 3; }
    if [ ${#args[@]} -gt 0 ]; then pc process list -o json; else pc process list -o wide; fi ;;
  *) devstack status "${args[@]}" ;;
esac
