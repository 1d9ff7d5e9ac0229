#!/usr/bin/env bash
# Show the development stack's logs: every process's, each line prefixed with its name
# in color, or one process's; follows new lines until Ctrl-C.
#
# Usage: scripts/dev-logs.sh [SERVICE...] [--no-follow] [-n LINES]
#   SERVICE      process name(s) from process-compose.yaml (default: all)
#   --no-follow  print the last lines and exit
#   -n LINES     how many past lines to show first (default 20)
#
# Log files: log_location in process-compose.yaml (.dev/logs/<process>.log).
# With process-compose on PATH, `process-compose process logs SERVICE -f` shows the same.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/devstack/stack.sh"

follow=(--follow)
lines=20
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage_from_header "$0"; exit 0 ;;
    --no-follow) follow=() ;;
    -n) [ $# -ge 2 ] || die "-n needs a value"; lines="$2"; shift ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) names+=("$1") ;;
  esac
  shift
done

exec_args=(logs -n "$lines" "${follow[@]}" "${names[@]}")
devstack "${exec_args[@]}"
